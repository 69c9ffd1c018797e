"""PromQL building blocks shared by the rules and dashboards renderers.

Label values from the config are inserted only through ``Matcher.render`` (escaped), so a job name
with a quote cannot break or inject into an expression.
"""

from __future__ import annotations

from collections.abc import Iterable

from .._config import Matcher


def selector(matchers: Iterable[Matcher], *extra: str) -> str:
    """The inside of ``{...}``: the configured matchers, then pre-rendered extra matchers."""
    return ", ".join([*(m.render() for m in matchers), *extra])


def by_clause(labels: Iterable[str]) -> str:
    """``by (a, b)`` or an empty string when there are no labels."""
    names = list(dict.fromkeys(labels))
    return f"by ({', '.join(names)})" if names else ""

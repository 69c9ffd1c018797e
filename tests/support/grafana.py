"""Grafana, as far as a test needs it: panel queries out of dashboard JSON, and variable substitution.

Grafana cannot run on these machines, so tests do what its Prometheus data source does before it sends a
query (public/app/plugins/datasource/prometheus and pkg/promlib in Grafana 11):

- ``$__interval``: time range / max data points, never below the data source's scrape interval
  ("min interval"); rendered as Grafana's ``FormatInterval`` does (``15s``, ``1m``, ``500ms``).
  Grafana also rounds it to a "nice" value; tests pass the interval they want, so no rounding here.
- ``$__rate_interval``: ``max($__interval + scrape interval, 4 * scrape interval)``.
- ``$__range`` (and ``_s``, ``_ms``), ``$__interval_ms``.
- Template variables (``$job``, ``${job}``, ``[[job]]``): "All" becomes the variable's ``allValue``
  verbatim (``.+``); selected values are regex-escaped (the variable is used in ``=~``) and doubled
  backslashes are kept for the PromQL string literal; several values become ``(a|b)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Panel types without PromQL targets: rows hold panels, the alert list reads Grafana's alert state.
NO_QUERY_PANEL_TYPES = frozenset({"row", "alertlist"})

#: Grafana's prometheusSpecialRegexEscape character class.
_REGEX_SPECIAL = re.compile(r"[$^*{}\[\]'+?.()|\\]")


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel, as stored in the dashboard JSON."""

    dashboard_uid: str
    panel_id: int
    panel_title: str
    panel_type: str
    ref_id: str
    expr: str
    instant: bool
    fmt: str

    @property
    def name(self) -> str:
        return f"{self.dashboard_uid} #{self.panel_id} {self.panel_title!r} {self.ref_id}"


def panels(board: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard, rows' nested panels included (rows themselves too)."""
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(board: Mapping[str, Any]) -> list[PanelQuery]:
    """Every PromQL target of every panel of ``board``."""
    queries = []
    for panel in panels(board):
        for target in panel.get("targets", []):
            queries.append(
                PanelQuery(
                    dashboard_uid=board["uid"],
                    panel_id=panel["id"],
                    panel_title=panel["title"],
                    panel_type=panel["type"],
                    ref_id=target["refId"],
                    expr=target["expr"],
                    instant=bool(target.get("instant")),
                    fmt=target.get("format", "time_series"),
                )
            )
    return queries


def format_interval(seconds: float) -> str:
    """Grafana's FormatInterval: the largest whole unit (``1h``, ``2m``, ``15s``, ``500ms``)."""
    ms = round(seconds * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def rate_interval_seconds(interval_seconds: float, scrape_interval_seconds: float) -> float:
    """Grafana's ``$__rate_interval``: max(``$__interval`` + scrape interval, 4 * scrape interval)."""
    return max(interval_seconds + scrape_interval_seconds, 4 * scrape_interval_seconds)


def regex_escape(value: str) -> str:
    """A variable value as Grafana inserts it into a ``=~"..."`` matcher."""
    return _REGEX_SPECIAL.sub(lambda m: "\\\\" + m.group(0), value)


@dataclass(frozen=True)
class Variables:
    """The dashboard state a query is interpolated for.

    ``values`` maps a template variable to its selection; ``None`` (the default for every variable
    named in ``all_values``) means "All".
    """

    scrape_interval_seconds: float = 15.0
    interval_seconds: float = 15.0
    range_seconds: float = 3600.0
    values: Mapping[str, Sequence[str] | None] = field(default_factory=dict)
    all_values: Mapping[str, str] = field(default_factory=lambda: {"job": ".+", "instance": ".+"})

    @property
    def rate_interval_seconds(self) -> float:
        return rate_interval_seconds(self.interval_seconds, self.scrape_interval_seconds)

    def _template_value(self, name: str) -> str:
        selected = self.values.get(name)
        if selected is None:
            return self.all_values[name]
        escaped = [regex_escape(v) for v in selected]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"

    def builtins(self) -> dict[str, str]:
        interval = max(self.interval_seconds, self.scrape_interval_seconds)
        return {
            "__rate_interval": format_interval(self.rate_interval_seconds),
            "__interval_ms": str(round(interval * 1000)),
            "__interval": format_interval(interval),
            "__range_ms": str(round(self.range_seconds * 1000)),
            "__range_s": str(round(self.range_seconds)),
            "__range": format_interval(self.range_seconds),
        }

    def substitute(self, expr: str) -> str:
        """``expr`` with every ``$name``, ``${name}`` and ``[[name]]`` replaced as Grafana does."""
        builtins = self.builtins()

        def replace(match: re.Match[str]) -> str:
            name = match.group("a") or match.group("b") or match.group("c")
            if name in builtins:
                return builtins[name]
            if name in self.all_values or name in self.values:
                return self._template_value(name)
            return match.group(0)  # Not a variable Grafana knows: left as it is, like Grafana does.

        # \w+ is greedy, so $__range_ms is one name, not $__range followed by "_ms".
        pattern = r"\$\{(?P<a>\w+)\}|\[\[(?P<b>\w+)\]\]|\$(?P<c>__\w+|\w+)"
        return re.sub(pattern, replace, expr)

"""The documented exceptions: configuration errors and the quota family.

Quota messages start with the troubleshooting headings of the original design
("Execution limit reached: 2/2") and name the configuration key to raise.
"""

from __future__ import annotations

from decimal import Decimal

from ._vocab import ErrorType, Resource


class ConfigError(ValueError):
    """The configuration is invalid. The message names the key path, the value, the allowed range,
    the file line and the fix; it is meant to be shown to a human as is."""


class SubagentInputError(ValueError):
    """Raise from agent code when a subagent was given bad input; recorded as ``invalid_input``."""


def _fmt(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


class QuotaExceeded(Exception):  # noqa: N818 - the name is the seed API users already catch
    """A quota refused or stopped an execution. ``resource``, ``used`` and ``limit`` say which.

    Each subclass's message starts with a heading of docs/tuning.md#troubleshooting (causes and fixes)."""

    resource: Resource = Resource.EXECUTIONS
    heading: str = "Quota exceeded"
    config_key: str = "agent.subagent"
    error_type: ErrorType = ErrorType.QUOTA_EXCEEDED

    def __init__(self, used: float, limit: float, detail: str = "") -> None:
        self.used = used
        self.limit = limit
        message = f"{self.heading}: {self._figures()}. Raise {self.config_key} to allow more."
        if detail:
            message = f"{message} {detail}"
        super().__init__(message)

    def _figures(self) -> str:
        return f"{_fmt(self.used)}/{_fmt(self.limit)}"


class ExecutionLimitReached(QuotaExceeded):
    """The session already admitted ``max_executions`` executions.

    Causes and fixes: docs/tuning.md#execution-limit-reached.
    """

    resource = Resource.EXECUTIONS
    heading = "Execution limit reached"
    config_key = "agent.subagent.max_executions"


class TokenLimitExceeded(QuotaExceeded):
    """The session's token total reached or passed ``max_total_tokens``.

    Causes and fixes: docs/tuning.md#token-limit-exceeded.
    """

    resource = Resource.TOKENS
    heading = "Token limit exceeded"
    config_key = "agent.subagent.max_total_tokens"


class TimeLimitExceeded(QuotaExceeded):
    """The session's wall-clock budget ``max_total_time`` is spent.

    Causes and fixes: docs/tuning.md#time-limit-exceeded.
    """

    resource = Resource.TIME_SECONDS
    heading = "Time limit exceeded"
    config_key = "agent.subagent.max_total_time"
    error_type = ErrorType.TIMEOUT

    def _figures(self) -> str:
        return f"{self.used:.1f}s >= {_fmt(self.limit)}s"


class CostLimitExceeded(QuotaExceeded):
    """The session's spend reached or passed ``max_total_cost``, or (``cost.unpriced: refuse``) a
    response of a model without a price was refused. ``used``/``limit`` are exact decimal amounts of
    ``currency``; ``model`` names the unpriced model when that was the reason.

    Causes and fixes: docs/tuning.md#cost-limit-exceeded.
    """

    resource = Resource.COST
    heading = "Cost limit exceeded"
    config_key = "agent.subagent.max_total_cost"

    def __init__(
        self,
        used: Decimal,
        limit: Decimal,
        detail: str = "",
        *,
        currency: str = "USD",
        model: str | None = None,
    ) -> None:
        self.currency = currency
        self.model = model
        if model is not None:
            detail = (
                f"Model {model!r} has no price and cost.unpriced is `refuse`: add its price under "
                f"cost.prices or set cost.unpriced: allow. {detail}".rstrip()
            )
        super().__init__(used, limit, detail)  # type: ignore[arg-type]

    def _figures(self) -> str:
        return f"{self.used:f}/{self.limit:f} {self.currency}"


class DepthLimitExceeded(QuotaExceeded):
    """Opening this execution would nest deeper than ``max_depth``.

    Causes and fixes: docs/tuning.md#depth-limit-exceeded.
    """

    resource = Resource.DEPTH
    heading = "Depth limit exceeded"
    config_key = "agent.subagent.max_depth"
    error_type = ErrorType.MAX_DEPTH_REACHED

    def _figures(self) -> str:
        return f"depth {_fmt(self.used)} > {_fmt(self.limit)}"


class TurnLimitExceeded(QuotaExceeded):
    """The execution used all its turns (``default_max_turns`` or the per-call ``max_turns``).

    Causes and fixes: docs/tuning.md#turn-limit-reached.
    """

    resource = Resource.TURNS
    heading = "Turn limit reached"
    config_key = "agent.subagent.default_max_turns (or the max_turns= argument)"


class ConcurrencyLimitReached(QuotaExceeded):
    """No concurrency slot was free: a top-level execution waited ``concurrency_timeout`` in vain, or a
    nested one (``nested``: it never waits) found none free.

    The message suggests only fixes that work for the case: ``concurrency_timeout`` does nothing for a
    nested execution. Causes and fixes: docs/tuning.md#concurrency-limit-reached.
    """

    resource = Resource.CONCURRENCY
    heading = "Concurrency limit reached"
    config_key = "agent.subagent.max_concurrency (or agent.subagent.concurrency_timeout)"

    def __init__(self, used: float, limit: float, detail: str = "", *, nested: bool = False) -> None:
        self.nested = nested
        self._detail = detail
        if nested:
            self.config_key = "agent.subagent.max_concurrency"
            detail = (
                "A nested execution never waits for a slot (its ancestors hold theirs; waiting could "
                "deadlock), so concurrency_timeout does not help: leave a slot per child or start fewer "
                f"children at once. {detail}"
            ).rstrip()
        super().__init__(used, limit, detail)

    def as_nested(self) -> ConcurrencyLimitReached:
        """The same refusal as seen by a nested execution (the store that raised it cannot tell)."""
        if self.nested:
            return self
        return ConcurrencyLimitReached(self.used, self.limit, self._detail, nested=True)

    def _figures(self) -> str:
        return f"{_fmt(self.used)} active >= {_fmt(self.limit)}"


#: Top-level modules each optional extra installs.
_EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "otel": ("opentelemetry",),
    "redis": ("redis",),
    "dashboards": ("grafana_foundation_sdk",),
}


def missing_extra(exc: ModuleNotFoundError, extra: str, needed_by: str) -> Exception:
    """A ``ConfigError`` naming the pip extra to install when ``exc`` is one of its modules; else ``exc``.

    ``needed_by`` says which setting needs the extra, e.g. "telemetry.otlp.enabled is true".
    """
    root = (exc.name or "").partition(".")[0]
    if root not in _EXTRA_MODULES[extra]:
        return exc  # Some other module is missing: not ours to explain.
    msg = (
        f"{needed_by}, which needs the {root} package, not installed here; "
        f"install it with: pip install 'subagent-telemetry[{extra}]'"
    )
    return ConfigError(msg)

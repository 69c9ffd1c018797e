"""subagent-telemetry: quotas, metrics and traces for LLM-agent subagent executions.

The exceptions and vocabularies load with the package; everything else (pydantic, prometheus_client,
the execution machinery) loads on first use of its name, so ``import subagent_telemetry`` stays cheap
for programs that only catch our exceptions (docs/benchmarks.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._errors import (
    ConcurrencyLimitReached,
    ConfigError,
    CostLimitExceeded,
    DepthLimitExceeded,
    ExecutionLimitReached,
    QuotaExceeded,
    SubagentInputError,
    TimeLimitExceeded,
    TokenLimitExceeded,
    TurnLimitExceeded,
)
from ._vocab import ErrorType, Resource, Status

if TYPE_CHECKING:
    from ._config import Config, load_config
    from ._execution import Execution, SubagentMetrics
    from ._telemetry import SubagentTelemetry
    from .backends._server import MetricsServer
    from .quota._tracker import InMemoryQuotaStore, QuotaLimits, QuotaStore, QuotaTracker, QuotaUsage

#: Public names loaded on first access, and the private module each one lives in.
_LAZY = {
    "Config": "._config",
    "load_config": "._config",
    "Execution": "._execution",
    "SubagentMetrics": "._execution",
    "InMemoryQuotaStore": ".quota._tracker",
    "QuotaLimits": ".quota._tracker",
    "QuotaStore": ".quota._tracker",
    "QuotaTracker": ".quota._tracker",
    "QuotaUsage": ".quota._tracker",
    "MetricsServer": ".backends._server",
    "SubagentTelemetry": "._telemetry",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # Later lookups are plain module attributes.
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "ConcurrencyLimitReached",
    "Config",
    "ConfigError",
    "CostLimitExceeded",
    "DepthLimitExceeded",
    "ErrorType",
    "Execution",
    "ExecutionLimitReached",
    "InMemoryQuotaStore",
    "MetricsServer",
    "QuotaExceeded",
    "QuotaLimits",
    "QuotaStore",
    "QuotaTracker",
    "QuotaUsage",
    "Resource",
    "Status",
    "SubagentInputError",
    "SubagentMetrics",
    "SubagentTelemetry",
    "TimeLimitExceeded",
    "TokenLimitExceeded",
    "TurnLimitExceeded",
    "load_config",
]

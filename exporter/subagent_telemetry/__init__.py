"""subagent-telemetry: quotas, metrics and traces for LLM-agent subagent executions."""

from ._config import Config, load_config
from ._errors import (
    ConcurrencyLimitReached,
    ConfigError,
    DepthLimitExceeded,
    ExecutionLimitReached,
    QuotaExceeded,
    SubagentInputError,
    TimeLimitExceeded,
    TokenLimitExceeded,
    TurnLimitExceeded,
)
from ._execution import Execution, SubagentMetrics
from ._quota import InMemoryQuotaStore, QuotaLimits, QuotaStore, QuotaTracker, QuotaUsage
from ._server import MetricsServer
from ._telemetry import SubagentTelemetry
from ._vocab import ErrorType, Resource, Status

__all__ = [
    "ConcurrencyLimitReached",
    "Config",
    "ConfigError",
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

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
from ._vocab import ErrorType, Resource, Status

__all__ = [
    "ConcurrencyLimitReached",
    "Config",
    "ConfigError",
    "DepthLimitExceeded",
    "ErrorType",
    "ExecutionLimitReached",
    "QuotaExceeded",
    "Resource",
    "Status",
    "SubagentInputError",
    "TimeLimitExceeded",
    "TokenLimitExceeded",
    "TurnLimitExceeded",
    "load_config",
]

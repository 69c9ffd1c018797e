"""Closed vocabularies: the only values that ever reach the ``status``, ``error_type`` and
``resource`` labels. Documented in docs/metrics.md; free strings never become label values."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """How a finished execution ended when it did not fail."""

    COMPLETE = "complete"
    #: The subagent stopped early by design: it ran out of turns (``TurnLimitExceeded``) or the agent
    #: code marked it incomplete. A partial result, not a failure.
    INCOMPLETE = "incomplete"


class ErrorType(StrEnum):
    """Why an execution failed. Exactly one per failed execution."""

    #: Refused or stopped by the executions, tokens, time or concurrency budget.
    QUOTA_EXCEEDED = "quota_exceeded"
    #: Refused because it would nest deeper than ``agent.subagent.max_depth``.
    MAX_DEPTH_REACHED = "max_depth_reached"
    #: The agent code raised ``SubagentInputError`` (bad task or arguments).
    INVALID_INPUT = "invalid_input"
    #: Any other exception escaped the execution.
    EXECUTION_FAILED = "execution_failed"
    #: ``TimeoutError`` escaped, or the ``max_total_time`` deadline passed while it ran.
    TIMEOUT = "timeout"
    #: ``asyncio.CancelledError`` escaped (the task was cancelled from outside).
    CANCELLED = "cancelled"
    #: ``KeyboardInterrupt``, ``SystemExit`` or ``GeneratorExit`` ended it.
    INTERRUPTED = "interrupted"
    #: A manual handle was garbage-collected or closed without a recorded outcome.
    ABORTED = "aborted"


class Resource(StrEnum):
    """A budgeted resource, as named in quota metrics and ``QuotaExceeded.resource``."""

    EXECUTIONS = "executions"
    TOKENS = "tokens"
    TIME_SECONDS = "time_seconds"
    #: Money, in ``cost.currency`` (``agent.subagent.max_total_cost``).
    COST = "cost"
    CONCURRENCY = "concurrency"
    DEPTH = "depth"
    TURNS = "turns"


#: Resources with a session-wide budget, exported as ``subagent_quota_limit`` / ``subagent_quota_used``.
BUDGET_RESOURCES: tuple[Resource, ...] = (
    Resource.EXECUTIONS,
    Resource.TOKENS,
    Resource.TIME_SECONDS,
    Resource.COST,
)

#: Resources that refuse or stop executions, the values of ``subagent_quota_rejections_total``'s
#: ``resource``. Turns are a per-execution limit (``status="incomplete"``), not a refusal: no series.
REJECTION_RESOURCES: tuple[Resource, ...] = tuple(r for r in Resource if r is not Resource.TURNS)

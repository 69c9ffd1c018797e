"""pydantic-ai: every agent run (``run``, ``run_sync``, ``run_stream``, ``iter``) is one subagent execution.

    from subagent_telemetry.integrations import pydantic_ai

    pydantic_ai.instrument(tel)                                        # every agent, every run
    Agent(..., capabilities=[pydantic_ai.TelemetryCapability(tel)])    # or one agent (or one run)

Delegation from inside tools is included: ``wrap_run`` makes the run's execution current for the run
body, so an agent run from a tool is one level deeper. A turn is one model request; its tokens come from
that response's ``RequestUsage`` (``after_model_request``), never from ``RunUsage`` deltas, which
delegates share when passed ``usage=ctx.usage``. The framework's own request limit
(``UsageLimitExceeded`` from ``UsageLimits.request_limit``) ends the execution as ``incomplete``. A
refused subagent raises the ``QuotaExceeded`` before its first model request; inside a tool of an
instrumented agent it becomes a ``ToolFailed``, the failed tool result the parent model sees. See
docs/integrations.md.

The seam is the public capability API (``wrap_run``, ``after_model_request``,
``on_tool_execute_error``); ``instrument()`` adds the capability to each run through ``Agent.iter``, where
every run method starts, and ``uninstrument()`` restores it.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import warnings
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

try:
    from pydantic_ai import Agent, ToolFailed, UsageLimitExceeded
    from pydantic_ai.capabilities import AbstractCapability
except ImportError as _missing:  # pragma: no cover - exercised in a subprocess without pydantic-ai
    _msg = (
        "subagent_telemetry.integrations.pydantic_ai needs pydantic-ai: "
        "pip install 'subagent-telemetry[pydantic-ai]'"
    )
    raise ImportError(_msg) from _missing

from .. import QuotaExceeded, Status

if TYPE_CHECKING:
    from pydantic_ai import (
        AgentRunResult,
        ModelRequestContext,
        ModelResponse,
        RunContext,
        ToolCallPart,
        ToolDefinition,
    )
    from pydantic_ai.capabilities import ValidatedToolArgs

    from .. import SubagentMetrics, SubagentTelemetry

__all__ = ["TelemetryCapability", "instrument", "uninstrument"]

_original_iter: Any = None
#: The execution of the run whose body this is. Set in ``wrap_run``; pydantic-ai carries context
#: variables set there into the run body, where ``after_model_request`` runs (a per-run copy through
#: ``for_run`` would work too, but makes pydantic-ai re-extract the capability's configuration per run).
_RUN: contextvars.ContextVar[SubagentMetrics | None] = contextvars.ContextVar(
    "subagent_telemetry_pydantic_ai_run", default=None
)


@dataclasses.dataclass
class TelemetryCapability(AbstractCapability[Any]):
    """Records each run of the agent it is given to (or of the run it is passed to) on ``tel``.

    ``name`` overrides the agent's name as the execution name. One instance serves any number of
    concurrent runs: each run's execution lives in that run's context, not on the instance.
    """

    tel: SubagentTelemetry
    name: str | None = None

    async def wrap_run(
        self, ctx: RunContext[Any], *, handler: Callable[[], Awaitable[AgentRunResult[Any]]]
    ) -> AgentRunResult[Any]:
        """Admit the run (``QuotaExceeded`` before any model request), run it as the current execution,
        record its one outcome."""
        tel = self.tel
        agent_name = ctx.agent.name if ctx.agent is not None else None
        # Parent: the execution current where the run started (a tool's task carries its run's).
        execution = await tel.astart(self.name or agent_name or "agent")
        token = _RUN.set(execution)
        try:
            # Context variables set here reach the run body and the tasks it starts (pydantic-ai
            # propagates them), so runs started from tools nest under this one.
            with tel.use(execution):
                result = await handler()
        except UsageLimitExceeded as exc:
            if _is_request_limit(ctx, exc):
                execution.finish(status=Status.INCOMPLETE)
            else:
                execution.finish(exc)
            raise
        except BaseException as exc:
            execution.finish(exc)
            raise
        finally:
            _RUN.reset(token)
        execution.finish()
        return result

    async def after_model_request(
        self, ctx: RunContext[Any], *, request_context: ModelRequestContext, response: ModelResponse
    ) -> ModelResponse:
        """One model request: its own usage, never the run's ``RunUsage`` (shared with delegates)."""
        execution = _RUN.get()
        if execution is not None:
            usage = response.usage
            execution.record_response(
                input=usage.input_tokens,
                output=usage.output_tokens,
                model=response.model_name,
                provider=response.provider_name,
                cache_read=usage.cache_read_tokens,
                cache_write=usage.cache_write_tokens,
                reasoning=usage.output_reasoning_tokens,
            )
        return response

    async def on_tool_execute_error(
        self,
        ctx: RunContext[Any],
        *,
        call: ToolCallPart,
        tool_def: ToolDefinition,
        args: ValidatedToolArgs,
        error: Exception,
    ) -> Any:
        """A subagent refused inside a tool is a failed tool result for this run's model, not a crash."""
        refusal = _quota_error(error)
        if refusal is None:
            raise error
        msg = f"subagent refused: {refusal}"
        raise ToolFailed(msg) from error


def instrument(tel: SubagentTelemetry) -> None:
    """Record every agent run in this process from now on (delegated runs included) on ``tel``.

    Runs that already carry a ``TelemetryCapability`` (on the agent or the run) are left as they are.
    A second call warns and changes nothing; ``uninstrument()`` first to switch to another ``tel``.
    """
    global _original_iter  # noqa: PLW0603 - one instrumentation per process
    if _original_iter is not None:
        warnings.warn(
            "subagent_telemetry: pydantic-ai is already instrumented; "
            "call pydantic_ai.uninstrument() first to record on another SubagentTelemetry",
            stacklevel=2,
        )
        return
    original = Agent.__dict__["iter"]
    Agent.iter = _with_capability(tel, original)  # type: ignore[method-assign]
    _original_iter = original


def uninstrument() -> None:
    """Restore ``Agent.iter``; runs already started finish recording."""
    global _original_iter  # noqa: PLW0603
    if _original_iter is None:
        return
    Agent.iter = _original_iter  # type: ignore[method-assign]
    _original_iter = None


def _with_capability(tel: SubagentTelemetry, iter_: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(iter_)
    def instrumented_iter(
        self: Agent[Any, Any], *args: Any, capabilities: Sequence[Any] | None = None, **kwargs: Any
    ) -> Any:
        if not _carries_capability(self, capabilities):
            capabilities = [*(capabilities or ()), TelemetryCapability(tel)]
        return iter_(self, *args, capabilities=capabilities, **kwargs)

    return instrumented_iter


def _carries_capability(agent: Agent[Any, Any], capabilities: Sequence[Any] | None) -> bool:
    found: list[AbstractCapability[Any]] = []

    def visit(capability: AbstractCapability[Any]) -> None:
        if isinstance(capability, TelemetryCapability):
            found.append(capability)

    agent.root_capability.apply(visit)
    for capability in capabilities or ():
        if isinstance(capability, AbstractCapability):
            capability.apply(visit)
    return bool(found)


def _is_request_limit(ctx: RunContext[Any], exc: UsageLimitExceeded) -> bool:
    """The run's request limit (its own turn limit) stopped it, not a token or tool-call limit."""
    limits = ctx.usage_limits
    return limits is not None and limits.request_limit is not None and "request_limit" in str(exc)


def _quota_error(error: BaseException) -> QuotaExceeded | None:
    """The ``QuotaExceeded`` behind ``error`` (itself, or its ``__cause__``/``__context__`` chain)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, QuotaExceeded):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None

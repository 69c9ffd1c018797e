"""OpenAI Agents SDK: every ``Runner.run``/``run_sync``/``run_streamed`` is one subagent execution.

    from subagent_telemetry.integrations import openai_agents

    openai_agents.instrument(tel)

Nested runs are included: ``Agent.as_tool`` (and any tool that delegates) calls ``Runner.run`` from the
tool's task, whose context carries the calling run's execution, so the nested run is one level deeper.
A turn is one model response; its tokens come from that response's ``usage`` (the ``on_llm_end`` hook of
a per-run ``RunHooks`` that wraps the caller's), never from the run's cumulative ``context.usage``, which
nested ``as_tool`` runs share with their parent. The SDK's own turn limit (``MaxTurnsExceeded``, or a
``max_turns`` error handler supplying the output) ends the execution as ``incomplete``. A refused
subagent raises the ``QuotaExceeded`` before its first model call; inside a tool, the SDK turns it into
the tool error message the parent model sees (``failure_error_function``). See docs/integrations.md.

The seam is the public ``Runner`` entry points (outer ``RunHooks`` do not reach nested runs, so the run
itself is wrapped) and the public ``RunHooks``; ``uninstrument()`` restores the three entry points.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

try:
    from agents import Agent, MaxTurnsExceeded, Runner
    from agents.lifecycle import RunHooksBase
    from agents.models import get_default_model
except ImportError as _missing:  # pragma: no cover - exercised in a subprocess without the SDK
    _msg = (
        "subagent_telemetry.integrations.openai_agents needs the OpenAI Agents SDK: "
        "pip install 'subagent-telemetry[openai-agents]'"
    )
    raise ImportError(_msg) from _missing

from .. import Status

if TYPE_CHECKING:
    from agents import ModelResponse, RunContextWrapper, RunResultStreaming

    from .. import Execution, SubagentTelemetry

__all__ = ["instrument", "uninstrument"]

#: The ``Runner`` class methods wrapped by ``instrument()``.
_ENTRY_POINTS = ("run", "run_sync", "run_streamed")
#: Every ``RunHooks`` callback other than the one that records; passed straight to the caller's hooks.
_PASSED_THROUGH = tuple(name for name in dir(RunHooksBase) if name.startswith("on_") and name != "on_llm_end")

_originals: dict[str, Any] | None = None


def instrument(tel: SubagentTelemetry) -> None:
    """Record every agent run in this process from now on (nested runs included) on ``tel``.

    A second call warns and changes nothing; ``uninstrument()`` first to switch to another ``tel``.
    """
    global _originals  # noqa: PLW0603 - one instrumentation per process, like the SDK's Runner
    if _originals is not None:
        warnings.warn(
            "subagent_telemetry: the OpenAI Agents SDK is already instrumented; "
            "call openai_agents.uninstrument() first to record on another SubagentTelemetry",
            stacklevel=2,
        )
        return
    originals = {name: Runner.__dict__[name] for name in _ENTRY_POINTS}
    for name, wrap in (
        ("run", _wrap_run),
        ("run_sync", _wrap_run_sync),
        ("run_streamed", _wrap_run_streamed),
    ):
        function = originals[name].__func__
        setattr(
            Runner, name, classmethod(functools.wraps(function)(wrap(tel, function, _hooks_index(function))))
        )
    _originals = originals


def uninstrument() -> None:
    """Restore ``Runner`` as it was before ``instrument()``; runs already started finish recording."""
    global _originals  # noqa: PLW0603
    if _originals is None:
        return
    for name, original in _originals.items():
        setattr(Runner, name, original)
    _originals = None


# -- the three entry points ----------------------------------------------------------------------------


def _wrap_run(tel: SubagentTelemetry, run: Callable[..., Any], hooks_at: int) -> Callable[..., Any]:
    async def instrumented_run(cls: type[Runner], *args: Any, **kwargs: Any) -> Any:
        agent = _starting_agent(args, kwargs)
        if agent is None:  # Not a run the SDK would start: its own error, unrecorded.
            return await run(cls, *args, **kwargs)
        execution = await tel.astart(agent.name, model=_model_name(agent.model))
        args, kwargs = _with_execution(execution, args, kwargs, hooks_at)
        try:
            with tel.use(execution):
                result = await run(cls, *args, **kwargs)
        except BaseException as exc:
            _finish_failed(execution, exc)
            raise
        execution.finish(status=Status.INCOMPLETE if result.interruptions else None)
        return result

    return instrumented_run


def _wrap_run_sync(tel: SubagentTelemetry, run_sync: Callable[..., Any], hooks_at: int) -> Callable[..., Any]:
    def instrumented_run_sync(cls: type[Runner], *args: Any, **kwargs: Any) -> Any:
        agent = _starting_agent(args, kwargs)
        if agent is None:
            return run_sync(cls, *args, **kwargs)
        execution = tel.start(agent.name, model=_model_name(agent.model))
        args, kwargs = _with_execution(execution, args, kwargs, hooks_at)
        try:
            with tel.use(execution):
                result = run_sync(cls, *args, **kwargs)
        except BaseException as exc:
            _finish_failed(execution, exc)
            raise
        execution.finish(status=Status.INCOMPLETE if result.interruptions else None)
        return result

    return instrumented_run_sync


def _wrap_run_streamed(
    tel: SubagentTelemetry, run_streamed: Callable[..., Any], hooks_at: int
) -> Callable[..., Any]:
    def instrumented_run_streamed(cls: type[Runner], *args: Any, **kwargs: Any) -> Any:
        agent = _starting_agent(args, kwargs)
        if agent is None:
            return run_streamed(cls, *args, **kwargs)
        # run_streamed is synchronous: admission is too (a shared store's round trip blocks the loop once).
        execution = tel.start(agent.name, model=_model_name(agent.model))
        args, kwargs = _with_execution(execution, args, kwargs, hooks_at)
        try:
            # The run loop's task is created inside: it inherits the execution as current.
            with tel.use(execution):
                result: RunResultStreaming = run_streamed(cls, *args, **kwargs)
        except BaseException as exc:
            _finish_failed(execution, exc)
            raise
        task = result.run_loop_task
        if task is None:  # pragma: no cover - the SDK always starts the loop before returning
            execution.finish()
        else:
            task.add_done_callback(functools.partial(_finish_streamed, execution, result))
        return result

    return instrumented_run_streamed


def _finish_streamed(execution: Execution, result: RunResultStreaming, task: asyncio.Task[Any]) -> None:
    """The streamed run's loop ended: its outcome is the task's (the SDK stores, not raises, a turn limit)."""
    if task.cancelled():
        execution.finish(asyncio.CancelledError())
        return
    exc = task.exception()
    if exc is not None:
        _finish_failed(execution, exc)
    elif result.interruptions or (result.max_turns is not None and result.current_turn > result.max_turns):
        execution.finish(status=Status.INCOMPLETE)
    else:
        execution.finish()


def _finish_failed(execution: Execution, exc: BaseException) -> None:
    if isinstance(exc, MaxTurnsExceeded):
        execution.finish(status=Status.INCOMPLETE)
    else:
        execution.finish(exc)


# -- per-run wiring ------------------------------------------------------------------------------------


def _starting_agent(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Agent[Any] | None:
    """The run's starting agent; None when the call is not a valid run (the SDK then raises its error)."""
    agent = args[0] if args else kwargs.get("starting_agent")
    return agent if isinstance(agent, Agent) else None


def _hooks_index(function: Callable[..., Any]) -> int:
    """Where ``hooks`` sits among the positional arguments after ``cls`` (``run_streamed`` takes it so)."""
    names = list(inspect.signature(function).parameters)
    return names.index("hooks") - 1


def _with_execution(
    execution: Execution, args: tuple[Any, ...], kwargs: dict[str, Any], hooks_at: int
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call's arguments with recording hooks around the caller's, and its turn-limit handler marked."""
    run_config = kwargs.get("run_config")  # A RunConfig's (or dict's) model overrides every agent's.
    run_model = (
        run_config.get("model") if isinstance(run_config, dict) else getattr(run_config, "model", None)
    )
    if len(args) > hooks_at:
        args = (*args[:hooks_at], _hooks_for(execution, args[hooks_at], run_model), *args[hooks_at + 1 :])
    else:
        kwargs["hooks"] = _hooks_for(execution, kwargs.get("hooks"), run_model)
    handlers = kwargs.get("error_handlers")
    if handlers and handlers.get("max_turns") is not None:
        kwargs["error_handlers"] = {
            **handlers,
            "max_turns": _marks_incomplete(execution, handlers["max_turns"]),
        }
    return args, kwargs


def _hooks_for(execution: Execution, hooks: Any, run_model: object) -> Any:
    if hooks is not None and not isinstance(hooks, RunHooksBase):
        return hooks  # The SDK rejects it with its own TypeError; the execution records that failure.
    return _RecordingHooks(execution, hooks, run_model)


def _marks_incomplete(execution: Execution, handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The caller's ``max_turns`` handler: the run hit its turn limit even if the handler supplies output."""

    @functools.wraps(handler)
    def on_max_turns(data: Any) -> Any:
        execution.mark_incomplete()
        return handler(data)

    return on_max_turns


class _RecordingHooks(RunHooksBase[Any, Any]):
    """One run's hooks: each model response is one turn of this run's execution; the rest is the caller's.

    Bound to the execution, not to the current context: the SDK runs hooks as tasks with copied contexts.
    """

    def __init__(self, execution: Execution, hooks: RunHooksBase[Any, Any] | None, run_model: object) -> None:
        self._execution = execution
        self._hooks = hooks
        self._run_model = run_model
        if hooks is not None:
            for name in _PASSED_THROUGH:
                setattr(self, name, getattr(hooks, name))

    async def on_llm_end(
        self, context: RunContextWrapper[Any], agent: Agent[Any], response: ModelResponse
    ) -> None:
        try:
            model = self._run_model if self._run_model is not None else agent.model
            _record(self._execution, model, response)
        finally:  # The caller's hook runs even when the response passed a quota (the quota error follows).
            if self._hooks is not None:
                await self._hooks.on_llm_end(context, agent, response)


def _record(execution: Execution, model: object, response: ModelResponse) -> None:
    """One response: its own usage, never the run's cumulative ``context.usage`` (shared with nested runs).

    ``model`` is the run config's model, else the agent's; the cached and reasoning parts are priced apart.
    """
    usage = response.usage
    name = get_default_model() if model is None else _model_name(model)
    if usage.input_tokens or usage.output_tokens or not usage.total_tokens:
        execution.record_response(
            input=usage.input_tokens,
            output=usage.output_tokens,
            model=name,
            cache_read=getattr(usage.input_tokens_details, "cached_tokens", 0) or 0,
            cache_write=getattr(usage.input_tokens_details, "cache_write_tokens", 0) or 0,
            reasoning=getattr(usage.output_tokens_details, "reasoning_tokens", 0) or 0,
        )
    else:  # A provider that reports only a total.
        execution.record_response(total=usage.total_tokens, model=name)


def _model_name(model: object) -> str | None:
    """The model's name when the agent names one (``"gpt-4.1"`` or a Model object with a ``model`` name)."""
    if isinstance(model, str):
        return model
    name = getattr(model, "model", None)
    return name if isinstance(name, str) else None

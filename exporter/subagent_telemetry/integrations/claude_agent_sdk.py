"""Claude Agent SDK: every session and every subagent launched through the ``Agent`` tool.

    from subagent_telemetry.integrations import claude_agent_sdk
    claude_agent_sdk.instrument(tel)     # every query() and ClaudeSDKClient session from now on

or per call: ``async for message in claude_agent_sdk.query(tel, prompt=..., options=...)``.

What is counted (docs/integrations.md):

- subagent = a ``query()`` call or a ``ClaudeSDKClient`` connection (the session, depth 1 unless it
  runs inside another execution), and every subagent the model launches through the ``Agent``
  (legacy ``Task``) tool, keyed by its ``tool_use_id`` and nested under the agent that called it.
- turn = one assistant message, deduplicated by message id (the CLI sends one message per content
  block); tokens = that message's usage (input + cache reads/writes, output). With
  ``include_partial_messages=True`` the final output count of the session's own messages comes from
  the ``message_delta`` stream event; the CLI reports less for subagents (see the docs' known gaps).
- a result ``error_max_turns`` ends the session ``incomplete``; other error results end it failed.
- A subagent refused by a quota is denied in the ``PreToolUse`` hook (``permissionDecision: "deny"``
  with the reason): the model sees a tool error and the subagent never calls the model.

Hook callbacks run in tasks the SDK spawns, concurrently with the message stream, so every subagent
is tracked by ``tool_use_id`` (and the CLI's task id), never through context variables.

Seams: the session's hooks go in through ``ClaudeAgentOptions.hooks`` and its messages are read from
the stream the caller reads. ``instrument()`` wraps ``ClaudeSDKClient``'s public methods and, for
``query()``, the SDK's internal ``InternalClient.process_query``: every ``query()`` call goes through
it however the function was imported (``from claude_agent_sdk import query`` binds the function before
any instrumentation could replace it). That private seam is pinned by ``SUPPORTED_VERSIONS`` and a
test that it exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import weakref
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, NamedTuple, cast

try:
    from claude_agent_sdk import (
        AssistantMessage,
        ClaudeAgentOptions,
        ClaudeSDKClient,
        HookContext,
        HookMatcher,
        ResultError,
        ResultMessage,
        StreamEvent,
        TaskNotificationMessage,
        TaskStartedMessage,
        TaskUpdatedMessage,
        ToolResultBlock,
        ToolUseBlock,
        Transport,
        UserMessage,
    )
    from claude_agent_sdk import query as _sdk_query
    from claude_agent_sdk._internal.client import InternalClient  # The one path of every query() call.
except ImportError as error:  # pragma: no cover - exercised in a subprocess test
    msg = (
        "subagent_telemetry.integrations.claude_agent_sdk needs claude-agent-sdk "
        f"({error.name} is missing): pip install 'subagent-telemetry[claude-agent-sdk]'"
    )
    raise ImportError(msg) from None

from .._errors import QuotaExceeded
from .._vocab import ErrorType, Status

if TYPE_CHECKING:
    from .._execution import Execution, SubagentMetrics
    from .._telemetry import SubagentTelemetry

__all__ = ["SUPPORTED_VERSIONS", "instrument", "query", "uninstrument"]

#: The releases this module is tested against (pyproject's ``claude-agent-sdk`` extra).
SUPPORTED_VERSIONS = {"claude-agent-sdk": ">=0.2.189,<0.3"}
#: Tools through which the CLI launches a subagent (``Task`` before Claude Code 2.1).
_AGENT_TOOLS = ("Agent", "Task")
#: How long an ``Agent`` call's hook waits for the message stream to catch up with the CLI: the
#: ``task_started`` message naming the calling subagent, and the message holding the call (its usage
#: is charged before the new subagent is admitted).
_STREAM_WAIT_SECONDS = 10.0

_log = logging.getLogger("subagent_telemetry")
_TASK_END = {
    "completed": None,
    "failed": ErrorType.EXECUTION_FAILED,
    "stopped": ErrorType.CANCELLED,
    "killed": ErrorType.CANCELLED,
}


class _Agent:
    """One subagent launched through the Agent tool."""

    __slots__ = ("background", "ended", "forwarded", "handle", "messages")

    def __init__(self, handle: SubagentMetrics, forwarded: bool) -> None:
        self.handle = handle
        #: The CLI forwards the messages of the session's own subagents only, not of theirs.
        self.forwarded = forwarded
        self.background = False
        self.messages = 0
        #: The terminal status a ``task_updated`` message reported, if any.
        self.ended: str | None = None


class _Session:
    """One query() call or ClaudeSDKClient connection, and the subagents launched in it."""

    def __init__(self, tel: SubagentTelemetry, name: str) -> None:
        self.tel = tel
        self.name = name
        self.partial = False
        self.handle: SubagentMetrics | None = None
        self.agents: dict[str, _Agent] = {}  # by tool_use_id
        self.tool_use_of_task: dict[str, str] = {}
        self._task_waiters: dict[str, asyncio.Event] = {}
        #: Agent calls whose message the stream has delivered (or whose hook waits for it).
        self._calls_seen: dict[str, asyncio.Event] = {}
        #: With partial messages, the session's calls whose message is still streaming its usage.
        self._calls_streaming: list[str] = []
        #: Per message id: the handle it was charged to and the input/output tokens charged so far.
        self._charged: dict[str, tuple[SubagentMetrics, _Usage]] = {}
        #: The message whose stream events are arriving, per parent_tool_use_id (None: the session).
        self._streaming: dict[str | None, str] = {}
        self.last_result: ResultMessage | None = None
        self.exc: BaseException | None = None

    async def admit(self, parent: Execution | None) -> None:
        self.handle = await self.tel.astart(self.name, parent=parent)

    # -- hooks ---------------------------------------------------------------------------------------

    def options(self, options: ClaudeAgentOptions | None) -> ClaudeAgentOptions:
        """``options`` with this session's hooks added (the caller's object is not changed)."""
        options = options if options is not None else ClaudeAgentOptions()
        self.partial = bool(options.include_partial_messages)
        hooks: dict[Any, list[HookMatcher]] = {event: list(m) for event, m in (options.hooks or {}).items()}
        matcher = "|".join(_AGENT_TOOLS)
        hooks.setdefault("PreToolUse", []).append(HookMatcher(matcher=matcher, hooks=[self._pre_tool_use]))
        hooks.setdefault("PostToolUseFailure", []).append(
            HookMatcher(matcher=matcher, hooks=[self._post_tool_use_failure])
        )
        return dataclasses.replace(options, hooks=hooks)

    async def _pre_tool_use(self, data: Any, tool_use_id: str | None, context: HookContext) -> Any:
        """Admit the subagent the Agent tool is about to launch, or deny the call."""
        tool_use_id = tool_use_id or data.get("tool_use_id")
        if data.get("tool_name") not in _AGENT_TOOLS or not tool_use_id or self.handle is None:
            return {}
        try:
            parent, forwarded = await self._parent_of(data.get("agent_id"))
            if forwarded:  # Charge the calling message's usage before admitting (the budget sees it).
                await _wait(self._calls_seen.setdefault(tool_use_id, asyncio.Event()))
                self._calls_seen.pop(tool_use_id, None)
            tool_input = data.get("tool_input") or {}
            name = str(tool_input.get("subagent_type") or "general-purpose")
            model = tool_input.get("model")
            result = await self.tel.try_astart(
                name, parent=parent, model=model if isinstance(model, str) else None
            )
        except Exception:
            _log.warning("subagent_telemetry: could not admit a Claude subagent; allowed", exc_info=True)
            return {}
        if isinstance(result, QuotaExceeded):
            return {
                "hookSpecificOutput": {
                    "hookEventName": "PreToolUse",
                    "permissionDecision": "deny",
                    "permissionDecisionReason": f"subagent refused by its quota: {result}",
                }
            }
        self.agents[tool_use_id] = _Agent(result, forwarded=parent is self.handle)
        return {}

    async def _post_tool_use_failure(self, data: Any, tool_use_id: str | None, context: HookContext) -> Any:
        """The Agent tool itself failed: that subagent ends failed (its cancellation: cancelled)."""
        agent = self.agents.get(tool_use_id or str(data.get("tool_use_id")))
        if agent is not None:
            error_type = ErrorType.CANCELLED if data.get("is_interrupt") else ErrorType.EXECUTION_FAILED
            agent.handle.finish(error_type=error_type)
        return {}

    async def _parent_of(self, agent_id: object) -> tuple[SubagentMetrics | None, bool]:
        """The handle of the agent making the call (the session, or the subagent with that task id),
        and whether the CLI forwards that agent's messages."""
        if not isinstance(agent_id, str):
            return self.handle, True
        tool_use_id = self.tool_use_of_task.get(agent_id)
        if tool_use_id is None:
            # The CLI names a subagent's task in a message that may still be queued for the reader.
            await _wait(self._task_waiters.setdefault(agent_id, asyncio.Event()))
            tool_use_id = self.tool_use_of_task.get(agent_id)
        agent = self.agents.get(tool_use_id) if tool_use_id is not None else None
        if agent is None:
            _log.warning(
                "subagent_telemetry: Claude subagent %s not seen; nested under the session", agent_id
            )
            return self.handle, False
        return agent.handle, agent.forwarded

    # -- the message stream --------------------------------------------------------------------------

    def observe(self, message: object) -> None:
        """Record one message; raises only a quota error of the session itself."""
        try:
            self._observe(message)
        except QuotaExceeded:
            raise
        except Exception:
            _log.warning("subagent_telemetry: a Claude message was not recorded", exc_info=True)

    def _observe(self, message: object) -> None:
        if isinstance(message, AssistantMessage):
            self._assistant(message)
        elif isinstance(message, StreamEvent):
            self._stream_event(message)
        elif isinstance(message, TaskStartedMessage):
            self._task_started(message)
        elif isinstance(message, TaskNotificationMessage):
            self._task_ended(message.tool_use_id, message.status, message.usage)
        elif isinstance(message, TaskUpdatedMessage):
            status = (message.data.get("patch") or {}).get("status")
            agent = self.agents.get(self.tool_use_of_task.get(str(message.data.get("task_id")), ""))
            if status in _TASK_END and agent is not None:
                agent.ended = status  # Final once task_notification (with its usage) or the session ends.
        elif isinstance(message, ResultMessage):
            self.last_result = message
        elif isinstance(message, UserMessage):
            self._tool_results(message)

    def _owner(self, parent_tool_use_id: str | None) -> SubagentMetrics | None:
        if parent_tool_use_id is None:
            return self.handle
        agent = self.agents.get(parent_tool_use_id)
        if agent is None:
            return None
        agent.messages += 1
        return agent.handle

    def _assistant(self, message: AssistantMessage) -> None:
        if message.error is not None:
            return  # The CLI's stand-in for a failed request, not a model response.
        handle = self._owner(message.parent_tool_use_id)
        if handle is None:
            return
        usage = message.usage or {}
        message_id = message.message_id or message.uuid or ""
        try:
            self._charge(handle, message_id, _usage(usage), message.model)
        finally:
            calls = [b.id for b in message.content if isinstance(b, ToolUseBlock) and b.name in _AGENT_TOOLS]
            if self.partial and message.parent_tool_use_id is None:
                self._calls_streaming.extend(calls)  # Seen once message_delta has the final usage.
            else:
                self._mark_seen(calls)

    def _mark_seen(self, calls: list[str]) -> None:
        for call in calls:
            self._calls_seen.setdefault(call, asyncio.Event()).set()

    def _stream_event(self, message: StreamEvent) -> None:
        event = message.event
        kind = event.get("type")
        if kind == "message_start":
            start = event.get("message") or {}
            message_id = str(start.get("id") or "")
            self._streaming[message.parent_tool_use_id] = message_id
            handle = self._owner(message.parent_tool_use_id) if message_id not in self._charged else None
            if handle is not None:
                usage = start.get("usage") or {}
                model = start.get("model")
                self._charge(handle, message_id, _usage(usage), model if isinstance(model, str) else None)
        elif kind == "message_delta":
            streaming = self._streaming.get(message.parent_tool_use_id)
            charged = self._charged.get(streaming) if streaming is not None else None
            usage = event.get("usage") or {}
            if charged is not None and streaming is not None:
                handle, before = charged
                # message_delta counts are cumulative for the message (input parts only when present).
                delta = _usage(usage)
                if "input_tokens" not in usage:
                    delta = delta._replace(
                        input=before.input, cache_read=before.cache_read, cache_write=before.cache_write
                    )
                self._charge(handle, streaming, delta, None)
        elif kind == "message_stop" and message.parent_tool_use_id is None:
            calls, self._calls_streaming = self._calls_streaming, []
            self._mark_seen(calls)

    def _charge(self, handle: SubagentMetrics, message_id: str, usage: _Usage, model: str | None) -> None:
        """Record a message's usage: one turn the first time its id is seen, then only the increase."""
        charged = self._charged.get(message_id)
        try:
            if charged is None:
                self._charged[message_id] = (handle, usage)
                handle.record_response(
                    usage.input,
                    usage.output,
                    model=model,
                    provider="anthropic",
                    cache_read=usage.cache_read,
                    cache_write=usage.cache_write,
                )
                return
            before = charged[1]
            now = _Usage(*(max(a, b) for a, b in zip(usage, before, strict=True)))
            new = _Usage(*(a - b for a, b in zip(now, before, strict=True)))
            if new.input or new.output:
                self._charged[message_id] = (handle, now)
                handle.record_tokens(
                    new.input, new.output, cache_read=new.cache_read, cache_write=new.cache_write
                )
        except QuotaExceeded as error:
            if handle is self.handle:
                raise  # The session itself: the caller's loop stops, as a `with` block would.
            handle.finish(error)  # A subagent: recorded; the next admission is refused.
        except Exception as error:  # TurnLimitExceeded of a subagent, and anything unexpected.
            if handle is self.handle:
                raise
            handle.finish(error)

    def _task_started(self, message: TaskStartedMessage) -> None:
        if message.tool_use_id is None:
            return
        self.tool_use_of_task[message.task_id] = message.tool_use_id
        agent = self.agents.get(message.tool_use_id)
        if agent is not None:
            agent.background = bool(message.data.get("is_backgrounded"))
        waiter = self._task_waiters.pop(message.task_id, None)
        if waiter is not None:
            waiter.set()

    def _task_ended(self, tool_use_id: str | None, status: str, usage: Any) -> None:
        agent = self.agents.get(tool_use_id) if tool_use_id is not None else None
        if agent is None:
            return
        handle = agent.handle
        if agent.messages == 0 and isinstance(usage, dict) and handle.tokens == 0:
            # Below the first subagent level the CLI forwards no messages: its task total is all there is.
            with contextlib.suppress(QuotaExceeded):
                handle.record_tokens(total=_int(usage.get("total_tokens")))
        _end(handle, status)

    def _tool_results(self, message: UserMessage) -> None:
        if isinstance(message.content, str):
            return
        for block in message.content:
            if not isinstance(block, ToolResultBlock):
                continue
            agent = self.agents.get(block.tool_use_id)
            if agent is None:
                continue
            if block.is_error:
                agent.handle.finish(error_type=ErrorType.EXECUTION_FAILED)  # Never launched, or failed.
            elif not agent.background:
                agent.handle.finish()  # A foreground subagent's report: it is over.

    # -- the end -------------------------------------------------------------------------------------

    def finish(self, exc: BaseException | None) -> None:
        """End the session (from ``exc`` or the last result) and any subagent the CLI left open."""
        for agent in self.agents.values():  # finish() is a no-op for those already ended.
            if agent.ended is not None:
                _end(agent.handle, agent.ended)
            else:
                agent.handle.finish(error_type=ErrorType.ABORTED)  # The CLI never said how it ended.
        handle = self.handle
        if handle is None:
            return
        result = self.last_result
        subtype, failed = (result.subtype, result.is_error) if result is not None else (None, False)
        if isinstance(exc, ResultError):  # The SDK raises it after an error result.
            subtype, failed = exc.subtype, True
        elif exc is not None and not (isinstance(exc, GeneratorExit) and result is not None):
            handle.finish(exc)
            return
        if subtype == "error_max_turns":
            handle.finish(status=Status.INCOMPLETE)  # The SDK's own turn limit: a partial result.
        elif failed or (subtype is not None and subtype != "success"):
            handle.finish(error_type=ErrorType.EXECUTION_FAILED)
        else:
            handle.finish()


def _end(handle: SubagentMetrics, status: str) -> None:
    error_type = _TASK_END.get(status)
    if error_type is None:
        handle.finish()
    else:
        handle.finish(error_type=error_type)


async def _wait(event: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), _STREAM_WAIT_SECONDS)


def _int(value: object) -> int:
    return value if isinstance(value, int) and value > 0 else 0


class _Usage(NamedTuple):
    """One message's usage as ``record_response`` takes it: ``input`` is everything the model read
    (Anthropic's fresh ``input_tokens`` plus prompt-cache writes and reads), the cache parts priced at
    their own rates (docs/cost.md)."""

    input: int
    output: int
    cache_read: int
    cache_write: int


def _usage(usage: dict[str, Any]) -> _Usage:
    cache_read = _int(usage.get("cache_read_input_tokens"))
    cache_write = _int(usage.get("cache_creation_input_tokens"))
    fresh = _int(usage.get("input_tokens"))
    return _Usage(fresh + cache_read + cache_write, _int(usage.get("output_tokens")), cache_read, cache_write)


def _recorded(options: ClaudeAgentOptions) -> bool:
    """Whether ``options`` already carry a session's hooks (added by ``_Session.options``)."""
    return any(
        isinstance(getattr(hook, "__self__", None), _Session)
        for matchers in (options.hooks or {}).values()
        for matcher in matchers
        for hook in matcher.hooks
    )


async def _observed(session: _Session, messages: AsyncIterator[Any]) -> AsyncGenerator[Any, None]:
    """``messages`` passed through ``session``; the session ends with the stream."""
    exc: BaseException | None = None
    try:
        async for message in messages:
            session.observe(message)
            yield message
    except BaseException as error:
        exc = error
        raise
    finally:
        with contextlib.suppress(Exception):
            await messages.aclose()  # type: ignore[attr-defined]
        session.finish(exc)


async def query(
    tel: SubagentTelemetry,
    *,
    prompt: str | AsyncIterable[dict[str, Any]],
    options: ClaudeAgentOptions | None = None,
    transport: Transport | None = None,
    name: str = "claude",
) -> AsyncGenerator[Any, None]:
    """``claude_agent_sdk.query()`` recorded as one session (and its subagents) on ``tel``."""
    session = _Session(tel, name)
    await session.admit(tel.current())
    messages = _sdk_query(prompt=prompt, options=session.options(options), transport=transport)
    async with contextlib.aclosing(_observed(session, messages)) as observed:
        async for message in observed:
            yield message


# -- instrument(): query() and ClaudeSDKClient for the whole process ---------------------------------

_patches: list[tuple[type, str, object]] = []
_client_sessions: weakref.WeakKeyDictionary[ClaudeSDKClient, _Session] = weakref.WeakKeyDictionary()


def instrument(tel: SubagentTelemetry, *, name: str = "claude") -> None:
    """Record every ``query()`` and ``ClaudeSDKClient`` session from now on; a second call warns."""
    if _patches:
        _log.warning(
            "subagent_telemetry: the Claude Agent SDK is already instrumented; call uninstrument() first"
        )
        return
    process_query = InternalClient.process_query

    async def instrumented_process_query(
        self: InternalClient,
        prompt: str | AsyncIterable[dict[str, Any]],
        options: ClaudeAgentOptions,
        transport: Transport | None = None,
    ) -> AsyncGenerator[Any, None]:
        if _recorded(options):  # This module's query(tel, ...): already a session.
            stream = cast("AsyncGenerator[Any, None]", process_query(self, prompt, options, transport))
        else:
            session = _Session(tel, name)
            await session.admit(tel.current())
            inner = process_query(self, prompt, session.options(options), transport)
            stream = _observed(session, inner)
        async with contextlib.aclosing(stream):
            async for message in stream:
                yield message

    replacements = [
        (InternalClient, "process_query", instrumented_process_query),
        *_client_patches(tel, name),
    ]
    for owner, attribute, replacement in replacements:
        _patches.append((owner, attribute, owner.__dict__[attribute]))
        setattr(owner, attribute, replacement)


def _client_patches(tel: SubagentTelemetry, name: str) -> list[tuple[type, str, Callable[..., Any]]]:
    """A ``ClaudeSDKClient`` connection is one session: admitted at connect, ended at disconnect."""
    connect = ClaudeSDKClient.connect
    receive_messages = ClaudeSDKClient.receive_messages
    disconnect = ClaudeSDKClient.disconnect
    aexit = ClaudeSDKClient.__aexit__

    async def instrumented_connect(self: ClaudeSDKClient, prompt: Any = None) -> None:
        session = _Session(tel, name)
        await session.admit(tel.current())
        _client_sessions[self] = session
        original_options = self.options
        self.options = session.options(original_options)
        try:
            await connect(self, prompt)
        except BaseException as error:
            _client_sessions.pop(self, None)
            session.finish(error)
            raise
        finally:
            self.options = original_options

    async def instrumented_receive_messages(self: ClaudeSDKClient) -> AsyncIterator[Any]:
        session = _client_sessions.get(self)
        stream = cast("AsyncGenerator[Any, None]", receive_messages(self))
        async with contextlib.aclosing(stream) as messages:
            async for message in messages:
                if session is not None:
                    session.observe(message)
                yield message

    async def instrumented_disconnect(self: ClaudeSDKClient) -> None:
        session = _client_sessions.pop(self, None)
        try:
            await disconnect(self)
        finally:
            if session is not None:
                session.finish(session.exc)

    async def instrumented_aexit(self: ClaudeSDKClient, exc_type: Any, exc: Any, tb: Any) -> bool:
        session = _client_sessions.get(self)
        if session is not None and isinstance(exc, BaseException):
            session.exc = exc
        result: bool = await aexit(self, exc_type, exc, tb)
        return result

    return [
        (ClaudeSDKClient, "connect", instrumented_connect),
        (ClaudeSDKClient, "receive_messages", instrumented_receive_messages),
        (ClaudeSDKClient, "disconnect", instrumented_disconnect),
        (ClaudeSDKClient, "__aexit__", instrumented_aexit),
    ]


def uninstrument() -> None:
    """Restore every attribute ``instrument()`` replaced (sessions in flight finish as they started)."""
    while _patches:
        owner, attribute, original = _patches.pop()
        setattr(owner, attribute, original)

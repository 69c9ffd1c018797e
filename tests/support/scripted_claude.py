"""A scripted ``claude_agent_sdk.Transport``: the CLI's side of the stream-json protocol, from a list.

For fast unit tests of the Claude Agent SDK integration (no process). It answers ``initialize`` with
success, remembers the hook callbacks the SDK registered, and once the prompt arrives plays its
script: message dicts are sent as the CLI would print them; a ``Hook`` step sends a
``hook_callback`` control request to every callback registered for that event (matcher checked
against the tool name) and waits for the SDK's answer, which is kept in ``hook_answers``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from claude_agent_sdk import Transport

SESSION = "session-1"
_uuids = itertools.count(1)


@dataclass(frozen=True)
class Hook:
    """A hook event the scripted CLI fires (and waits for)."""

    event: str
    input: dict[str, Any]
    tool_use_id: str | None = None
    #: False: the script goes on without waiting for the answer (as the CLI does for parallel calls).
    wait: bool = True


@dataclass
class ScriptedTransport(Transport):
    script: Sequence[dict[str, Any] | Hook]
    hook_answers: list[dict[str, Any]] = field(default_factory=list)
    _out: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    _hooks: dict[str, list[tuple[str | None, list[str]]]] = field(default_factory=dict)
    _pending: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    _player: asyncio.Task[None] | None = None
    _ready: bool = False

    async def connect(self) -> None:
        self._ready = True

    def is_ready(self) -> bool:
        return self._ready

    async def end_input(self) -> None:
        pass

    async def close(self) -> None:
        self._ready = False
        if self._player is not None:
            self._player.cancel()
        await self._out.put(None)

    async def write(self, data: str) -> None:
        for line in data.splitlines():
            if line.strip():
                self._receive(json.loads(line))

    def _receive(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "control_request":
            request = message["request"]
            if request.get("subtype") == "initialize":
                for event, matchers in (request.get("hooks") or {}).items():
                    self._hooks[event] = [(m.get("matcher"), m["hookCallbackIds"]) for m in matchers]
            response = {"subtype": "success", "request_id": message["request_id"], "response": {}}
            self._out.put_nowait({"type": "control_response", "response": response})
        elif kind == "control_response":
            response = message["response"]
            future = self._pending.pop(response["request_id"], None)
            if future is not None and not future.done():
                future.set_result(response)
        elif kind == "user" and self._player is None:
            self._player = asyncio.get_running_loop().create_task(self._play())

    async def _play(self) -> None:
        background: list[asyncio.Task[None]] = []
        for step in self.script:
            if isinstance(step, Hook) and step.wait:
                await self._fire(step)
            elif isinstance(step, Hook):
                background.append(asyncio.get_running_loop().create_task(self._fire(step)))
                await asyncio.sleep(0)  # Let the request go out before the next step.
            else:
                await self._out.put(step)
        if background:
            await asyncio.gather(*background)
        await self._out.put(None)

    async def _fire(self, hook: Hook) -> None:
        tool = str(hook.input.get("tool_name", ""))
        for matcher, callback_ids in self._hooks.get(hook.event, []):
            if matcher and not re.fullmatch(matcher, tool):
                continue
            for callback_id in callback_ids:
                request_id = f"req_{next(_uuids)}"
                future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
                self._pending[request_id] = future
                request = {
                    "subtype": "hook_callback",
                    "callback_id": callback_id,
                    "input": {"hook_event_name": hook.event, "session_id": SESSION, **hook.input},
                    "tool_use_id": hook.tool_use_id,
                }
                await self._out.put({"type": "control_request", "request_id": request_id, "request": request})
                answer = await future
                self.hook_answers.append(answer.get("response") or {})

    async def read_messages(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            message = await self._out.get()
            if message is None:
                return
            yield message


# -- what the CLI prints -------------------------------------------------------------------------------


def assistant(
    message_id: str,
    *blocks: dict[str, Any],
    input_tokens: int = 10,
    output_tokens: int = 5,
    parent: str | None = None,
    model: str = "claude-test",
) -> dict[str, Any]:
    return {
        "type": "assistant",
        "message": {
            "id": message_id,
            "model": model,
            "content": list(blocks) or [text("ok")],
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        },
        "parent_tool_use_id": parent,
        "session_id": SESSION,
        "uuid": f"uuid-{next(_uuids)}",
    }


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def agent_call(tool_use_id: str, subagent_type: str = "researcher", tool: str = "Agent") -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": tool_use_id,
        "name": tool,
        "input": {"description": "task", "prompt": "do it", "subagent_type": subagent_type},
    }


def pre_agent(
    tool_use_id: str, agent_id: str | None = None, *, wait: bool = True, tool: str = "Agent"
) -> Hook:
    """The PreToolUse hook for an Agent call (made by subagent ``agent_id``, or the session)."""
    data: dict[str, Any] = {
        "tool_name": tool,
        "tool_input": {"description": "task", "prompt": "do it", "subagent_type": "researcher"},
        "tool_use_id": tool_use_id,
        "transcript_path": "/dev/null",
        "cwd": "/",
    }
    if agent_id is not None:
        data["agent_id"] = agent_id
    return Hook("PreToolUse", data, tool_use_id, wait)


def task_started(task_id: str, tool_use_id: str, *, background: bool = False) -> dict[str, Any]:
    return {
        "type": "system",
        "subtype": "task_started",
        "task_id": task_id,
        "tool_use_id": tool_use_id,
        "description": "task",
        "is_backgrounded": background,
        "uuid": f"uuid-{next(_uuids)}",
        "session_id": SESSION,
    }


def task_notification(
    task_id: str, tool_use_id: str, status: str = "completed", total_tokens: int | None = None
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "system",
        "subtype": "task_notification",
        "task_id": task_id,
        "tool_use_id": tool_use_id,
        "status": status,
        "output_file": "/dev/null",
        "summary": "done",
        "uuid": f"uuid-{next(_uuids)}",
        "session_id": SESSION,
    }
    if total_tokens is not None:
        message["usage"] = {"total_tokens": total_tokens, "tool_uses": 0, "duration_ms": 1}
    return message


def task_updated(task_id: str, status: str) -> dict[str, Any]:
    return {
        "type": "system",
        "subtype": "task_updated",
        "task_id": task_id,
        "patch": {"status": status},
        "uuid": f"uuid-{next(_uuids)}",
        "session_id": SESSION,
    }


def tool_result(tool_use_id: str, *, is_error: bool = False, parent: str | None = None) -> dict[str, Any]:
    block = {"type": "tool_result", "tool_use_id": tool_use_id, "content": "report", "is_error": is_error}
    return {
        "type": "user",
        "message": {"role": "user", "content": [block]},
        "parent_tool_use_id": parent,
        "session_id": SESSION,
        "uuid": f"uuid-{next(_uuids)}",
    }


def stream_event(event: dict[str, Any], parent: str | None = None) -> dict[str, Any]:
    return {
        "type": "stream_event",
        "uuid": f"uuid-{next(_uuids)}",
        "session_id": SESSION,
        "event": event,
        "parent_tool_use_id": parent,
    }


def result(subtype: str = "success", *, is_error: bool = False, num_turns: int = 1) -> dict[str, Any]:
    return {
        "type": "result",
        "subtype": subtype,
        "duration_ms": 1,
        "duration_api_ms": 1,
        "is_error": is_error,
        "num_turns": num_turns,
        "session_id": SESSION,
    }

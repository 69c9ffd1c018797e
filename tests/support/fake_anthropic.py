"""A fake Anthropic Messages API on a loopback port, for running the real ``claude`` CLI offline.

The CLI is pointed at it with ``ANTHROPIC_BASE_URL``. Replies are scripted per agent: every agent's
first user message carries a marker ``[agent:NAME]`` (the coordinator's prompt, or the ``prompt`` of
an ``Agent`` tool call), and the Nth request of that conversation gets ``script[NAME][N]``, where N is
the number of assistant messages already in the request. Parallel subagents therefore get their own
replies whatever order their requests arrive in. Replies stream as server-sent events the way the
real API does (``message_start`` … ``message_delta`` with the final usage … ``message_stop``).

Requests without a marker (the CLI's own side requests) get a one-word text reply and are listed in
``unscripted``; they never reach an agent's message stream.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_MARKER = re.compile(r"\[agent:([A-Za-z0-9_.-]+)\]")


@dataclass(frozen=True)
class ToolCall:
    """A ``tool_use`` block the fake model emits."""

    name: str
    input: Mapping[str, Any]
    id: str = ""


@dataclass(frozen=True)
class Reply:
    """One scripted model response: text and tool calls, with its usage; or an HTTP error."""

    text: str = ""
    tools: Sequence[ToolCall] = ()
    input_tokens: int = 10
    output_tokens: int = 5
    error_status: int | None = None

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def delegate(
    agent: str, task: str, *, background: bool | None = None, subagent_type: str = "general-purpose"
) -> ToolCall:
    """An ``Agent`` tool call that launches subagent ``agent`` (its prompt carries the marker).

    The CLI runs subagents in the background unless ``background=False`` (the caller then waits).
    """
    arguments: dict[str, Any] = {
        "description": f"{agent} task",
        "prompt": f"[agent:{agent}] {task}",
        "subagent_type": subagent_type,
    }
    if background is not None:
        arguments["run_in_background"] = background
    return ToolCall("Agent", arguments)


@dataclass
class FakeAnthropic:
    """The server; ``script`` maps an agent name to its replies in order."""

    script: Mapping[str, Sequence[Reply]]
    #: The replies each agent was served, in order.
    served: dict[str, list[Reply]] = field(default_factory=dict)
    unscripted: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeAnthropic:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._send(404, "application/json", b"{}")

            def do_HEAD(self) -> None:
                self._send(404, "application/json", b"")

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if "count_tokens" in self.path:
                    self._send(200, "application/json", b'{"input_tokens": 10}')
                    return
                status, content_type, payload = fake._answer(body)
                self._send(status, content_type, payload)

            def _send(self, status: int, content_type: str, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-anthropic", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self, home: str) -> dict[str, str]:
        """Environment for the CLI: this server, a fake key, an isolated home, no other traffic."""
        return {
            "ANTHROPIC_BASE_URL": self.url,
            "ANTHROPIC_API_KEY": "sk-ant-fake-offline",
            "HOME": home,
            "CLAUDE_CONFIG_DIR": home,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "CLAUDE_CODE_MAX_RETRIES": "0",
        }

    def tokens(self, *agents: str) -> int:
        """Input + output tokens of the (successful) replies served to ``agents``."""
        return sum(r.tokens for a in agents for r in self.served.get(a, ()) if r.error_status is None)

    def input_tokens(self, *agents: str) -> int:
        return sum(r.input_tokens for a in agents for r in self.served.get(a, ()) if r.error_status is None)

    def responses(self, *agents: str) -> int:
        return sum(1 for a in agents for r in self.served.get(a, ()) if r.error_status is None)

    # -- answering -----------------------------------------------------------------------------------

    def _answer(self, body: dict[str, Any]) -> tuple[int, str, bytes]:
        messages = body.get("messages") or []
        agent = _agent_of(messages)
        with self._lock:
            self.requests.append(body)
            if agent is None or agent not in self.script:
                self.unscripted.append(_first_text(messages)[:200])
                reply = Reply(text="ok", input_tokens=1, output_tokens=1)
            else:
                step = sum(1 for m in messages if m.get("role") == "assistant")
                replies = self.script[agent]
                reply = replies[min(step, len(replies) - 1)]
                self.served.setdefault(agent, []).append(reply)
            message_id = f"msg_fake_{next(self._ids):04d}"
        if reply.error_status is not None:
            error = {"type": "error", "error": {"type": "api_error", "message": "scripted failure"}}
            return reply.error_status, "application/json", json.dumps(error).encode()
        events = _events(reply, message_id, str(body.get("model", "claude-fake")))
        if not body.get("stream"):
            return 200, "application/json", json.dumps(_message(reply, message_id, body)).encode()
        sse = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)
        return 200, "text/event-stream", sse.encode()


def _first_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for message in messages:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        return " ".join(str(block.get("text", "")) for block in content or () if block.get("type") == "text")
    return ""


def _agent_of(messages: Sequence[Mapping[str, Any]]) -> str | None:
    found = _MARKER.search(_first_text(messages))
    return found.group(1) if found else None


def _tool_id(message_id: str, index: int) -> str:
    return f"toolu_{message_id[-4:]}_{index}"


def _blocks(reply: Reply, message_id: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if reply.text:
        blocks.append({"type": "text", "text": reply.text})
    for index, call in enumerate(reply.tools):
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id or _tool_id(message_id, index),
                "name": call.name,
                "input": dict(call.input),
            }
        )
    return blocks


def _message(reply: Reply, message_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "claude-fake"),
        "content": _blocks(reply, message_id),
        "stop_reason": "tool_use" if reply.tools else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens},
    }


def _events(reply: Reply, message_id: str, model: str) -> list[tuple[str, dict[str, Any]]]:
    start = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        # As the real API: the input count up front, the output count only in message_delta.
        "usage": {"input_tokens": reply.input_tokens, "output_tokens": 1},
    }
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start})
    ]
    for index, block in enumerate(_blocks(reply, message_id)):
        if block["type"] == "text":
            opening = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            opening = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        events += [
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opening},
            ),
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}),
            ("content_block_stop", {"type": "content_block_stop", "index": index}),
        ]
    stop_reason = "tool_use" if reply.tools else "end_turn"
    events += [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": reply.output_tokens},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return events

"""pydantic-ai integration: what ``pydantic_ai.instrument(tel)`` adds per model request.

The same agent runs on the same in-process ``FunctionModel`` with and without the integration, in one
event loop, batches interleaved so both share the machine's noise, timed in process CPU time
(``time.process_time``: other processes on a shared machine do not count). A run makes ``responses`` model
requests (each but the last calls a no-op tool), so the per-run cost (admission, outcome) is spread over
them as in a real agent; the single-request run is the worst case, where it is not spread at all.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks.* from run.py

from pydantic_ai import (
    Agent,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage

from benchmarks.bench_core import Figure
from benchmarks.integration_overhead import per_response
from subagent_telemetry import SubagentTelemetry
from subagent_telemetry.integrations import pydantic_ai

AREA = "pydantic_ai"
INPUT_TOKENS, OUTPUT_TOKENS = 1200, 300


def loop_model(responses: int) -> FunctionModel:
    """Calls the tool until the run has ``responses - 1`` tool results, then answers (stateless)."""

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        done = sum(
            isinstance(part, ToolReturnPart)
            for message in messages
            if isinstance(message, ModelRequest)
            for part in message.parts
        )
        part = (
            TextPart("done")
            if done >= responses - 1
            else ToolCallPart("noop", {}, tool_call_id=f"call-{done}")
        )
        return ModelResponse(
            parts=[part], usage=RequestUsage(input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS)
        )

    return FunctionModel(respond)


def make_agent(responses: int, capabilities: list[Any] | None = None) -> Agent[None, str]:
    agent = Agent(loop_model(responses), name="bench", capabilities=capabilities)
    agent.tool_plain(lambda: "ok", name="noop")
    return agent


class AgentLevel:
    """Stands in for the module in ``per_response``: ``instrument(tel)`` switches the batch to an agent
    built with ``TelemetryCapability(tel)`` (the per-agent form) instead of the bare agent."""

    def __init__(self, responses: int) -> None:
        self.bare = make_agent(responses)
        self.responses = responses
        self.built: dict[int, Agent[None, str]] = {}
        self.current = self.bare

    def instrument(self, tel: SubagentTelemetry) -> None:
        if id(tel) not in self.built:
            self.built[id(tel)] = make_agent(self.responses, [pydantic_ai.TelemetryCapability(tel)])
        self.current = self.built[id(tel)]

    def uninstrument(self) -> None:
        self.current = self.bare

    def batch(self, runs: int) -> float:
        return batch_seconds(self.current, runs)


def batch_seconds(agent: Agent[None, str], runs: int) -> float:
    async def batch() -> float:
        start = time.process_time()
        for _ in range(runs):
            await agent.run("go")
        return time.process_time() - start

    return asyncio.run(batch())


def run(quick: bool = False) -> dict[str, Any]:
    runs, repeats = (3, 2) if quick else (20, 15)
    figures: list[Figure] = []
    for responses in (1, 8):
        print(f"pydantic_ai: {responses} requests per run ...", file=sys.stderr, flush=True)
        batch = functools.partial(batch_seconds, make_agent(responses))
        figures += per_response(
            "pydantic-ai", pydantic_ai, batch, responses=responses, runs=runs, repeats=repeats
        )
    for responses in (1, 8):
        print(f"pydantic_ai: {responses} requests per run, per-agent capability ...", file=sys.stderr)
        agent_level = AgentLevel(responses)
        figures += per_response(
            "pydantic-ai",
            agent_level,
            agent_level.batch,
            responses=responses,
            runs=runs,
            repeats=repeats,
            variant="per-agent capability",
        )
    details = {
        "workload": "agent.run on FunctionModel; every request but the last calls a no-op tool",
        "framework": "pydantic-ai-slim " + __import__("pydantic_ai").__version__,
    }
    return {"area": AREA, "figures": [f.as_dict() for f in figures], "details": details}


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, ensure_ascii=False))

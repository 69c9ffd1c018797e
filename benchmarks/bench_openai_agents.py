"""OpenAI Agents SDK integration: what ``openai_agents.instrument(tel)`` adds per model response.

The same agent runs on the same in-process fake model with and without the integration, in one event
loop, batches interleaved so both share the machine's noise, timed in process CPU time
(``time.process_time``: other processes on a shared machine do not count). A run makes ``responses``
model responses (each but the last calls a no-op tool), so the per-run cost (admission, outcome) is
spread over them as in a real agent; the single-response run is the worst case, where it is not spread.
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

from agents import Agent, ModelResponse, Runner, Usage, function_tool, set_tracing_disabled
from agents.models.interface import Model
from agents.testing import assistant_message, function_call

from benchmarks.bench_core import Figure
from benchmarks.integration_overhead import per_response
from subagent_telemetry.integrations import openai_agents

AREA = "openai_agents"
INPUT_TOKENS, OUTPUT_TOKENS = 1200, 300


class LoopModel(Model):
    """Calls the tool until the run has ``responses - 1`` tool results, then answers (stateless)."""

    def __init__(self, responses: int) -> None:
        self.responses = responses
        self.usage = Usage(requests=1, input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS,
                           total_tokens=INPUT_TOKENS + OUTPUT_TOKENS)  # fmt: skip

    async def get_response(
        self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any
    ) -> ModelResponse:
        done = sum(
            1 for item in input if isinstance(item, dict) and item.get("type") == "function_call_output"
        )
        output = [assistant_message("done")] if done >= self.responses - 1 else [
            function_call("noop", "{}", call_id=f"call-{done}")
        ]  # fmt: skip
        return ModelResponse(output=output, usage=self.usage, response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - not benchmarked
        raise NotImplementedError


@function_tool
def noop() -> str:
    """Does nothing."""
    return "ok"


def batch_seconds(agent: Agent[Any], runs: int) -> float:
    async def batch() -> float:
        start = time.process_time()
        for _ in range(runs):
            await Runner.run(agent, "go", max_turns=1000)
        return time.process_time() - start

    return asyncio.run(batch())


def run(quick: bool = False) -> dict[str, Any]:
    set_tracing_disabled(True)
    runs, repeats = (3, 2) if quick else (20, 15)
    figures: list[Figure] = []
    for responses in (1, 8):
        print(f"openai_agents: {responses} responses per run ...", file=sys.stderr, flush=True)
        agent = Agent(name="bench", model=LoopModel(responses), tools=[noop])
        figures += per_response(
            "SDK",
            openai_agents,
            functools.partial(batch_seconds, agent),
            responses=responses,
            runs=runs,
            repeats=repeats,
        )
    details = {
        "workload": "Runner.run on an in-process fake Model; every response but the last calls a no-op tool",
        "sdk": "openai-agents " + __import__("agents").__version__,
    }
    return {"area": AREA, "figures": [f.as_dict() for f in figures], "details": details}


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, ensure_ascii=False))

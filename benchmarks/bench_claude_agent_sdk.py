"""Claude Agent SDK integration: what ``claude_agent_sdk.instrument(tel)`` adds per model response.

The SDK's own ``query()`` runs over the same scripted ``Transport`` (tests/support/scripted_claude.py:
the CLI's side of the protocol, no process) with and without the integration, batches interleaved,
timed in process CPU time. A session streams ``responses`` assistant messages, each sent twice as the
CLI does (one per content block), so the per-session cost (admission, hooks, outcome) is spread over
them; the single-response session is the worst case. With the real CLI a response also costs the
model's time and the CLI's own work, so these ratios are an upper bound.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks.* and tests.* from run.py

import claude_agent_sdk
from tests.support.scripted_claude import ScriptedTransport, assistant, result, text

from benchmarks.bench_core import Figure
from benchmarks.integration_overhead import per_response
from subagent_telemetry.integrations import claude_agent_sdk as claude_integration

AREA = "claude_agent_sdk"
INPUT_TOKENS, OUTPUT_TOKENS = 1200, 300


def script(responses: int) -> list[dict[str, Any]]:
    steps = []
    for n in range(responses):
        steps.append(
            assistant(f"m{n}", text("thinking"), input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS)
        )
        steps.append(
            assistant(f"m{n}", text("answer"), input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS)
        )
    return [*steps, result()]


def batch_seconds(responses: int, runs: int) -> float:
    steps = script(responses)

    async def batch() -> float:
        start = time.process_time()
        for _ in range(runs):
            async for _message in claude_agent_sdk.query(prompt="go", transport=ScriptedTransport(steps)):
                pass
        return time.process_time() - start

    return asyncio.run(batch())


def run(quick: bool = False) -> dict[str, Any]:
    from importlib.metadata import version

    runs, repeats = (3, 2) if quick else (20, 15)
    figures: list[Figure] = []
    for responses in (1, 8):
        print(f"claude_agent_sdk: {responses} responses per session ...", file=sys.stderr, flush=True)
        figures += per_response(
            "SDK",
            claude_integration,
            functools.partial(batch_seconds, responses),
            responses=responses,
            runs=runs,
            repeats=repeats,
        )
    details = {
        "workload": "claude_agent_sdk.query() over a scripted Transport; each message as two content blocks",
        "sdk": f"claude-agent-sdk {version('claude-agent-sdk')}",
    }
    return {"area": AREA, "figures": [f.as_dict() for f in figures], "details": details}


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, ensure_ascii=False))

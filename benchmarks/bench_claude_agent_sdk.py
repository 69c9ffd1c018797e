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
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks.* and tests.* from run.py

import claude_agent_sdk
from prometheus_client import CollectorRegistry
from tests.support.scripted_claude import ScriptedTransport, assistant, result, text

from benchmarks.bench_core import Figure, bench_config
from subagent_telemetry import SubagentTelemetry
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


def bench_per_response(responses: int, runs: int, repeats: int) -> list[Figure]:
    """µs per model response bare and instrumented; the ratio and the added µs."""
    registry = CollectorRegistry()
    tel = SubagentTelemetry(bench_config(default_max_turns=100), registry=registry)
    warm_up = max(runs // 10, 1)
    batch_seconds(responses, warm_up)
    claude_integration.instrument(tel)
    batch_seconds(responses, warm_up)
    claude_integration.uninstrument()
    bare, instrumented = [], []
    for _ in range(repeats):
        bare.append(batch_seconds(responses, runs))
        claude_integration.instrument(tel)
        try:
            instrumented.append(batch_seconds(responses, runs))
        finally:
            claude_integration.uninstrument()
    expected = (runs * repeats + warm_up) * responses
    recorded = registry.get_sample_value("subagent_turns_used_sum", {"depth": "1"})
    assert recorded == expected, (recorded, expected)  # One turn per message id, none twice.
    tokens = registry.get_sample_value("subagent_tokens_consumed_sum", {"depth": "1"})
    assert tokens == expected * (INPUT_TOKENS + OUTPUT_TOKENS), tokens
    per = runs * responses
    bare_us = statistics.median(bare) / per * 1e6
    inst_us = statistics.median(instrumented) / per * 1e6
    label = f"{responses} response{'s' if responses > 1 else ''} per session"
    return [
        Figure(f"SDK alone, µs per response ({label})", bare_us, "µs"),
        Figure(f"instrumented, µs per response ({label})", inst_us, "µs"),
        Figure(f"added per response ({label})", inst_us - bare_us, "µs"),
        Figure(f"instrumented / SDK alone ({label})", inst_us / bare_us, "x"),
    ]


def run(quick: bool = False) -> dict[str, Any]:
    from importlib.metadata import version

    runs, repeats = (3, 2) if quick else (20, 15)
    figures: list[Figure] = []
    for responses in (1, 8):
        print(f"claude_agent_sdk: {responses} responses per session ...", file=sys.stderr, flush=True)
        figures += bench_per_response(responses, runs, repeats)
    details = {
        "workload": "claude_agent_sdk.query() over a scripted Transport; each message as two content blocks",
        "sdk": f"claude-agent-sdk {version('claude-agent-sdk')}",
    }
    return {"area": AREA, "figures": [f.as_dict() for f in figures], "details": details}


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, ensure_ascii=False))

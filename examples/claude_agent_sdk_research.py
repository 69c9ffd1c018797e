"""A research team on the Claude Agent SDK, recorded by subagent-telemetry with one line.

    python examples/claude_agent_sdk_research.py

The real ``claude`` CLI bundled with claude-agent-sdk runs the session; the coordinator launches a
researcher and a writer through the Agent tool (in parallel), and the researcher launches a fact
checker. To run offline without an API key, this script starts the repository's fake Anthropic
Messages API (tests/support/fake_anthropic.py) on a loopback port and points the CLI at it with
ANTHROPIC_BASE_URL; it prints what was recorded per depth.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from claude_agent_sdk import ClaudeAgentOptions, ResultMessage, query
from prometheus_client import CollectorRegistry, generate_latest

from subagent_telemetry import Config, SubagentTelemetry
from subagent_telemetry.integrations import claude_agent_sdk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # The fake API lives with the tests.
from tests.support.fake_anthropic import FakeAnthropic, Reply, delegate

#: What the fake model answers each agent (found by the [agent:NAME] marker in its prompt).
SCRIPT = {
    "coordinator": [
        Reply("Delegating.", tools=[delegate("researcher", "find sources"), delegate("writer", "draft")],
              input_tokens=200, output_tokens=30),
        Reply("the report", input_tokens=650, output_tokens=120),
    ],
    "researcher": [
        Reply("Checking.", tools=[delegate("fact_checker", "check the claims")],
              input_tokens=120, output_tokens=15),
        Reply("Three sources.", input_tokens=180, output_tokens=60),
    ],
    "writer": [Reply("A draft.", input_tokens=90, output_tokens=300)],
    "fact_checker": [Reply("All true.", input_tokens=40, output_tokens=8)],
}  # fmt: skip

#: The series printed: what a Prometheus scrape of this process would show, per depth.
SHOWN = ("subagent_executions_total", "subagent_completions_total", "subagent_errors_total",
         "subagent_turns_used_sum", "subagent_tokens_consumed_sum")  # fmt: skip


async def research(options: ClaudeAgentOptions) -> Any:
    final = None
    async for message in query(
        prompt="[agent:coordinator] Write a report on subagent telemetry", options=options
    ):
        if isinstance(message, ResultMessage):
            final = message.result
    return final


def main() -> None:
    registry = CollectorRegistry()
    tel = SubagentTelemetry(Config.default(), registry=registry)
    claude_agent_sdk.instrument(tel)  # The one line: every query() / ClaudeSDKClient session from now on.
    # For a real model: drop the fake server and its env (set ANTHROPIC_API_KEY instead), keep the rest.
    with FakeAnthropic(SCRIPT) as fake, tempfile.TemporaryDirectory() as home:
        options = ClaudeAgentOptions(env=fake.env(home), cwd=home, include_partial_messages=True, max_turns=8)
        final = asyncio.run(research(options))
    print(f"final output: {final}")
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith(SHOWN) and not line.endswith(" 0.0"):
            print(line)


if __name__ == "__main__":
    main()

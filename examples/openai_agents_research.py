"""A research team on the OpenAI Agents SDK, recorded by subagent-telemetry with one line.

    python examples/openai_agents_research.py

A coordinator asks a researcher and a writer (in parallel, as tools); the researcher asks a fact
checker. Runs offline with the SDK's ScriptedModel and prints what was recorded per depth.
"""

from __future__ import annotations

import asyncio

from agents import Agent, Runner, Usage, set_tracing_disabled
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call
from prometheus_client import CollectorRegistry, generate_latest

from subagent_telemetry import Config, SubagentTelemetry
from subagent_telemetry.integrations import openai_agents


def scripted(*steps: tuple[list[object], int, int]) -> ScriptedModel:
    """Canned responses: (output items, input tokens, output tokens)."""
    return ScriptedModel(
        ModelStep(output=output, usage=Usage(requests=1, input_tokens=i, output_tokens=o, total_tokens=i + o))
        for output, i, o in steps
    )


def ask(*agents: str) -> list[object]:
    return [function_call(name, {"input": "the question"}, call_id=f"call-{name}") for name in agents]


# For a real model: delete every `model=scripted(...)` argument (agents then use OpenAI's default
# model; set OPENAI_API_KEY) or pass a model name such as model="gpt-4.1", and drop set_tracing_disabled.
fact_checker = Agent(name="fact_checker", model=scripted(([assistant_message("all true")], 40, 8)))
researcher = Agent(
    name="researcher",
    model=scripted((ask("fact_checker"), 120, 15), ([assistant_message("three sources")], 180, 60)),
    tools=[fact_checker.as_tool("fact_checker", "Check the facts")],
)
writer = Agent(name="writer", model=scripted(([assistant_message("a draft")], 90, 300)))
coordinator = Agent(
    name="coordinator",
    model=scripted((ask("researcher", "writer"), 200, 30), ([assistant_message("the report")], 650, 120)),
    tools=[researcher.as_tool("researcher", "Research"), writer.as_tool("writer", "Write")],
)


#: The series printed: what a Prometheus scrape of this process would show, per depth.
SHOWN = ("subagent_executions_total", "subagent_completions_total", "subagent_errors_total",
         "subagent_turns_used_sum", "subagent_tokens_consumed_sum")  # fmt: skip


def main() -> None:
    set_tracing_disabled(True)  # The SDK's own trace export needs an OpenAI API key.
    registry = CollectorRegistry()
    tel = SubagentTelemetry(Config.default(), registry=registry)
    openai_agents.instrument(tel)  # The one line: every Runner run from now on is recorded.
    result = asyncio.run(Runner.run(coordinator, "Write a report on subagent telemetry"))
    print(f"final output: {result.final_output}")
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith(SHOWN) and not line.endswith(" 0.0"):
            print(line)


if __name__ == "__main__":
    main()

"""A research team on pydantic-ai, recorded by subagent-telemetry with one line.

    python examples/pydantic_ai_research.py

A coordinator delegates to a researcher and a writer from its tools (called in parallel); the researcher
delegates to a fact checker. Runs offline with pydantic-ai's FunctionModel and prints what was recorded
per depth.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from pydantic_ai import Agent, ModelMessage, ModelResponse, RunContext, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage

from subagent_telemetry import Config, SubagentTelemetry
from subagent_telemetry.integrations import pydantic_ai


def scripted(*responses: tuple[list[object], int, int]) -> FunctionModel:
    """Canned responses in order: (parts, input tokens, output tokens)."""
    queue = [
        ModelResponse(parts=p, usage=RequestUsage(input_tokens=i, output_tokens=o)) for p, i, o in responses
    ]

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return queue.pop(0)

    return FunctionModel(respond)


def ask(*tools: str) -> list[object]:
    return [ToolCallPart(tool, {}, tool_call_id=f"call-{tool}") for tool in tools]


# For a real model: replace each `scripted(...)` with a model name such as "openai:gpt-4.1" or
# "anthropic:claude-sonnet-4-5" (and set that provider's API key).
fact_checker = Agent(scripted(([TextPart("all true")], 40, 8)), name="fact_checker")
researcher = Agent(
    scripted((ask("check_facts"), 120, 15), ([TextPart("three sources")], 180, 60)), name="researcher"
)
writer = Agent(scripted(([TextPart("a draft")], 90, 300)), name="writer")
coordinator = Agent(
    scripted((ask("research", "write"), 200, 30), ([TextPart("the report")], 650, 120)), name="coordinator"
)


@researcher.tool
async def check_facts(ctx: RunContext[None]) -> str:
    return (await fact_checker.run("check these facts", usage=ctx.usage)).output


@coordinator.tool
async def research(ctx: RunContext[None]) -> str:
    return (await researcher.run("find sources", usage=ctx.usage)).output


@coordinator.tool
async def write(ctx: RunContext[None]) -> str:
    return (await writer.run("write a draft", usage=ctx.usage)).output


#: The series printed: what a Prometheus scrape of this process would show, per depth.
SHOWN = ("subagent_executions_total", "subagent_completions_total", "subagent_errors_total",
         "subagent_turns_used_sum", "subagent_tokens_consumed_sum")  # fmt: skip


def main() -> None:
    registry = CollectorRegistry()
    tel = SubagentTelemetry(Config.default(), registry=registry)
    pydantic_ai.instrument(tel)  # The one line: every agent run from now on is recorded.
    result = coordinator.run_sync("Write a report on subagent telemetry")
    print(f"final output: {result.output}")
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith(SHOWN) and not line.endswith(" 0.0"):
            print(line)


if __name__ == "__main__":
    main()

"""A research team on LangGraph, recorded by subagent-telemetry with one line.

    python examples/langgraph_research.py

A coordinator graph plans, runs a researcher and a writer subgraph in parallel, then summarizes; the
researcher subgraph searches, runs a fact-checker subgraph, and concludes. Runs offline with
langchain-core's fake chat model (answers with usage_metadata) and prints what was recorded per depth.
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langgraph.graph import END, START, MessagesState, StateGraph
from prometheus_client import CollectorRegistry, generate_latest

from subagent_telemetry import Config, SubagentTelemetry
from subagent_telemetry.integrations import langgraph


def fake_model(answer: str, input_tokens: int, output_tokens: int) -> GenericFakeChatModel:
    usage = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }
    return GenericFakeChatModel(messages=iter([AIMessage(content=answer, usage_metadata=usage)]))  # type: ignore[arg-type]


def ask(model: Any) -> Any:
    """A node that sends the conversation to ``model`` once."""
    return lambda state: {"messages": [model.invoke(state["messages"])]}


def graph(name: str, *nodes: tuple[str, Any]) -> Any:
    """A compiled graph running ``nodes`` one after another."""
    builder = StateGraph(MessagesState)
    previous = START
    for node, action in nodes:
        builder.add_node(node, action)
        builder.add_edge(previous, node)
        previous = node
    builder.add_edge(previous, END)
    return builder.compile(name=name)


# For a real model: replace each fake_model(...) with a chat model, e.g.
# langchain.chat_models.init_chat_model("anthropic:claude-sonnet-4-5") (and set its API key).
fact_checker = graph("fact_checker", ("check", ask(fake_model("all true", 40, 8))))
researcher = graph(
    "researcher",
    ("search", ask(fake_model("found sources", 120, 15))),
    ("verify", fact_checker),
    ("conclude", ask(fake_model("three sources", 180, 60))),
)
writer = graph("writer", ("draft", ask(fake_model("a draft", 90, 300))))

builder = StateGraph(MessagesState)
builder.add_node("plan", ask(fake_model("research, then write", 200, 30)))
builder.add_node("research", researcher)
builder.add_node("write", writer)
builder.add_node("summarize", ask(fake_model("the report", 650, 120)))
builder.add_edge(START, "plan")
builder.add_edge("plan", "research")
builder.add_edge("plan", "write")  # research and write run in parallel
builder.add_edge(["research", "write"], "summarize")
builder.add_edge("summarize", END)
coordinator = builder.compile(name="coordinator")

#: The series printed: what a Prometheus scrape of this process would show, per depth.
SHOWN = ("subagent_executions_total", "subagent_completions_total", "subagent_errors_total",
         "subagent_turns_used_sum", "subagent_tokens_consumed_sum")  # fmt: skip


def main() -> None:
    registry = CollectorRegistry()
    tel = SubagentTelemetry(Config.default(), registry=registry)
    langgraph.instrument(tel)  # The one line: every graph run (and compiled subgraph) from now on.
    result = coordinator.invoke({"messages": [("user", "Write a report on subagent telemetry")]})
    print(f"final output: {result['messages'][-1].content}")
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith(SHOWN) and not line.endswith(" 0.0"):
            print(line)


if __name__ == "__main__":
    main()

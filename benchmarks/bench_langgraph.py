"""LangGraph integration: what ``langgraph.instrument(tel)`` adds per model response.

The same graph runs on the same in-process fake chat model with and without the integration, batches
interleaved so both share the machine's noise, timed in process CPU time (``time.process_time``: other
processes on a shared machine do not count, LangGraph's worker threads do). A run makes ``responses``
model calls (one node looping), so the per-run cost (admission, outcome) is spread over them as in a
real agent; the single-response run is the worst case, where it is not spread at all.
"""

from __future__ import annotations

import functools
import itertools
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks.* and tests.* from run.py

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langgraph.graph import END, START, MessagesState, StateGraph

from benchmarks.bench_core import Figure
from benchmarks.integration_overhead import per_response
from subagent_telemetry.integrations import langgraph

AREA = "langgraph"
INPUT_TOKENS, OUTPUT_TOKENS = 1200, 300


def looping_graph(responses: int) -> Any:
    """One node that asks the model, looping until the conversation holds ``responses`` answers."""
    usage = {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS,
             "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS}  # fmt: skip
    answers = (AIMessage(content="ok", usage_metadata=usage) for _ in itertools.count())  # type: ignore[arg-type]
    model = GenericFakeChatModel(messages=answers)

    def think(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    def route(state: MessagesState) -> str:
        return END if len(state["messages"]) > responses else "think"

    builder = StateGraph(MessagesState)
    builder.add_node("think", think)
    builder.add_edge(START, "think")
    builder.add_conditional_edges("think", route)
    return builder.compile(name="bench")


def batch_seconds(graph: Any, runs: int) -> float:
    start = time.process_time()
    for _ in range(runs):
        graph.invoke({"messages": [("user", "go")]}, config={"recursion_limit": 1000})
    return time.process_time() - start


def run(quick: bool = False) -> dict[str, Any]:
    from importlib.metadata import version

    runs, repeats = (3, 2) if quick else (20, 15)
    figures: list[Figure] = []
    for responses in (1, 8):
        print(f"langgraph: {responses} responses per run ...", file=sys.stderr, flush=True)
        graph = looping_graph(responses)
        figures += per_response(
            "LangGraph",
            langgraph,
            functools.partial(batch_seconds, graph),
            responses=responses,
            runs=runs,
            repeats=repeats,
        )
    details = {
        "workload": "graph.invoke of one node looping on GenericFakeChatModel (usage_metadata per answer)",
        "framework": f"langgraph {version('langgraph')}, langchain-core {version('langchain-core')}",
    }
    return {"area": AREA, "figures": [f.as_dict() for f in figures], "details": details}


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, ensure_ascii=False))

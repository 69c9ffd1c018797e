"""LangGraph integration: graph runs and compiled subgraphs recorded as nested subagent executions.

Every test runs the real installed LangGraph with langchain-core's ``GenericFakeChatModel`` answering
with ``usage_metadata``. The tree: a coordinator graph (plan, then researchers A and B in parallel,
then summarize); A reads and delegates to subgraph C.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from decimal import Decimal
from importlib import metadata
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import RunnableLambda
from langgraph.errors import GraphRecursionError
from langgraph.graph import END, START, MessagesState, StateGraph
from prometheus_client import CollectorRegistry

from subagent_telemetry import (
    ConcurrencyLimitReached,
    DepthLimitExceeded,
    SubagentTelemetry,
    TokenLimitExceeded,
    TurnLimitExceeded,
)
from subagent_telemetry.integrations import langgraph as lg_integration
from tests.conftest import make_config
from tests.support.depth_metrics import at_depth, errors, invariant_holds, rejections

Factory = Callable[..., SubagentTelemetry]

#: (input, output) tokens of each model call in the tree.
PLAN, SUMMARIZE, READ_A, READ_B, THINK_C = (100, 20), (200, 30), (40, 4), (60, 6), (70, 7)


class Model(GenericFakeChatModel):
    """A fake chat model answering with fixed usage; counts its calls; fails when told to."""

    calls: int = 0
    fail: bool = False

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.fail:
            msg = "model unavailable"
            raise RuntimeError(msg)
        return super()._generate(messages, *args, **kwargs)


def model(tokens: tuple[int, int], replies: int = 5) -> Model:
    usage = {"input_tokens": tokens[0], "output_tokens": tokens[1], "total_tokens": sum(tokens)}
    return Model(
        messages=iter([AIMessage(content=f"reply {n}", usage_metadata=usage) for n in range(replies)])
    )  # type: ignore[arg-type]


def node(llm: Model) -> RunnableLambda[Any, Any]:
    """A graph node that asks ``llm`` once, sync or async as the graph runs."""

    def call(state: MessagesState) -> dict[str, Any]:
        return {"messages": [llm.invoke(state["messages"])]}

    async def acall(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await llm.ainvoke(state["messages"])]}

    return RunnableLambda(call, afunc=acall)


def chain(name: str, *steps: tuple[str, Any]) -> Any:
    """A compiled graph running ``steps`` one after another."""
    builder = StateGraph(MessagesState)
    previous = START
    for step, runnable in steps:
        builder.add_node(step, runnable)
        builder.add_edge(previous, step)
        previous = step
    builder.add_edge(previous, END)
    return builder.compile(name=name)


class Tree:
    """The coordinator graph and the fake model behind each of its nodes."""

    def __init__(self, *, parallel: bool = True) -> None:
        self.models = {
            "plan": model(PLAN),
            "summarize": model(SUMMARIZE),
            "a": model(READ_A),
            "b": model(READ_B),
            "c": model(THINK_C),
        }
        deep = chain("deep_researcher", ("think", node(self.models["c"])))
        researcher_a = chain("researcher_a", ("read", node(self.models["a"])), ("deep", deep))
        researcher_b = chain("researcher_b", ("read", node(self.models["b"])))
        builder = StateGraph(MessagesState)
        builder.add_node("plan", node(self.models["plan"]))
        builder.add_node("a", researcher_a)
        builder.add_node("b", researcher_b)
        builder.add_node("summarize", node(self.models["summarize"]))
        builder.add_edge(START, "plan")
        if parallel:
            builder.add_edge("plan", "a")
            builder.add_edge("plan", "b")
            builder.add_edge(["a", "b"], "summarize")
        else:
            builder.add_edge("plan", "a")
            builder.add_edge("a", "b")
            builder.add_edge("b", "summarize")
        builder.add_edge("summarize", END)
        self.graph = builder.compile(name="coordinator")


INPUT = {"messages": [("user", "research subagent telemetry")]}


def run(graph: Any, mode: str, config: dict[str, Any] | None = None) -> None:
    """Run ``graph`` to the end through one of LangGraph's four entry points."""
    if mode == "invoke":
        graph.invoke(INPUT, config=config)
    elif mode == "stream":
        for _ in graph.stream(INPUT, config=config):
            pass
    elif mode == "ainvoke":
        asyncio.run(graph.ainvoke(INPUT, config=config))
    else:

        async def consume() -> None:
            async for _ in graph.astream(INPUT, config=config):
                pass

        asyncio.run(consume())


@pytest.fixture
def instrumented(telemetry_factory: Factory) -> Iterator[Callable[..., SubagentTelemetry]]:
    """``instrument(tel, ...)`` for the test; always uninstrumented afterwards."""

    def instrument(config: Any = None, **options: Any) -> SubagentTelemetry:
        tel = telemetry_factory(config, **options.pop("telemetry", {}))
        lg_integration.instrument(tel, **options)
        return tel

    yield instrument
    lg_integration.uninstrument()


class TestTree:
    @pytest.mark.parametrize("mode", ["invoke", "stream", "ainvoke", "astream"])
    def test_each_graph_is_one_execution_at_its_depth(
        self, instrumented: Any, registry: CollectorRegistry, mode: str
    ) -> None:
        """The coordinator is depth 1, its two subgraphs depth 2, the nested subgraph depth 3."""
        instrumented()
        run(Tree().graph, mode)
        assert [at_depth(registry, d).executions for d in (1, 2, 3, 4)] == [1, 2, 1, 0]
        assert [at_depth(registry, d).completions for d in (1, 2, 3)] == [1, 2, 1]

    @pytest.mark.parametrize("mode", ["invoke", "stream", "ainvoke", "astream"])
    def test_token_sums_per_depth_are_exactly_the_models_usage(
        self, instrumented: Any, registry: CollectorRegistry, mode: str
    ) -> None:
        """Each depth's token sum is the usage_metadata of its own model calls, nothing shared twice."""
        instrumented()
        run(Tree().graph, mode)
        assert at_depth(registry, 1).tokens == sum(PLAN) + sum(SUMMARIZE)
        assert at_depth(registry, 2).tokens == sum(READ_A) + sum(READ_B)
        assert at_depth(registry, 3).tokens == sum(THINK_C)

    def test_one_turn_per_chat_model_call(self, instrumented: Any, registry: CollectorRegistry) -> None:
        """Turns per depth are the chat-model calls made directly in that depth's graphs."""
        instrumented()
        run(Tree().graph, "invoke")
        assert [at_depth(registry, d).turns for d in (1, 2, 3)] == [2, 2, 1]

    @pytest.mark.parametrize("mode", ["invoke", "astream"])
    def test_parallel_subgraphs_leave_no_slot_held(
        self, instrumented: Any, registry: CollectorRegistry, mode: str
    ) -> None:
        """Parallel subgraphs (callbacks from executor threads) all end: nothing stays active."""
        instrumented(make_config(max_concurrency=4))
        for _ in range(3):
            run(Tree().graph, mode)
        assert [at_depth(registry, d).active for d in (1, 2, 3)] == [0, 0, 0]
        assert [at_depth(registry, d).executions for d in (1, 2, 3)] == [3, 6, 3]
        assert invariant_holds(registry)

    def test_a_graph_inside_an_execution_nests_under_it(
        self, instrumented: Any, registry: CollectorRegistry
    ) -> None:
        """A graph invoked inside ``with tel.execution()`` starts one level below it."""
        tel = instrumented(make_config(max_depth=4))
        with tel.execution("outer"):
            run(Tree().graph, "invoke")
        assert [at_depth(registry, d).executions for d in (1, 2, 3, 4)] == [1, 1, 2, 1]

    def test_subgraphs_by_name_leave_others_transparent(
        self, instrumented: Any, registry: CollectorRegistry
    ) -> None:
        """With ``subgraphs={"researcher_a"}``, B is no execution and its calls count for the coordinator."""
        instrumented(subgraphs={"researcher_a"})
        run(Tree().graph, "invoke")
        assert [at_depth(registry, d).executions for d in (1, 2, 3)] == [1, 1, 0]
        assert at_depth(registry, 1).tokens == sum(PLAN) + sum(SUMMARIZE) + sum(READ_B)
        assert at_depth(registry, 2).tokens == sum(READ_A) + sum(THINK_C)


class TestParallelRuns:
    def test_graphs_gathered_inside_an_execution_each_nest_under_it(
        self, instrumented: Any, registry: CollectorRegistry
    ) -> None:
        """Graphs run with ``asyncio.gather`` inside one execution are each one level below it."""
        tel = instrumented(make_config(max_depth=4, max_concurrency=16))

        async def go() -> None:
            async with tel.execution("outer"):
                await asyncio.gather(*(Tree().graph.ainvoke(INPUT) for _ in range(3)))

        asyncio.run(go())
        assert [at_depth(registry, d).executions for d in (1, 2, 3, 4)] == [1, 3, 6, 3]
        assert at_depth(registry, 2).tokens == 3 * (sum(PLAN) + sum(SUMMARIZE))
        assert [at_depth(registry, d).active for d in (1, 2, 3, 4)] == [0, 0, 0, 0]

    def test_concurrency_refusal_fails_the_graph_and_frees_every_slot(
        self, instrumented: Any, registry: CollectorRegistry
    ) -> None:
        """With two slots held by the coordinator and A, the nested subgraph is refused before its model."""
        instrumented(make_config(max_concurrency=2))
        tree = Tree(parallel=False)
        with pytest.raises(ConcurrencyLimitReached):
            tree.graph.invoke(INPUT)
        assert tree.models["c"].calls == 0
        assert rejections(registry, "concurrency") == 1
        assert invariant_holds(registry)
        assert [at_depth(registry, d).active for d in (1, 2, 3)] == [0, 0, 0]


class TestOutcomes:
    def test_graph_recursion_limit_is_incomplete(
        self, instrumented: Any, registry: CollectorRegistry
    ) -> None:
        """A graph stopped by LangGraph's recursion limit ends ``incomplete``, not failed."""
        instrumented()
        llm = model(PLAN, replies=10)
        builder = StateGraph(MessagesState)
        builder.add_node("think", node(llm))
        builder.add_edge(START, "think")
        builder.add_conditional_edges("think", lambda state: "think")
        graph = builder.compile(name="looper")
        with pytest.raises(GraphRecursionError):
            graph.invoke(INPUT, config={"recursion_limit": 3})
        assert at_depth(registry, 1).incomplete == 1
        assert at_depth(registry, 1).errors == 0
        assert at_depth(registry, 1).turns == 3

    def test_turn_limit_stops_before_the_model_is_called(
        self, instrumented: Any, registry: CollectorRegistry
    ) -> None:
        """Past ``default_max_turns`` the next chat-model call is refused before it runs: incomplete."""
        instrumented(make_config(default_max_turns=2))
        llm = model(PLAN, replies=10)
        builder = StateGraph(MessagesState)
        builder.add_node("think", node(llm))
        builder.add_edge(START, "think")
        builder.add_conditional_edges("think", lambda state: "think")
        with pytest.raises(TurnLimitExceeded):
            builder.compile(name="looper").invoke(INPUT, config={"recursion_limit": 50})
        assert llm.calls == 2
        assert at_depth(registry, 1).incomplete == 1
        assert at_depth(registry, 1).tokens == 2 * sum(PLAN)

    def test_model_error_fails_its_graph_and_the_graphs_above(
        self, instrumented: Any, registry: CollectorRegistry
    ) -> None:
        """A model that raises fails the subgraph that called it, and the error fails its parents too."""
        instrumented()
        tree = Tree(parallel=False)
        tree.models["c"].fail = True
        with pytest.raises(RuntimeError, match="model unavailable"):
            tree.graph.invoke(INPUT)
        assert [errors(registry, d, "execution_failed") for d in (1, 2, 3)] == [1, 1, 1]
        assert invariant_holds(registry)

    def test_depth_refusal_stops_the_subgraph_before_its_model(
        self, instrumented: Any, registry: CollectorRegistry
    ) -> None:
        """Past ``max_depth`` the nested subgraph is refused once, before its model; the graph raises."""
        instrumented(make_config(max_depth=2))
        tree = Tree()
        with pytest.raises(DepthLimitExceeded):
            tree.graph.invoke(INPUT)
        assert tree.models["c"].calls == 0
        assert at_depth(registry, 3).executions == 1
        assert errors(registry, 3, "max_depth_reached") == 1
        assert invariant_holds(registry)
        assert [at_depth(registry, d).active for d in (1, 2, 3)] == [0, 0, 0]

    def test_token_budget_refusal_mid_tree(self, instrumented: Any, registry: CollectorRegistry) -> None:
        """Once the session's tokens are spent the next subgraph is refused before its model runs."""
        instrumented(make_config(max_total_tokens=sum(PLAN) + sum(READ_A)))
        tree = Tree(parallel=False)
        with pytest.raises(TokenLimitExceeded):
            tree.graph.invoke(INPUT)
        assert tree.models["c"].calls == 0
        assert errors(registry, 3, "quota_exceeded") == 1
        assert rejections(registry, "tokens") == 1
        assert at_depth(registry, 1).tokens + at_depth(registry, 2).tokens == sum(PLAN) + sum(READ_A)
        assert invariant_holds(registry)


class TestSpans:
    def test_spans_nest_like_the_executions(self, instrumented: Any) -> None:
        """Each subgraph's span is a child of its parent graph's span, in one trace."""
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        instrumented(telemetry={"tracer_provider": provider})
        run(Tree().graph, "invoke")
        spans = {span.context.span_id: span for span in exporter.get_finished_spans()}
        assert len(spans) == 4

        def depth(span: Any) -> int:
            parent = span.parent
            return 1 if parent is None else 1 + depth(spans[parent.span_id])

        assert sorted(depth(span) for span in spans.values()) == [1, 2, 2, 3]
        assert len({span.context.trace_id for span in spans.values()}) == 1


class TestInstrumentation:
    def test_uninstrument_restores_the_framework(
        self, instrumented: Any, registry: CollectorRegistry
    ) -> None:
        """After ``uninstrument()`` graphs run as before and nothing is recorded."""
        instrumented()
        lg_integration.uninstrument()
        tree = Tree()
        out = tree.graph.invoke(INPUT)
        assert [m.content for m in out["messages"][1:]] == ["reply 0"] * 5
        assert at_depth(registry, 1).executions == 0

    def test_instrument_again_after_uninstrument_records(
        self, instrumented: Any, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """An instrument / uninstrument / instrument round trip records every run exactly once."""
        instrumented()
        lg_integration.uninstrument()
        lg_integration.instrument(telemetry_factory())
        run(Tree().graph, "invoke")
        assert [at_depth(registry, d).executions for d in (1, 2, 3)] == [1, 2, 1]

    def test_second_instrument_warns_and_changes_nothing(
        self,
        instrumented: Any,
        telemetry_factory: Factory,
        registry: CollectorRegistry,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Instrumenting twice logs a warning and keeps the first instrumentation (no double counts)."""
        instrumented()
        with caplog.at_level(logging.WARNING, logger="subagent_telemetry"):
            lg_integration.instrument(SubagentTelemetry(make_config(), registry=CollectorRegistry()))
        assert "already instrumented" in caplog.text
        run(Tree().graph, "invoke")
        assert at_depth(registry, 1).executions == 1

    def test_explicit_handler_records_one_run(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """``callback_handler(tel)`` in a run's config records that run without instrumenting."""
        tel = telemetry_factory()
        run(Tree().graph, "invoke", config={"callbacks": [lg_integration.callback_handler(tel)]})
        run(Tree().graph, "invoke")
        assert [at_depth(registry, d).executions for d in (1, 2, 3)] == [1, 2, 1]

    def test_seam_is_present_in_the_installed_versions(self) -> None:
        """The public seams used here exist and the installed versions are the tested ones."""
        from langchain_core.tracers import context

        assert callable(context.register_configure_hook)
        assert lg_integration.SubagentCallbackHandler.raise_error is True
        from packaging.specifiers import SpecifierSet

        for package, spec in lg_integration.SUPPORTED_VERSIONS.items():
            assert metadata.version(package) in SpecifierSet(spec)


class TestControlFlow:
    def test_subgraph_handing_over_to_its_parent_is_complete(
        self, instrumented: Any, registry: CollectorRegistry
    ) -> None:
        """A subgraph that returns ``Command(graph=Command.PARENT)`` ends complete (control flow)."""
        from langgraph.types import Command

        instrumented()
        sub = StateGraph(MessagesState)
        sub.add_node("hand_over", lambda state: Command(graph=Command.PARENT, goto="finish"))
        sub.add_edge(START, "hand_over")
        builder = StateGraph(MessagesState)
        builder.add_node("delegate", sub.compile(name="helper"), destinations=("finish",))
        builder.add_node("finish", node(model(PLAN)))
        builder.add_edge(START, "delegate")
        builder.add_edge("finish", END)
        builder.compile(name="coordinator").invoke(INPUT)
        assert [at_depth(registry, d).completions for d in (1, 2)] == [1, 1]
        assert at_depth(registry, 1).tokens == sum(PLAN)

    def test_subgraph_paused_by_an_interrupt_is_incomplete(
        self, instrumented: Any, registry: CollectorRegistry
    ) -> None:
        """A subgraph paused for human input ends ``incomplete``; the graph returns its interrupt."""
        from langgraph.checkpoint.memory import InMemorySaver
        from langgraph.types import interrupt

        instrumented()
        sub = StateGraph(MessagesState)
        sub.add_node("ask_human", lambda state: {"messages": [("user", interrupt("approve?"))]})
        sub.add_edge(START, "ask_human")
        builder = StateGraph(MessagesState)
        builder.add_node("delegate", sub.compile(name="helper"))
        builder.add_edge(START, "delegate")
        graph = builder.compile(name="coordinator", checkpointer=InMemorySaver())
        out = graph.invoke(INPUT, config={"configurable": {"thread_id": "t1"}})
        assert "__interrupt__" in out
        assert at_depth(registry, 2).incomplete == 1
        assert invariant_holds(registry)


def test_a_recording_failure_never_reaches_the_graph(
    instrumented: Any,
    registry: CollectorRegistry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unexpected error while recording is logged; the graph runs on (only quota errors are raised)."""

    def broken(response: Any) -> None:
        msg = "unreadable usage"
        raise ValueError(msg)

    instrumented()
    monkeypatch.setattr(lg_integration, "_usage", broken)
    out = Tree().graph.invoke(INPUT)
    assert out["messages"][-1].content == "reply 0"
    assert "not recorded" in caplog.text
    assert at_depth(registry, 1).completions == 1


class PricedModel(Model):
    """The fake model reporting itself as OpenAI's gpt-4o, as a real chat model's ls params do."""

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        return {**params, "ls_provider": "openai", "ls_model_name": "gpt-4o"}


class TestCost:
    def test_cache_and_reasoning_details_are_priced_at_their_own_rates(self, instrumented: Any) -> None:
        """usage_metadata's cache-read and reasoning details reach the money budget as calc_price() says."""
        import genai_prices

        usage = {
            "input_tokens": 1_000,
            "output_tokens": 200,
            "total_tokens": 1_200,
            "input_token_details": {"cache_read": 600},
            "output_token_details": {"reasoning": 50},
        }
        llm = PricedModel(messages=iter([AIMessage(content="answer", usage_metadata=usage)]))  # type: ignore[arg-type]
        tel = instrumented()
        run(chain("priced", ("ask", node(llm))), "invoke")
        expected = genai_prices.calc_price(
            genai_prices.Usage(input_tokens=1_000, cache_read_tokens=600, output_tokens=200),
            "gpt-4o",
            provider_id="openai",
        ).total_price
        assert Decimal(tel.tracker.get_usage().cost_nanos).scaleb(-9) == expected

"""The pydantic-ai integration, against real pydantic-ai agents with its offline ``FunctionModel``."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from pydantic_ai import (
    Agent,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    RunContext,
    TextPart,
    ToolCallPart,
    ToolFailed,
    ToolReturnPart,
    UsageLimitExceeded,
)
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage, RunUsage, UsageLimits

from subagent_telemetry import Config, SubagentTelemetry, TokenLimitExceeded
from subagent_telemetry.integrations import pydantic_ai as integration
from subagent_telemetry.integrations.pydantic_ai import TelemetryCapability
from tests.conftest import make_config
from tests.support.agent_metrics import assert_invariant, per_depth, total

Factory = Callable[..., SubagentTelemetry]


@pytest.fixture(autouse=True)
def _uninstrumented() -> Iterator[None]:
    yield
    integration.uninstrument()


@dataclass
class Script:
    """A model answering with the given responses in order (an exception is raised); records what it saw."""

    responses: list[ModelResponse | Exception]
    seen: list[list[ModelMessage]] = field(default_factory=list)

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.seen.append(list(messages))
        step = self.responses.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    def tool_results(self) -> dict[str, ToolReturnPart]:
        """The tool results in the last request the model saw, by tool name."""
        last = self.seen[-1][-1]
        assert isinstance(last, ModelRequest)
        return {p.tool_name: p for p in last.parts if isinstance(p, ToolReturnPart)}


def reply(text: str, input: int, output: int) -> ModelResponse:
    return ModelResponse(parts=[TextPart(text)], usage=RequestUsage(input_tokens=input, output_tokens=output))


def call(*tools: str, input: int, output: int) -> ModelResponse:
    """One response calling each tool once (in parallel when several)."""
    parts = [ToolCallPart(tool, {}, tool_call_id=f"call-{tool}") for tool in tools]
    return ModelResponse(parts=parts, usage=RequestUsage(input_tokens=input, output_tokens=output))


def scripted(name: str, *responses: ModelResponse | Exception) -> tuple[Agent[None, str], Script]:
    script = Script(list(responses))
    return Agent(FunctionModel(script), name=name), script


def delegates_to(parent: Agent[None, str], child: Agent[None, str]) -> None:
    """Give ``parent`` a tool ``ask_<child>`` that runs ``child``, sharing the parent's RunUsage."""

    async def ask(ctx: RunContext[None]) -> str:
        return (await child.run("go", usage=ctx.usage)).output

    parent.tool(ask, name=f"ask_{child.name}")


@dataclass
class Tree:
    """coordinator (1) → researcher (2) → fact_checker (3); coordinator → writer (2), in parallel."""

    coordinator: Agent[None, str]
    scripts: dict[str, Script]


def research_tree(checker_reply: ModelResponse | None = None) -> Tree:
    checker, checker_script = scripted("fact_checker", checker_reply or reply("checked", 5, 1))
    researcher, researcher_script = scripted(
        "researcher", call("ask_fact_checker", input=10, output=2), reply("found", 11, 3)
    )
    writer, writer_script = scripted("writer", reply("written", 7, 7))
    coordinator, coordinator_script = scripted(
        "coordinator", call("ask_researcher", "ask_writer", input=100, output=20), reply("report", 120, 30)
    )
    delegates_to(researcher, checker)
    delegates_to(coordinator, researcher)
    delegates_to(coordinator, writer)
    scripts = {
        "coordinator": coordinator_script,
        "researcher": researcher_script,
        "fact_checker": checker_script,
    }
    return Tree(coordinator, scripts | {"writer": writer_script})


class TestDelegationTree:
    def test_depth_and_exact_tokens_per_depth(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Each run is one execution at its depth; token sums per depth equal the responses' usage exactly."""
        integration.instrument(telemetry_factory())
        result = research_tree().coordinator.run_sync("write a report")
        assert result.output == "report"
        assert per_depth(registry, "subagent_executions_total", 3) == [1, 2, 1]
        assert per_depth(registry, "subagent_tokens_consumed_sum", 3) == [270, 40, 6]
        assert per_depth(registry, "subagent_turns_used_sum", 3) == [2, 3, 1]
        assert per_depth(registry, "subagent_completions_total", 3, status="complete") == [1, 2, 1]
        assert_invariant(registry)

    def test_shared_run_usage_is_not_counted_twice(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Delegates add to the coordinator's RunUsage; the recorded total is still each response once."""
        integration.instrument(telemetry_factory())
        result = research_tree().coordinator.run_sync("go")
        assert result.usage.total_tokens == 316  # Every response of the tree, through the shared RunUsage.
        assert total(registry, "subagent_tokens_consumed_sum") == 316

    def test_parallel_trees_keep_their_own_depths(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Two coordinators run at once (asyncio.gather): each subtree nests under its own coordinator."""
        integration.instrument(telemetry_factory(make_config(max_concurrency=20)))

        async def both() -> list[Any]:
            return list(
                await asyncio.gather(
                    research_tree().coordinator.run("a"), research_tree().coordinator.run("b")
                )
            )

        assert [r.output for r in asyncio.run(both())] == ["report", "report"]
        assert per_depth(registry, "subagent_executions_total", 3) == [2, 4, 2]
        assert per_depth(registry, "subagent_tokens_consumed_sum", 3) == [540, 80, 12]
        assert_invariant(registry)

    def test_run_stream_iter_and_events_are_executions(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """run_stream, iter and run_stream_events each record one execution with the streamed usage."""

        async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
            yield "hello "
            yield "world"

        streaming = Agent(FunctionModel(stream_function=stream), name="streaming")
        iterating, _ = scripted("iterating", reply("x", 3, 4))
        integration.instrument(telemetry_factory())

        async def runs() -> int:
            async with streaming.run_stream("go") as result:
                assert await result.get_output() == "hello world"
            used = result.usage.total_tokens
            async with streaming.run_stream_events("go") as events:
                async for _ in events:
                    pass
            async with iterating.iter("go") as run:
                async for _ in run:
                    pass
            return 2 * used + 7

        expected = asyncio.run(runs())
        assert total(registry, "subagent_executions_total", depth="1") == 3
        assert total(registry, "subagent_tokens_consumed_sum", depth="1") == expected
        assert_invariant(registry)

    def test_cached_tokens_are_priced_apart(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A response's cache reads are priced at the cache rate, under the response's model name."""
        config = Config.model_validate(
            {
                "cost": {
                    "bundled_prices": False,
                    "prices": {"priced-model": {"input": 2, "output": 8, "cache_read": 0.5}},
                },
                "telemetry": {"log_executions": False},
            }
        )
        usage = RequestUsage(input_tokens=1_000_000, cache_read_tokens=400_000, output_tokens=100_000)
        script = Script([ModelResponse(parts=[TextPart("ok")], usage=usage)])
        priced = Agent(FunctionModel(script, model_name="priced-model"), name="priced")
        integration.instrument(telemetry_factory(config))
        priced.run_sync("go")
        # 600k input at 2/M + 400k cached at 0.5/M + 100k output at 8/M.
        assert total(registry, "subagent_cost_total", depth="1") == pytest.approx(2.2)
        assert total(registry, "subagent_unpriced_tokens_total") == 0


class TestOutcomes:
    def test_request_limit_is_incomplete(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """UsageLimitExceeded from the run's request_limit ends it as incomplete, and reaches the caller."""
        looping, _ = scripted("looping", call("ping", input=1, output=1), call("ping", input=1, output=1))
        looping.tool_plain(lambda: "pong", name="ping")
        integration.instrument(telemetry_factory())
        with pytest.raises(UsageLimitExceeded, match="request_limit"):
            looping.run_sync("go", usage_limits=UsageLimits(request_limit=1))
        assert total(registry, "subagent_completions_total", depth="1", status="incomplete") == 1
        assert_invariant(registry)

    def test_token_limit_of_the_framework_is_failed(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A pydantic-ai token limit is not a turn limit: the run failed."""
        greedy, _ = scripted("greedy", reply("long", 50, 50))
        integration.instrument(telemetry_factory())
        with pytest.raises(UsageLimitExceeded, match="total_tokens_limit"):
            greedy.run_sync("go", usage_limits=UsageLimits(total_tokens_limit=10))
        assert total(registry, "subagent_errors_total", depth="1", error_type="execution_failed") == 1

    def test_model_error_is_failed(self, telemetry_factory: Factory, registry: CollectorRegistry) -> None:
        """A model request that raises fails the execution with execution_failed and reaches the caller."""
        broken, _ = scripted("broken", RuntimeError("model down"))
        integration.instrument(telemetry_factory())
        with pytest.raises(RuntimeError, match="model down"):
            broken.run_sync("go")
        assert total(registry, "subagent_errors_total", depth="1", error_type="execution_failed") == 1
        assert_invariant(registry)

    def test_cancelled_run_is_recorded_once_and_frees_its_slot(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Cancelling a run mid-request records it as cancelled; no slot stays held."""
        started = asyncio.Event()

        async def hang(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
            started.set()
            await asyncio.sleep(3600)
            raise AssertionError  # pragma: no cover

        slow = Agent(FunctionModel(hang), name="slow")
        fast, _ = scripted("fast", reply("ok", 1, 1))
        integration.instrument(telemetry_factory(make_config(max_concurrency=1)))

        async def cancel_then_run_again() -> None:
            task = asyncio.create_task(slow.run("go"))
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await fast.run("go")  # The only slot is free again.

        asyncio.run(cancel_then_run_again())
        assert total(registry, "subagent_errors_total", depth="1", error_type="cancelled") == 1
        assert_invariant(registry)


class TestRefusals:
    def test_depth_refusal_is_a_failed_tool_result_for_the_parent(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Past max_depth a subagent is refused before its model request, counted once; its parent goes on."""
        integration.instrument(telemetry_factory(make_config(max_depth=2)))
        tree = research_tree()
        assert tree.coordinator.run_sync("go").output == "report"
        assert tree.scripts["fact_checker"].seen == []
        refusal = tree.scripts["researcher"].tool_results()["ask_fact_checker"]
        assert refusal.outcome == "failed"
        assert str(refusal.content).startswith("subagent refused: ")
        assert total(registry, "subagent_errors_total", depth="3", error_type="max_depth_reached") == 1
        assert total(registry, "subagent_quota_rejections_total", resource="depth") == 1
        assert per_depth(registry, "subagent_completions_total", 2, status="complete") == [1, 2]
        assert_invariant(registry)

    @pytest.mark.parametrize(
        ("limits", "resource"),
        [({"max_concurrency": 1}, "concurrency"), ({"max_executions": 1}, "executions")],
        ids=["concurrency", "executions"],
    )
    def test_slot_and_execution_refusals_are_failed_tool_results_too(
        self, telemetry_factory: Factory, registry: CollectorRegistry, limits: dict[str, int], resource: str
    ) -> None:
        """A subagent refused for want of a concurrency slot or an execution is a failed tool result."""
        child, child_script = scripted("child", reply("never", 1, 1))
        parent, parent_script = scripted("parent", call("ask_child", input=1, output=1), reply("done", 1, 1))
        delegates_to(parent, child)
        integration.instrument(telemetry_factory(make_config(**limits)))
        assert parent.run_sync("go").output == "done"
        assert child_script.seen == []
        assert parent_script.tool_results()["ask_child"].outcome == "failed"
        assert total(registry, "subagent_quota_rejections_total", resource=resource) == 1
        assert total(registry, "subagent_errors_total", depth="2", error_type="quota_exceeded") == 1
        assert_invariant(registry)

    def test_spent_token_budget_refuses_the_next_subagent(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A spent budget refuses the next subagent before its model request (a failed tool result for its
        parent); the next response of each ancestor then passes the budget and stops it."""
        checker, checker_script = scripted("fact_checker", reply("checked", 5, 1))
        researcher, researcher_script = scripted(
            "researcher", call("ask_fact_checker", input=10, output=10), reply("found", 5, 5)
        )
        coordinator, coordinator_script = scripted(
            "coordinator", call("ask_researcher", input=60, output=20), reply("report", 1, 1)
        )
        delegates_to(researcher, checker)
        delegates_to(coordinator, researcher)
        integration.instrument(telemetry_factory(make_config(max_total_tokens=100)))
        with pytest.raises(TokenLimitExceeded):
            coordinator.run_sync("go")
        assert checker_script.seen == []
        assert researcher_script.tool_results()["ask_fact_checker"].outcome == "failed"
        assert coordinator_script.tool_results()["ask_researcher"].outcome == "failed"
        assert total(registry, "subagent_errors_total", depth="3", error_type="quota_exceeded") == 1
        assert total(registry, "subagent_executions_total", depth="3") == 1
        assert per_depth(registry, "subagent_errors_total", 2, error_type="quota_exceeded") == [1, 1]
        assert per_depth(registry, "subagent_tokens_consumed_sum", 3) == [82, 30, 0]
        assert_invariant(registry)

    def test_other_tool_errors_are_left_to_the_framework(self, telemetry_factory: Factory) -> None:
        """Only quota refusals become failed tool results; any other tool exception still fails the run."""
        agent, _ = scripted("agent", call("explode", input=1, output=1))

        def explode() -> str:
            raise KeyError("not a quota")

        agent.tool_plain(explode)
        integration.instrument(telemetry_factory())
        with pytest.raises(KeyError, match="not a quota"):
            agent.run_sync("go")


class TestSpans:
    def test_spans_nest_like_executions(self) -> None:
        """Each run's span is a child of the span of the run that delegated to it."""
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tel = SubagentTelemetry(make_config(), registry=CollectorRegistry(), tracer_provider=provider)
        integration.instrument(tel)
        research_tree().coordinator.run_sync("go")
        spans = {s.attributes["gen_ai.agent.name"]: s for s in exporter.get_finished_spans()}  # type: ignore[index]
        names = {span.context.span_id: name for name, span in spans.items()}
        parents = {
            name: names.get(span.parent.span_id) if span.parent else None for name, span in spans.items()
        }
        assert parents == {
            "coordinator": None,
            "researcher": "coordinator",
            "writer": "coordinator",
            "fact_checker": "researcher",
        }
        tel.shutdown()
        provider.shutdown()


class TestInstrumentation:
    def test_capability_on_one_agent_records_its_runs(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Without instrument(), an agent given TelemetryCapability records its own runs only."""
        tel = telemetry_factory()
        watched = Agent(
            FunctionModel(Script([reply("a", 2, 2)])), name="watched", capabilities=[TelemetryCapability(tel)]
        )
        unwatched, _ = scripted("unwatched", reply("b", 3, 3))
        watched.run_sync("go")
        unwatched.run_sync("go")
        assert total(registry, "subagent_executions_total") == 1
        assert total(registry, "subagent_tokens_consumed_sum") == 4

    def test_one_capability_serves_concurrent_runs(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """One TelemetryCapability on several agents running at once records each run's own responses."""
        config = Config.model_validate(
            {"agent": {"subagent": {"max_concurrency": 10}}, "telemetry": {"agent_label": {"enabled": True}}}
        )
        shared = TelemetryCapability(telemetry_factory(config))

        async def slow_reply(tokens: int) -> Callable[..., Any]:
            async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
                await asyncio.sleep(0.01)  # The runs interleave.
                return reply("ok", tokens, tokens)

            return respond

        async def runs() -> None:
            agents = [
                Agent(FunctionModel(await slow_reply(n)), name=f"a{n}", capabilities=[shared])
                for n in (1, 2, 3)
            ]
            await asyncio.gather(*(agent.run("go") for agent in agents))

        asyncio.run(runs())
        assert total(registry, "subagent_executions_total", depth="1") == 3
        assert [total(registry, "subagent_tokens_consumed_sum", agent=f"a{n}") for n in (1, 2, 3)] == [
            2,
            4,
            6,
        ]
        assert_invariant(registry)

    def test_capability_per_run_records_that_run(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """TelemetryCapability passed to one run records that run under the given name."""
        agent, _ = scripted("agent", reply("a", 2, 2))
        agent.run_sync("go", capabilities=[TelemetryCapability(telemetry_factory(), name="one-off")])
        assert total(registry, "subagent_tokens_consumed_sum") == 4

    def test_instrument_does_not_double_an_explicit_capability(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """An agent that already carries the capability is recorded once under instrument()."""
        tel = telemetry_factory()
        agent = Agent(
            FunctionModel(Script([reply("a", 2, 2)])), name="a", capabilities=[TelemetryCapability(tel)]
        )
        integration.instrument(tel)
        agent.run_sync("go")
        assert total(registry, "subagent_executions_total") == 1
        assert total(registry, "subagent_tokens_consumed_sum") == 4

    def test_uninstrument_restores_agent_iter(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """After uninstrument() Agent.iter is pydantic-ai's own and runs record nothing."""
        before = Agent.__dict__["iter"]
        integration.instrument(telemetry_factory())
        assert Agent.__dict__["iter"] is not before
        integration.uninstrument()
        assert Agent.__dict__["iter"] is before
        assert research_tree().coordinator.run_sync("go").output == "report"
        assert total(registry, "subagent_executions_total") == 0

    def test_instrumented_run_returns_what_pydantic_ai_returns(self, telemetry_factory: Factory) -> None:
        """Instrumented or not, a run's output, messages and usage are the same."""
        plain = research_tree().coordinator.run_sync("go")
        integration.instrument(telemetry_factory())
        instrumented = research_tree().coordinator.run_sync("go")
        assert instrumented.output == plain.output
        assert len(instrumented.all_messages()) == len(plain.all_messages())
        assert instrumented.usage == plain.usage

    def test_second_instrument_warns_and_keeps_the_first(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """instrument() is idempotent: a second call warns and records nowhere else."""
        integration.instrument(telemetry_factory())
        other = SubagentTelemetry(make_config(), registry=CollectorRegistry())
        with pytest.warns(UserWarning, match="already instrumented"):
            integration.instrument(other)
        scripted("solo", reply("hi", 1, 1))[0].run_sync("go")
        assert total(registry, "subagent_executions_total") == 1
        assert total(other.registry, "subagent_executions_total") == 0

    def test_the_seams_exist_in_the_installed_framework(self) -> None:
        """The pydantic-ai surface the integration relies on exists (an upgrade that moves it fails here)."""
        for hook in ("for_run", "wrap_run", "after_model_request", "on_tool_execute_error", "apply"):
            assert hook in vars(AbstractCapability)
        assert "capabilities" in inspect.signature(Agent.iter).parameters
        assert issubclass(ToolFailed, Exception)
        assert "usage_limits" in RunContext.__dataclass_fields__
        with pytest.raises(UsageLimitExceeded, match="request_limit"):  # How a request limit is told apart.
            UsageLimits(request_limit=1).check_before_request(RunUsage(requests=1))

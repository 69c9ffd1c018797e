"""The OpenAI Agents SDK integration, against the real SDK with its own offline ``ScriptedModel``."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from agents import (
    Agent,
    MaxTurnsExceeded,
    RunContextWrapper,
    RunHooks,
    Runner,
    Usage,
    UserError,
    function_tool,
    set_tracing_disabled,
)
from agents.items import ModelResponse
from agents.lifecycle import RunHooksBase
from agents.model_settings import ModelSettings
from agents.result import RunResultStreaming
from agents.retry import ModelRetrySettings, RetryDecision
from agents.run_config import RunConfig
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from subagent_telemetry import Config, DepthLimitExceeded, SubagentTelemetry, TokenLimitExceeded
from subagent_telemetry.integrations import openai_agents
from tests.conftest import make_config
from tests.support.agent_metrics import assert_invariant, per_depth, total

Factory = Callable[..., SubagentTelemetry]
#: What ``Agent.as_tool`` tells the parent model when the nested run raised (the SDK's default).
TOOL_ERROR = "An error occurred while running the tool. Please try again."


@pytest.fixture(autouse=True)
def _offline_and_uninstrumented() -> Iterator[None]:
    set_tracing_disabled(True)  # The SDK's own trace export would need an API key.
    yield
    openai_agents.uninstrument()
    set_tracing_disabled(False)


#: A price for "priced-model" only (per million tokens), the bundled price data off.
PRICED = Config.model_validate(
    {
        "cost": {
            "bundled_prices": False,
            "prices": {"priced-model": {"input": 2, "output": 8, "cache_read": 0.5}},
        },
        "telemetry": {"log_executions": False},
    }
)


class NamedModel(ScriptedModel):
    """A scripted model with a name, as the SDK's OpenAI models have (``model.model``)."""

    model = "priced-model"


def usage(input: int, output: int) -> Usage:
    return Usage(requests=1, input_tokens=input, output_tokens=output, total_tokens=input + output)


def reply(text: str, input: int, output: int) -> ModelStep:
    return ModelStep(output=[assistant_message(text)], usage=usage(input, output))


def delegate(*tools: str, input: int, output: int) -> ModelStep:
    """One response calling each tool once (in parallel when several)."""
    calls = [function_call(tool, {"input": "go"}, call_id=f"call-{tool}") for tool in tools]
    return ModelStep(output=calls, usage=usage(input, output))


def agent(name: str, *steps: ModelStep, tools: tuple[Agent[Any], ...] = ()) -> Agent[Any]:
    return Agent(
        name=name,
        model=ScriptedModel(steps),
        tools=[sub.as_tool(sub.name, f"ask {sub.name}") for sub in tools],
    )


def tool_outputs(model: Any) -> dict[str, str]:
    """The tool results the model saw in its last call, by call id."""
    return {
        item["call_id"]: item["output"]
        for item in model.last_call.input
        if isinstance(item, dict) and item.get("type") == "function_call_output"
    }


@dataclass
class Tree:
    """coordinator (1) → researcher (2) → fact_checker (3); coordinator → writer (2), in parallel."""

    checker: Agent[Any]
    researcher: Agent[Any]
    writer: Agent[Any]
    coordinator: Agent[Any]


def research_tree() -> Tree:
    checker = agent("fact_checker", reply("checked", 5, 1))
    researcher = agent(
        "researcher", delegate("fact_checker", input=10, output=2), reply("found", 11, 3), tools=(checker,)
    )
    writer = agent("writer", reply("written", 7, 7))
    coordinator = agent(
        "coordinator",
        delegate("researcher", "writer", input=100, output=20),
        reply("report", 120, 30),
        tools=(researcher, writer),
    )
    return Tree(checker, researcher, writer, coordinator)


class TestDelegationTree:
    def test_depth_and_exact_tokens_per_depth(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Each run is one execution at its depth; token sums per depth equal the responses' usage exactly."""
        openai_agents.instrument(telemetry_factory())
        result = asyncio.run(Runner.run(research_tree().coordinator, "write a report"))
        assert result.final_output == "report"
        assert per_depth(registry, "subagent_executions_total", 3) == [1, 2, 1]
        assert per_depth(registry, "subagent_tokens_consumed_sum", 3) == [270, 40, 6]
        assert per_depth(registry, "subagent_turns_used_sum", 3) == [2, 3, 1]
        assert per_depth(registry, "subagent_completions_total", 3, status="complete") == [1, 2, 1]
        assert_invariant(registry)

    def test_parallel_trees_keep_their_own_depths(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Two coordinators run at once (asyncio.gather): each subtree nests under its own coordinator."""
        openai_agents.instrument(telemetry_factory(make_config(max_concurrency=20)))

        async def both() -> list[Any]:
            return list(
                await asyncio.gather(
                    Runner.run(research_tree().coordinator, "a"), Runner.run(research_tree().coordinator, "b")
                )
            )

        assert [r.final_output for r in asyncio.run(both())] == ["report", "report"]
        assert per_depth(registry, "subagent_executions_total", 3) == [2, 4, 2]
        assert per_depth(registry, "subagent_tokens_consumed_sum", 3) == [540, 80, 12]
        assert_invariant(registry)

    def test_a_tool_that_delegates_nests_its_run(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A plain function tool calling Runner.run is a subagent one level deeper too."""
        helper = agent("helper", reply("helped", 3, 4))

        @function_tool
        async def ask_helper(question: str) -> str:
            return str((await Runner.run(helper, question)).final_output)

        main = Agent(
            name="main",
            model=ScriptedModel(
                [
                    ModelStep(
                        output=[function_call("ask_helper", {"question": "?"}, call_id="c")],
                        usage=usage(1, 1),
                    ),
                    reply("done", 2, 2),
                ]
            ),
            tools=[ask_helper],
        )
        openai_agents.instrument(telemetry_factory())
        asyncio.run(Runner.run(main, "go"))
        assert per_depth(registry, "subagent_tokens_consumed_sum", 2) == [6, 7]

    def test_run_sync_is_an_execution(self, telemetry_factory: Factory, registry: CollectorRegistry) -> None:
        """Runner.run_sync records like Runner.run, nested runs included."""
        openai_agents.instrument(telemetry_factory())
        assert Runner.run_sync(research_tree().coordinator, "go").final_output == "report"
        assert per_depth(registry, "subagent_tokens_consumed_sum", 3) == [270, 40, 6]
        assert_invariant(registry)

    def test_run_streamed_is_an_execution(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Runner.run_streamed records each streamed response once, and ends when its loop ends."""
        openai_agents.instrument(telemetry_factory())

        async def stream() -> RunResultStreaming:
            result = Runner.run_streamed(research_tree().coordinator, "go")
            async for _ in result.stream_events():
                pass
            await asyncio.sleep(0)  # The loop task's done callback runs on the next iteration.
            return result

        assert asyncio.run(stream()).final_output == "report"
        assert per_depth(registry, "subagent_tokens_consumed_sum", 3) == [270, 40, 6]
        assert_invariant(registry)

    def test_streamed_nested_runs_nest_too(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """as_tool(on_stream=...) runs its subagent with run_streamed inside the tool: one level deeper."""
        child = agent("child", reply("streamed", 4, 5))
        parent = Agent(
            name="parent",
            model=ScriptedModel([delegate("child", input=1, output=1), reply("done", 2, 2)]),
            tools=[child.as_tool("child", "ask child", on_stream=lambda event: None)],
        )
        openai_agents.instrument(telemetry_factory())
        assert asyncio.run(Runner.run(parent, "go")).final_output == "done"
        assert per_depth(registry, "subagent_tokens_consumed_sum", 2) == [6, 9]
        assert_invariant(registry)

    def test_a_retried_model_call_counts_only_the_response(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A model call the SDK retries after an error is one turn with the successful response's tokens."""
        flaky = Agent(
            name="flaky",
            model=ScriptedModel([ModelStep.raise_error(ConnectionError("blip")), reply("ok", 3, 4)]),
            model_settings=ModelSettings(
                retry=ModelRetrySettings(
                    max_retries=1, policy=lambda context: RetryDecision(retry=True, delay=0)
                )
            ),
        )
        openai_agents.instrument(telemetry_factory())
        assert asyncio.run(Runner.run(flaky, "go")).final_output == "ok"
        assert per_depth(registry, "subagent_turns_used_sum", 1) == [1]
        assert per_depth(registry, "subagent_tokens_consumed_sum", 1) == [7]
        assert total(registry, "subagent_completions_total", status="complete") == 1

    def test_cached_and_reasoning_tokens_are_priced_apart(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A response's cached input is priced at the cache rate, with the run config's model name."""
        usage = Usage(
            requests=1,
            input_tokens=1_000_000,
            output_tokens=100_000,
            total_tokens=1_100_000,
            input_tokens_details=InputTokensDetails(cached_tokens=400_000, cache_write_tokens=0),
            output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
        )
        served = NamedModel([ModelStep(output=[assistant_message("ok")], usage=usage)])
        unnamed = agent("priced")  # The run config's model serves the run (and names it).
        openai_agents.instrument(telemetry_factory(PRICED))
        asyncio.run(Runner.run(unnamed, "go", run_config=RunConfig(model=served)))
        # 600k input at 2/M + 400k cached at 0.5/M + 100k output at 8/M.
        assert total(registry, "subagent_cost_total", depth="1") == pytest.approx(2.2)
        assert total(registry, "subagent_unpriced_tokens_total") == 0

    def test_callers_hooks_still_run(self, telemetry_factory: Factory) -> None:
        """The caller's RunHooks see every callback while the integration records."""
        seen: list[str] = []

        class Hooks(RunHooks[Any]):
            async def on_agent_start(self, context: Any, agent: Any) -> None:
                seen.append(f"start {agent.name}")

            async def on_llm_end(
                self, context: RunContextWrapper[Any], agent: Any, response: ModelResponse
            ) -> None:
                seen.append(f"llm {response.usage.total_tokens}")

        openai_agents.instrument(telemetry_factory())
        asyncio.run(Runner.run(agent("solo", reply("hi", 2, 3)), "go", hooks=Hooks()))
        assert seen == ["start solo", "llm 5"]


class TestOutcomes:
    def test_sdk_turn_limit_is_incomplete(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """MaxTurnsExceeded ends the execution as incomplete, and still reaches the caller."""
        looping = agent(
            "looping",
            *[delegate("echo", input=1, output=1) for _ in range(3)],
            tools=(agent("echo", reply("e", 1, 1)),),
        )
        openai_agents.instrument(telemetry_factory())
        with pytest.raises(MaxTurnsExceeded):
            asyncio.run(Runner.run(looping, "go", max_turns=1))
        assert total(registry, "subagent_completions_total", depth="1", status="incomplete") == 1
        assert_invariant(registry)

    def test_streamed_turn_limit_is_incomplete(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A streamed run stopped by max_turns is incomplete although its loop task ends without error."""
        looping = agent(
            "looping",
            *[delegate("echo", input=1, output=1) for _ in range(3)],
            tools=(agent("echo", reply("e", 1, 1)),),
        )
        openai_agents.instrument(telemetry_factory())

        async def stream() -> None:
            result = Runner.run_streamed(looping, "go", max_turns=1)
            with pytest.raises(MaxTurnsExceeded):
                async for _ in result.stream_events():
                    pass
            await asyncio.sleep(0)

        asyncio.run(stream())
        assert total(registry, "subagent_completions_total", depth="1", status="incomplete") == 1
        assert_invariant(registry)

    def test_turn_limit_handler_output_is_still_incomplete(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A max_turns error handler may supply the output; the run still stopped at its limit."""
        looping = agent(
            "looping",
            *[delegate("echo", input=1, output=1) for _ in range(3)],
            tools=(agent("echo", reply("e", 1, 1)),),
        )
        openai_agents.instrument(telemetry_factory())
        result = asyncio.run(
            Runner.run(looping, "go", max_turns=1, error_handlers={"max_turns": lambda data: "gave up"})
        )
        assert result.final_output == "gave up"
        assert total(registry, "subagent_completions_total", depth="1", status="incomplete") == 1

    def test_model_error_is_failed(self, telemetry_factory: Factory, registry: CollectorRegistry) -> None:
        """A model call that raises fails the execution with execution_failed and reaches the caller."""
        openai_agents.instrument(telemetry_factory())
        broken = agent("broken", ModelStep.raise_error(RuntimeError("model down")))
        with pytest.raises(RuntimeError, match="model down"):
            asyncio.run(Runner.run(broken, "go"))
        assert total(registry, "subagent_errors_total", depth="1", error_type="execution_failed") == 1
        assert_invariant(registry)

    def test_nested_model_error_fails_only_the_subagent(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A subagent whose model raises is failed at depth 2; its parent sees a tool error and completes."""
        broken = agent("broken", ModelStep.raise_error(RuntimeError("model down")))
        parent = agent("parent", delegate("broken", input=1, output=1), reply("coped", 1, 1), tools=(broken,))
        openai_agents.instrument(telemetry_factory())
        assert asyncio.run(Runner.run(parent, "go")).final_output == "coped"
        assert tool_outputs(parent.model) == {"call-broken": TOOL_ERROR}
        assert total(registry, "subagent_errors_total", depth="2", error_type="execution_failed") == 1
        assert total(registry, "subagent_completions_total", depth="1", status="complete") == 1
        assert_invariant(registry)

    def test_cancelled_run_is_recorded_once_and_frees_its_slot(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Cancelling a run mid-call records it as cancelled; no slot stays held."""
        started = asyncio.Event()

        async def hang(call: Any) -> Any:
            started.set()
            await asyncio.sleep(3600)

        tel = telemetry_factory(make_config(max_concurrency=1))
        openai_agents.instrument(tel)

        async def cancel_then_run_again() -> None:
            task = asyncio.create_task(Runner.run(agent("slow", ModelStep.respond(hang)), "go"))
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await Runner.run(agent("next", reply("ok", 1, 1)), "go")  # The only slot is free again.

        asyncio.run(cancel_then_run_again())
        assert total(registry, "subagent_errors_total", depth="1", error_type="cancelled") == 1
        assert_invariant(registry)


class TestRefusals:
    def test_depth_refusal_is_a_tool_error_for_the_parent(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Past max_depth a subagent is refused before its model call, counted once; its parent carries on."""
        openai_agents.instrument(telemetry_factory(make_config(max_depth=2)))
        tree = research_tree()
        assert asyncio.run(Runner.run(tree.coordinator, "go")).final_output == "report"
        assert tree.checker.model.calls == ()  # type: ignore[union-attr]
        assert tool_outputs(tree.researcher.model) == {"call-fact_checker": TOOL_ERROR}
        assert total(registry, "subagent_errors_total", depth="3", error_type="max_depth_reached") == 1
        assert total(registry, "subagent_quota_rejections_total", resource="depth") == 1
        assert per_depth(registry, "subagent_completions_total", 2, status="complete") == [1, 2]
        assert_invariant(registry)

    @pytest.mark.parametrize(
        ("limits", "resource"),
        [({"max_concurrency": 1}, "concurrency"), ({"max_executions": 1}, "executions")],
        ids=["concurrency", "executions"],
    )
    def test_slot_and_execution_refusals_are_tool_errors_too(
        self, telemetry_factory: Factory, registry: CollectorRegistry, limits: dict[str, int], resource: str
    ) -> None:
        """A subagent refused for want of a concurrency slot or an execution is a tool error, counted once."""
        child = agent("child", reply("never", 1, 1))
        parent = agent("parent", delegate("child", input=1, output=1), reply("done", 1, 1), tools=(child,))
        openai_agents.instrument(telemetry_factory(make_config(**limits)))
        assert asyncio.run(Runner.run(parent, "go")).final_output == "done"
        assert child.model.calls == ()  # type: ignore[union-attr]
        assert tool_outputs(parent.model) == {"call-child": TOOL_ERROR}
        assert total(registry, "subagent_quota_rejections_total", resource=resource) == 1
        assert total(registry, "subagent_errors_total", depth="2", error_type="quota_exceeded") == 1
        assert_invariant(registry)

    def test_spent_token_budget_refuses_the_next_subagent(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A spent budget refuses the next subagent before its model call (a tool error for its parent);
        the next response of each ancestor then passes the budget and stops it."""
        checker = agent("fact_checker", reply("checked", 5, 1))
        researcher = agent(
            "researcher",
            delegate("fact_checker", input=10, output=10),
            reply("found", 5, 5),
            tools=(checker,),
        )
        coordinator = agent(
            "coordinator",
            delegate("researcher", input=60, output=20),
            reply("report", 1, 1),
            tools=(researcher,),
        )
        openai_agents.instrument(telemetry_factory(make_config(max_total_tokens=100)))
        with pytest.raises(TokenLimitExceeded):
            asyncio.run(Runner.run(coordinator, "go"))
        assert checker.model.calls == ()
        assert tool_outputs(researcher.model) == {"call-fact_checker": TOOL_ERROR}
        assert total(registry, "subagent_errors_total", depth="3", error_type="quota_exceeded") == 1
        assert total(registry, "subagent_executions_total", depth="3") == 1
        assert per_depth(registry, "subagent_errors_total", 2, error_type="quota_exceeded") == [1, 1]
        assert per_depth(registry, "subagent_tokens_consumed_sum", 3) == [82, 30, 0]
        assert_invariant(registry)

    def test_a_failure_function_lets_the_parent_model_read_the_refusal(
        self, telemetry_factory: Factory
    ) -> None:
        """as_tool(failure_error_function=...) shows the parent model why its subagent was refused."""
        child = agent("child", reply("never", 1, 1))
        parent = Agent(
            name="parent",
            model=ScriptedModel([delegate("child", input=1, output=1), reply("done", 1, 1)]),
            tools=[child.as_tool("child", "ask child", failure_error_function=lambda ctx, error: str(error))],
        )
        openai_agents.instrument(telemetry_factory(make_config(max_depth=1)))
        assert asyncio.run(Runner.run(parent, "go")).final_output == "done"
        assert tool_outputs(parent.model)["call-child"].startswith("Depth limit exceeded")

    def test_without_a_failure_function_the_refusal_fails_the_parent_as_that_quota_error(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """With failure_error_function=None the SDK's UserError fails the parent, classified by its cause."""
        child = agent("child", reply("never", 1, 1))
        parent = Agent(
            name="parent",
            model=ScriptedModel([delegate("child", input=1, output=1)]),
            tools=[child.as_tool("child", "ask child", failure_error_function=None)],
        )
        openai_agents.instrument(telemetry_factory(make_config(max_depth=1)))
        with pytest.raises(UserError) as raised:
            asyncio.run(Runner.run(parent, "go"))
        assert isinstance(raised.value.__cause__, DepthLimitExceeded)
        assert per_depth(registry, "subagent_errors_total", 2, error_type="max_depth_reached") == [1, 1]
        assert total(registry, "subagent_quota_rejections_total", resource="depth") == 1
        assert_invariant(registry)


class TestSpans:
    def test_spans_nest_like_executions(self) -> None:
        """Each run's span is a child of the span of the run that delegated to it."""
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tel = SubagentTelemetry(make_config(), registry=CollectorRegistry(), tracer_provider=provider)
        openai_agents.instrument(tel)
        asyncio.run(Runner.run(research_tree().coordinator, "go"))
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
        assert len({s.context.trace_id for s in spans.values()}) == 1
        tel.shutdown()
        provider.shutdown()


class TestInstrumentation:
    def test_uninstrument_restores_the_runner(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """After uninstrument() the Runner entry points are the SDK's own and runs record nothing."""
        before = {name: Runner.__dict__[name] for name in ("run", "run_sync", "run_streamed")}
        openai_agents.instrument(telemetry_factory())
        assert Runner.__dict__["run"] is not before["run"]
        openai_agents.uninstrument()
        assert {name: Runner.__dict__[name] for name in before} == before
        result = asyncio.run(Runner.run(research_tree().coordinator, "go"))
        assert result.final_output == "report"
        assert total(registry, "subagent_executions_total") == 0

    def test_instrumented_run_returns_what_the_sdk_returns(self, telemetry_factory: Factory) -> None:
        """Instrumented or not, a run's output, items and usage are the same."""
        plain = asyncio.run(Runner.run(research_tree().coordinator, "go"))
        openai_agents.instrument(telemetry_factory())
        instrumented = asyncio.run(Runner.run(research_tree().coordinator, "go"))
        assert instrumented.final_output == plain.final_output
        assert len(instrumented.new_items) == len(plain.new_items)
        assert instrumented.context_wrapper.usage.total_tokens == plain.context_wrapper.usage.total_tokens

    def test_a_call_that_is_not_a_run_raises_the_sdks_own_error(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Runner.run on something that is not an Agent fails as the SDK makes it fail, unrecorded."""
        openai_agents.instrument(telemetry_factory())
        with pytest.raises(AttributeError, match="tools"):
            asyncio.run(Runner.run("not an agent", "go"))  # type: ignore[arg-type]
        assert total(registry, "subagent_executions_total") == 0

    def test_second_instrument_warns_and_keeps_the_first(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """instrument() is idempotent: a second call warns and records nowhere else."""
        openai_agents.instrument(telemetry_factory())
        other = SubagentTelemetry(make_config(), registry=CollectorRegistry())
        with pytest.warns(UserWarning, match="already instrumented"):
            openai_agents.instrument(other)
        asyncio.run(Runner.run(agent("solo", reply("hi", 1, 1)), "go"))
        assert total(registry, "subagent_executions_total") == 1
        assert total(other.registry, "subagent_executions_total") == 0

    def test_the_seams_exist_in_the_installed_sdk(self) -> None:
        """The public SDK surface the integration relies on is there (an upgrade that moves it fails here)."""
        for name in ("run", "run_sync", "run_streamed"):
            assert isinstance(Runner.__dict__[name], classmethod)
            params = inspect.signature(getattr(Runner, name)).parameters
            assert {"starting_agent", "hooks", "error_handlers"} <= set(params)
        assert "on_llm_end" in vars(RunHooksBase)
        fields = RunResultStreaming.__dataclass_fields__
        assert {"run_loop_task", "current_turn", "max_turns", "interruptions"} <= set(fields)

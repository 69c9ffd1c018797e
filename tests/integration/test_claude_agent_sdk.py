"""Claude Agent SDK integration against the real bundled ``claude`` CLI and a fake Messages API.

The CLI shipped in the ``claude-agent-sdk`` wheel runs as in production; only the model is fake
(tests/support/fake_anthropic.py on a loopback port, no key, no network). The tree: the coordinator
launches researchers ``a`` and ``b`` in one message (parallel ``Agent`` calls, which the CLI runs in
the background), and ``a`` launches ``c``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient, ResultError, ResultMessage
from prometheus_client import CollectorRegistry

from subagent_telemetry import SubagentTelemetry, TokenLimitExceeded
from subagent_telemetry.integrations import claude_agent_sdk as claude_integration
from tests.conftest import make_config
from tests.support.depth_metrics import at_depth, errors, invariant_holds, rejections
from tests.support.fake_anthropic import FakeAnthropic, Reply, ToolCall, delegate

pytestmark = pytest.mark.integration

Factory = Callable[..., SubagentTelemetry]

TREE = {
    "coordinator": [
        Reply(
            "Delegating.",
            tools=[delegate("a", "read the docs"), delegate("b", "read the code")],
            input_tokens=100,
            output_tokens=20,
        ),
        Reply("Summary.", input_tokens=200, output_tokens=30),
    ],
    "a": [
        Reply("Going deeper.", tools=[delegate("c", "check one detail")], input_tokens=40, output_tokens=4),
        Reply("Report from a.", input_tokens=50, output_tokens=5),
    ],
    "b": [Reply("Report from b.", input_tokens=60, output_tokens=6)],
    "c": [Reply("Report from c.", input_tokens=70, output_tokens=7)],
}
CHAIN = {  # coordinator -> a -> c, each waiting for its subagent's report
    "coordinator": [
        Reply(
            "Delegating.",
            tools=[delegate("a", "read the docs", background=False)],
            input_tokens=100,
            output_tokens=20,
        ),
        Reply("Summary.", input_tokens=200, output_tokens=30),
    ],
    "a": TREE["a"],
    "c": TREE["c"],
}


@pytest.fixture
def api() -> Iterator[Callable[[Mapping[str, Sequence[Reply]]], FakeAnthropic]]:
    started: list[FakeAnthropic] = []

    def start(script: Mapping[str, Sequence[Reply]]) -> FakeAnthropic:
        fake = FakeAnthropic(script).start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


def options(fake: FakeAnthropic, home: Path, **overrides: Any) -> ClaudeAgentOptions:
    """The CLI pointed at ``fake`` with an isolated home; the session's final usage streamed."""
    settings: dict[str, Any] = {"include_partial_messages": True, "max_turns": 8}
    settings.update(overrides)
    return ClaudeAgentOptions(env=fake.env(str(home)), cwd=str(home), **settings)


async def drain(
    tel: SubagentTelemetry,
    fake: FakeAnthropic,
    home: Path,
    prompt: str = "[agent:coordinator] research",
    **overrides: Any,
) -> list[Any]:
    return [
        m
        async for m in claude_integration.query(tel, prompt=prompt, options=options(fake, home, **overrides))
    ]


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 120))


class TestTree:
    def test_each_agent_is_one_execution_at_its_depth(
        self, api: Any, tmp_path: Path, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """The session is depth 1, the two subagents it launches depth 2, the one they launch depth 3."""
        fake = api(TREE)
        run(drain(telemetry_factory(), fake, tmp_path))
        assert [at_depth(registry, d).executions for d in (1, 2, 3, 4)] == [1, 2, 1, 0]
        assert [at_depth(registry, d).completions for d in (1, 2, 3)] == [1, 2, 1]
        assert [at_depth(registry, d).active for d in (1, 2, 3)] == [0, 0, 0]

    def test_tokens_per_depth_are_what_the_cli_reports(
        self, api: Any, tmp_path: Path, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Session: every response's full usage. Subagents: input plus the first output count the CLI
        forwards per message. Their subagents: the task's reported total."""
        fake = api(TREE)
        run(drain(telemetry_factory(), fake, tmp_path))
        assert at_depth(registry, 1).tokens == fake.tokens("coordinator")
        assert at_depth(registry, 2).tokens == fake.input_tokens("a", "b") + fake.responses("a", "b")
        assert at_depth(registry, 3).tokens == fake.tokens("c")

    def test_one_turn_per_assistant_message(
        self, api: Any, tmp_path: Path, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A message split into several content blocks is one turn; the CLI reports none below depth 2."""
        fake = api(TREE)
        run(drain(telemetry_factory(), fake, tmp_path))
        assert at_depth(registry, 1).turns == fake.responses("coordinator")
        assert at_depth(registry, 2).turns == fake.responses("a", "b") == 3
        assert at_depth(registry, 3).turns == 0

    def test_spans_nest_like_the_executions(
        self, api: Any, tmp_path: Path, telemetry_factory: Factory
    ) -> None:
        """Each subagent's span is a child of its caller's span, in one trace."""
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        run(drain(telemetry_factory(tracer_provider=provider), api(TREE), tmp_path))
        spans = {span.context.span_id: span for span in exporter.get_finished_spans()}

        def depth(span: Any) -> int:
            return 1 if span.parent is None else 1 + depth(spans[span.parent.span_id])

        assert sorted(depth(span) for span in spans.values()) == [1, 2, 2, 3]
        assert len({span.context.trace_id for span in spans.values()}) == 1


class TestOutcomes:
    def test_max_turns_result_is_incomplete(
        self, api: Any, tmp_path: Path, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A session stopped by the SDK's ``max_turns`` (result ``error_max_turns``) is incomplete."""
        script = {
            "coordinator": [Reply("Looking.", tools=[ToolCall("Read", {"file_path": str(tmp_path / "x")})])]
        }
        with pytest.raises(ResultError) as raised:
            run(drain(telemetry_factory(), api(script), tmp_path, max_turns=1))
        assert raised.value.subtype == "error_max_turns"
        assert at_depth(registry, 1).incomplete == 1
        assert at_depth(registry, 1).errors == 0

    def test_model_error_fails_the_session(
        self, api: Any, tmp_path: Path, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A model request that fails ends the session with an error result: failed."""
        with pytest.raises(ResultError):
            run(drain(telemetry_factory(), api({"coordinator": [Reply(error_status=500)]}), tmp_path))
        assert errors(registry, 1, "execution_failed") == 1
        assert at_depth(registry, 1).turns == 0

    def test_model_error_fails_only_that_subagent(
        self, api: Any, tmp_path: Path, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A subagent whose model fails is failed; its sibling and the session complete."""
        script = {**TREE, "b": [Reply(error_status=500)]}
        run(drain(telemetry_factory(), api(script), tmp_path))
        assert errors(registry, 2, "execution_failed") == 1
        assert at_depth(registry, 2).completions == 1
        assert at_depth(registry, 1).completions == 1
        assert invariant_holds(registry)


class TestRefusals:
    def test_depth_refusal_is_a_denied_tool_call(
        self, api: Any, tmp_path: Path, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Past ``max_depth`` the Agent call is denied: the subagent never calls the model, counted once."""
        fake = api(TREE)
        run(drain(telemetry_factory(make_config(max_depth=2)), fake, tmp_path))
        assert "c" not in fake.served
        assert at_depth(registry, 3).executions == 1
        assert errors(registry, 3, "max_depth_reached") == 1
        assert [at_depth(registry, d).completions for d in (1, 2)] == [1, 2]
        assert invariant_holds(registry)

    def test_denial_reason_reaches_the_calling_model(
        self, api: Any, tmp_path: Path, telemetry_factory: Factory
    ) -> None:
        """The model that made the refused call reads the refusal in its tool result."""
        fake = api(TREE)
        run(drain(telemetry_factory(make_config(max_depth=2)), fake, tmp_path))
        assert any("refused by its quota" in str(request["messages"]) for request in fake.requests)

    def test_concurrency_refusal_denies_one_of_two_parallel_calls(
        self, api: Any, tmp_path: Path, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """With two slots (the session holds one), one of the two parallel Agent calls is denied."""
        fake = api(TREE)
        run(drain(telemetry_factory(make_config(max_concurrency=2)), fake, tmp_path))
        assert len({"a", "b"} & set(fake.served)) == 1
        assert errors(registry, 2, "quota_exceeded") == 1
        assert at_depth(registry, 2).completions == 1
        assert invariant_holds(registry)
        assert [at_depth(registry, d).active for d in (1, 2, 3)] == [0, 0, 0]

    def test_token_budget_refusal_mid_tree(
        self, api: Any, tmp_path: Path, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Once the session's tokens are spent the next subagent is denied before it calls the model."""
        fake = api(CHAIN)
        spent_before_c = (
            CHAIN["coordinator"][0].tokens + CHAIN["a"][0].input_tokens + 1
        )  # As the CLI reports a.
        tel = telemetry_factory(make_config(max_total_tokens=spent_before_c))
        with pytest.raises(TokenLimitExceeded):
            run(drain(tel, fake, tmp_path))
        assert "c" not in fake.served
        assert at_depth(registry, 3).executions == errors(registry, 3, "quota_exceeded") == 1
        # The session's next response passes the spent budget: it stops there, once.
        assert errors(registry, 1, "quota_exceeded") == 1
        assert rejections(registry, "tokens") == 2
        assert invariant_holds(registry)
        assert [at_depth(registry, d).active for d in (1, 2, 3)] == [0, 0, 0]


class TestInstrument:
    def test_instrumented_query_records_the_tree(
        self, api: Any, tmp_path: Path, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """After ``instrument(tel)``, ``claude_agent_sdk.query`` records sessions and subagents."""
        import claude_agent_sdk

        fake = api(TREE)
        claude_integration.instrument(telemetry_factory())
        try:

            async def go() -> None:
                async for _ in claude_agent_sdk.query(
                    prompt="[agent:coordinator] go", options=options(fake, tmp_path)
                ):
                    pass

            run(go())
        finally:
            claude_integration.uninstrument()
        assert [at_depth(registry, d).executions for d in (1, 2, 3)] == [1, 2, 1]

    def test_instrumented_client_session_is_one_execution(
        self, api: Any, tmp_path: Path, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A ``ClaudeSDKClient`` connection is one session execution; its subagents nest under it."""
        fake = api(CHAIN)
        claude_integration.instrument(telemetry_factory())
        try:

            async def go() -> None:
                async with ClaudeSDKClient(options(fake, tmp_path)) as client:
                    await client.query("[agent:coordinator] go")
                    async for _ in client.receive_response():
                        pass

            run(go())
        finally:
            claude_integration.uninstrument()
        assert [at_depth(registry, d).executions for d in (1, 2, 3)] == [1, 1, 1]
        assert at_depth(registry, 1).completions == 1
        assert [at_depth(registry, d).active for d in (1, 2, 3)] == [0, 0, 0]

    def test_uninstrumented_query_records_nothing(
        self, api: Any, tmp_path: Path, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """After ``uninstrument()`` query() runs as before and records nothing."""
        import claude_agent_sdk

        fake = api(CHAIN)
        claude_integration.instrument(telemetry_factory())
        claude_integration.uninstrument()

        async def go() -> list[Any]:
            return [
                m
                async for m in claude_agent_sdk.query(
                    prompt="[agent:coordinator] go", options=options(fake, tmp_path)
                )
            ]

        messages = run(go())
        assert isinstance(messages[-1], ResultMessage)
        assert at_depth(registry, 1).executions == 0


def test_example_runs_offline_and_prints_each_depth() -> None:
    """The Claude example runs the CLI on its own fake API out of the box and prints depths 1 to 3."""
    import subprocess
    import sys

    from tests.support.servers import REPO_ROOT

    example = REPO_ROOT / "examples" / "claude_agent_sdk_research.py"
    out = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, check=True, timeout=120
    )
    assert "final output: the report" in out.stdout
    assert 'subagent_executions_total{depth="2"} 2.0' in out.stdout
    assert 'subagent_executions_total{depth="3"} 1.0' in out.stdout

"""Claude Agent SDK integration, fast: the real SDK over a scripted ``Transport`` (no CLI process).

The scripted transport plays the CLI's side of the protocol (tests/support/scripted_claude.py), hook
calls included; tests/integration/test_claude_agent_sdk.py runs the same paths with the real CLI.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from decimal import Decimal
from importlib import metadata
from typing import Any

import claude_agent_sdk
import pytest
from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient, HookMatcher
from claude_agent_sdk import query as sdk_query
from prometheus_client import CollectorRegistry

from subagent_telemetry import DepthLimitExceeded, SubagentTelemetry, TokenLimitExceeded
from subagent_telemetry.integrations import claude_agent_sdk as claude_integration
from tests.conftest import make_config
from tests.support.depth_metrics import at_depth, errors, invariant_holds
from tests.support.scripted_claude import (
    Hook,
    ScriptedTransport,
    agent_call,
    assistant,
    pre_agent,
    result,
    stream_event,
    task_notification,
    task_started,
    task_updated,
    text,
    tool_result,
)

Factory = Callable[..., SubagentTelemetry]
Step = dict[str, Any] | Hook


def play(
    tel: SubagentTelemetry, script: Sequence[Step], options: ClaudeAgentOptions | None = None
) -> ScriptedTransport:
    """Run one recorded ``query()`` over ``script`` to the end; the transport keeps the hook answers."""
    transport = ScriptedTransport(script)

    async def consume() -> None:
        async for _ in claude_integration.query(tel, prompt="go", options=options, transport=transport):
            pass

    asyncio.run(asyncio.wait_for(consume(), 30))
    return transport


def launch(
    tool_use_id: str, task_id: str, *, agent_id: str | None = None, parent: str | None = None
) -> list[Step]:
    """The steps of one Agent call: the calling message, its PreToolUse hook, the CLI's task_started."""
    return [
        assistant(f"m-{tool_use_id}", agent_call(tool_use_id), parent=parent),
        pre_agent(tool_use_id, agent_id),
        task_started(task_id, tool_use_id),
    ]


def denied(answer: dict[str, Any]) -> bool:
    return bool(answer.get("hookSpecificOutput", {}).get("permissionDecision") == "deny")


class TestTurnsAndTokens:
    def test_one_message_in_several_blocks_is_one_turn(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """The CLI sends a message once per content block; its id makes it one turn, charged once."""
        script = [
            assistant("m1", text("a"), input_tokens=100, output_tokens=3),
            assistant("m1", text("b"), input_tokens=100, output_tokens=3),
            result(),
        ]
        play(telemetry_factory(), script)
        assert at_depth(registry, 1).turns == 1
        assert at_depth(registry, 1).tokens == 103

    def test_message_delta_brings_the_final_output_count(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """With partial messages, the output counted is the final one from ``message_delta``."""
        start = {"id": "m1", "model": "claude-test", "usage": {"input_tokens": 100, "output_tokens": 1}}
        script = [
            stream_event({"type": "message_start", "message": start}),
            assistant("m1", input_tokens=100, output_tokens=1),
            stream_event({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 20}}),
            stream_event({"type": "message_stop"}),
            result(),
        ]
        play(telemetry_factory(), script, ClaudeAgentOptions(include_partial_messages=True))
        assert at_depth(registry, 1).turns == 1
        assert at_depth(registry, 1).tokens == 120

    def test_cache_reads_and_writes_count_as_input(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Input tokens are fresh input plus prompt-cache writes and reads."""
        message = assistant("m1", input_tokens=10, output_tokens=5)
        message["message"]["usage"].update(cache_creation_input_tokens=100, cache_read_input_tokens=1000)
        play(telemetry_factory(), [message, result()])
        assert at_depth(registry, 1).tokens == 1115

    def test_cache_reads_and_writes_are_priced_at_their_own_rates(self, telemetry_factory: Factory) -> None:
        """The money budget is charged calc_price()'s figure: cache parts at cache prices, not as input."""
        import genai_prices

        tel = telemetry_factory()
        message = assistant("m1", input_tokens=10, output_tokens=5, model="claude-sonnet-4-5")
        message["message"]["usage"].update(cache_creation_input_tokens=100, cache_read_input_tokens=1000)
        play(tel, [message, result()])
        usage = genai_prices.Usage(
            input_tokens=1110, cache_write_tokens=100, cache_read_tokens=1000, output_tokens=5
        )
        price = genai_prices.calc_price(usage, "claude-sonnet-4-5", provider_id="anthropic").total_price
        assert Decimal(tel.tracker.get_usage().cost_nanos).scaleb(-9) == price

    def test_subagent_messages_count_for_the_subagent(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Messages whose ``parent_tool_use_id`` is an Agent call are that subagent's turns and tokens."""
        script = [
            *launch("toolu_a", "task-a"),
            assistant("m2", input_tokens=40, output_tokens=4, parent="toolu_a"),
            task_notification("task-a", "toolu_a", total_tokens=999),
            result(),
        ]
        play(telemetry_factory(), script)
        assert at_depth(registry, 2).executions == at_depth(registry, 2).completions == 1
        assert (at_depth(registry, 2).turns, at_depth(registry, 2).tokens) == (1, 44)

    def test_legacy_task_tool_launches_a_subagent(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """The ``Task`` tool of older CLIs is recorded like ``Agent``."""
        script = [
            assistant("m1", agent_call("toolu_a", tool="Task")),
            pre_agent("toolu_a", tool="Task"),
            task_started("task-a", "toolu_a"),
            assistant("m2", input_tokens=40, output_tokens=4, parent="toolu_a"),
            task_notification("task-a", "toolu_a"),
            result(),
        ]
        play(telemetry_factory(), script)
        assert (at_depth(registry, 2).completions, at_depth(registry, 2).tokens) == (1, 44)

    def test_unforwarded_subagent_takes_its_task_total(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A subagent whose messages the CLI never forwards is charged its task's ``total_tokens``."""
        script = [
            *launch("toolu_a", "task-a"),
            *launch("toolu_c", "task-c", agent_id="task-a", parent="toolu_a"),
            task_updated("task-c", "completed"),
            task_notification("task-c", "toolu_c", total_tokens=77),
            task_notification("task-a", "toolu_a"),
            result(),
        ]
        play(telemetry_factory(), script)
        assert at_depth(registry, 3).executions == at_depth(registry, 3).completions == 1
        assert (at_depth(registry, 3).turns, at_depth(registry, 3).tokens) == (0, 77)


class TestNesting:
    def test_nested_call_waits_for_the_task_naming_its_caller(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A hook that runs before the stream has named its calling subagent waits for it: depth 3."""
        script = [
            *launch("toolu_a", "task-a"),
            pre_agent("toolu_c", "task-b", wait=False),  # task-b is named only afterwards.
            *launch("toolu_b", "task-b"),
            assistant("m-c", agent_call("toolu_c"), parent="toolu_b"),
            task_started("task-c", "toolu_c"),
            task_notification("task-c", "toolu_c"),
            task_notification("task-b", "toolu_b"),
            task_notification("task-a", "toolu_a"),
            result(),
        ]
        play(telemetry_factory(), script)
        assert [at_depth(registry, d).executions for d in (1, 2, 3)] == [1, 2, 1]

    def test_parallel_hooks_each_admit_their_subagent(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Agent calls whose hooks run concurrently are each one execution, none left running."""
        calls = [f"toolu_{n}" for n in range(4)]
        script: list[Step] = [assistant("m1", *(agent_call(call) for call in calls))]
        script += [pre_agent(call, wait=False) for call in calls]
        script += [task_started(f"task-{call}", call, background=True) for call in calls]
        script += [task_notification(f"task-{call}", call) for call in calls]
        script.append(result())
        play(telemetry_factory(make_config(max_concurrency=8)), script)
        assert at_depth(registry, 2).executions == at_depth(registry, 2).completions == 4
        assert at_depth(registry, 2).active == 0

    def test_session_inside_an_execution_nests_under_it(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A query() made inside ``with tel.execution()`` is one level below it."""
        tel = telemetry_factory()

        async def go() -> None:
            async with tel.execution("outer"):
                transport = ScriptedTransport([assistant("m1"), result()])
                async for _ in claude_integration.query(tel, prompt="go", transport=transport):
                    pass

        asyncio.run(go())
        assert [at_depth(registry, d).executions for d in (1, 2)] == [1, 1]


class TestOutcomes:
    @pytest.mark.parametrize(
        ("status", "error_type"), [("failed", "execution_failed"), ("stopped", "cancelled")]
    )
    def test_task_status_is_the_subagent_outcome(
        self, telemetry_factory: Factory, registry: CollectorRegistry, status: str, error_type: str
    ) -> None:
        """A task that failed is failed; one that was stopped is cancelled."""
        script = [*launch("toolu_a", "task-a"), task_notification("task-a", "toolu_a", status), result()]
        play(telemetry_factory(), script)
        assert errors(registry, 2, error_type) == 1

    def test_task_only_updated_ends_with_the_session(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A terminal ``task_updated`` with no notification is the outcome when the session ends."""
        script = [*launch("toolu_a", "task-a"), task_updated("task-a", "killed"), result()]
        play(telemetry_factory(), script)
        assert errors(registry, 2, "cancelled") == 1

    def test_subagent_never_reported_is_aborted(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A subagent the CLI never reports the end of is recorded ``aborted`` when the session ends."""
        play(telemetry_factory(), [*launch("toolu_a", "task-a"), result()])
        assert errors(registry, 2, "aborted") == 1
        assert at_depth(registry, 2).active == 0

    def test_foreground_report_completes_the_subagent(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A foreground subagent's tool result (its report) ends it complete."""
        script = [*launch("toolu_a", "task-a"), tool_result("toolu_a"), assistant("m2"), result()]
        play(telemetry_factory(), script)
        assert at_depth(registry, 2).completions == 1

    def test_failed_agent_tool_fails_the_subagent(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """An Agent call that fails (PostToolUseFailure) ends its subagent failed, once."""
        failure = Hook(
            "PostToolUseFailure", {"tool_name": "Agent", "tool_use_id": "toolu_a", "error": "x"}, "toolu_a"
        )
        script = [*launch("toolu_a", "task-a"), failure, tool_result("toolu_a", is_error=True), result()]
        play(telemetry_factory(), script)
        assert errors(registry, 2, "execution_failed") == at_depth(registry, 2).executions == 1

    @pytest.mark.parametrize(
        ("final", "completions", "failures"),
        [
            (result("error_max_turns", is_error=True), 1, 0),
            (result("error_during_execution", is_error=True), 0, 1),
            (result("success", is_error=True), 0, 1),
        ],
    )
    def test_session_outcome_follows_its_result(
        self,
        telemetry_factory: Factory,
        registry: CollectorRegistry,
        final: dict[str, Any],
        completions: int,
        failures: int,
    ) -> None:
        """``error_max_turns`` is incomplete; other error results are failed."""
        play(telemetry_factory(), [assistant("m1"), final])
        assert at_depth(registry, 1).incomplete == completions
        assert errors(registry, 1, "execution_failed") == failures

    def test_leaving_the_loop_after_the_result_completes(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Breaking out of the message loop once the result arrived is a complete session."""
        tel = telemetry_factory()

        async def go() -> None:
            transport = ScriptedTransport([assistant("m1"), result(), assistant("m2")])
            stream = claude_integration.query(tel, prompt="go", transport=transport)
            async for message in stream:
                if isinstance(message, claude_agent_sdk.ResultMessage):
                    break
            await stream.aclose()

        asyncio.run(go())
        assert at_depth(registry, 1).completions == 1


class TestRefusals:
    def test_depth_refusal_is_a_deny_with_the_reason(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A subagent past ``max_depth`` is denied in PreToolUse, counted once, and records nothing more."""
        script = [*launch("toolu_a", "task-a"), assistant("m2", parent="toolu_a"), result()]
        transport = play(telemetry_factory(make_config(max_depth=1)), script)
        assert denied(transport.hook_answers[0])
        assert (
            "refused by its quota"
            in transport.hook_answers[0]["hookSpecificOutput"]["permissionDecisionReason"]
        )
        assert at_depth(registry, 2).executions == errors(registry, 2, "max_depth_reached") == 1
        assert at_depth(registry, 2).tokens == 0
        assert invariant_holds(registry)

    def test_concurrency_refusal_denies_the_extra_parallel_call(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """With two slots (the session holds one) the second of two parallel calls is denied."""
        script: list[Step] = [
            assistant("m1", agent_call("toolu_a"), agent_call("toolu_b")),
            pre_agent("toolu_a"),
            pre_agent("toolu_b"),
            task_started("task-a", "toolu_a"),
            task_notification("task-a", "toolu_a"),
            result(),
        ]
        transport = play(telemetry_factory(make_config(max_concurrency=2)), script)
        assert [denied(answer) for answer in transport.hook_answers] == [False, True]
        assert errors(registry, 2, "quota_exceeded") == 1
        assert at_depth(registry, 2).completions == 1

    def test_spent_budget_denies_the_next_subagent(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """The calling message's usage is charged before the call is admitted: it is denied."""
        script = [
            assistant("m1", agent_call("toolu_a"), input_tokens=95, output_tokens=5),
            pre_agent("toolu_a"),
            result(),
        ]
        transport = play(telemetry_factory(make_config(max_total_tokens=100)), script)
        assert denied(transport.hook_answers[0])
        assert errors(registry, 2, "quota_exceeded") == 1

    def test_subagent_over_budget_ends_and_the_session_goes_on(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A subagent's message that passes the budget ends that subagent; the session's loop continues."""
        script = [
            *launch("toolu_a", "task-a"),
            assistant("m2", input_tokens=500, output_tokens=5, parent="toolu_a"),
            task_notification("task-a", "toolu_a"),
            result(),
        ]
        play(telemetry_factory(make_config(max_total_tokens=100)), script)
        assert errors(registry, 2, "quota_exceeded") == 1
        assert at_depth(registry, 1).completions == 1

    def test_session_over_budget_raises_into_the_loop(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """The session's own message passing the budget raises ``TokenLimitExceeded`` to the caller."""
        with pytest.raises(TokenLimitExceeded):
            play(
                telemetry_factory(make_config(max_total_tokens=100)),
                [assistant("m1", input_tokens=500), result()],
            )
        assert errors(registry, 1, "quota_exceeded") == 1

    def test_refused_session_never_starts_the_cli(self, telemetry_factory: Factory) -> None:
        """A session refused at admission raises before the transport is connected."""
        tel = telemetry_factory(make_config(max_depth=1))
        transport = ScriptedTransport([result()])

        async def go() -> None:
            async with tel.execution("outer"):
                async for _ in claude_integration.query(tel, prompt="go", transport=transport):
                    pass

        with pytest.raises(DepthLimitExceeded):
            asyncio.run(go())
        assert not transport.is_ready()


class TestInstrumentation:
    def test_callers_hooks_and_options_are_kept(self, telemetry_factory: Factory) -> None:
        """The caller's own hooks still run and the caller's options object is not changed."""
        seen: list[str] = []

        async def mine(data: Any, tool_use_id: str | None, context: Any) -> dict[str, Any]:
            seen.append(str(tool_use_id))
            return {}

        options = ClaudeAgentOptions(hooks={"PreToolUse": [HookMatcher(matcher="Agent", hooks=[mine])]})
        play(
            telemetry_factory(),
            [*launch("toolu_a", "task-a"), task_notification("task-a", "toolu_a"), result()],
            options,
        )
        assert seen == ["toolu_a"]
        assert options.hooks is not None
        assert len(options.hooks["PreToolUse"]) == 1

    def test_instrument_replaces_and_uninstrument_restores(self, telemetry_factory: Factory) -> None:
        """Every attribute instrument() replaces is the original again after uninstrument()."""
        from claude_agent_sdk._internal.client import InternalClient

        names = ("connect", "receive_messages", "disconnect", "__aexit__")
        before = [InternalClient.__dict__["process_query"], *(ClaudeSDKClient.__dict__[n] for n in names)]
        claude_integration.instrument(telemetry_factory())
        try:
            assert InternalClient.__dict__["process_query"] is not before[0]
            assert claude_agent_sdk.query is sdk_query  # The public function itself is untouched.
        finally:
            claude_integration.uninstrument()
        assert [
            InternalClient.__dict__["process_query"],
            *(ClaudeSDKClient.__dict__[n] for n in names),
        ] == before

    def test_query_imported_before_instrument_is_recorded(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """``from claude_agent_sdk import query`` done at import time is recorded after instrument()."""
        claude_integration.instrument(telemetry_factory())
        try:

            async def go() -> None:
                async for _ in sdk_query(
                    prompt="go", transport=ScriptedTransport([assistant("m1"), result()])
                ):
                    pass

            asyncio.run(go())
        finally:
            claude_integration.uninstrument()
        assert at_depth(registry, 1).completions == 1

    def test_explicit_query_while_instrumented_is_one_session(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """``query(tel, ...)`` under ``instrument()`` records its session once, not twice."""
        tel = telemetry_factory()
        claude_integration.instrument(tel)
        try:
            play(tel, [assistant("m1"), result()])
        finally:
            claude_integration.uninstrument()
        assert at_depth(registry, 1).executions == 1
        assert at_depth(registry, 2).executions == 0

    def test_instrumented_query_records_a_session(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """After ``instrument(tel)`` the SDK's own query() is recorded."""
        claude_integration.instrument(telemetry_factory())
        try:

            async def go() -> None:
                transport = ScriptedTransport([assistant("m1"), result()])
                async for _ in claude_agent_sdk.query(prompt="go", transport=transport):
                    pass

            asyncio.run(go())
        finally:
            claude_integration.uninstrument()
        assert at_depth(registry, 1).completions == 1

    def test_second_instrument_warns(
        self, telemetry_factory: Factory, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Instrumenting twice logs a warning and keeps the first instrumentation."""
        claude_integration.instrument(telemetry_factory())
        try:
            patched = claude_agent_sdk.query
            with caplog.at_level(logging.WARNING, logger="subagent_telemetry"):
                claude_integration.instrument(telemetry_factory())
            assert "already instrumented" in caplog.text
            assert claude_agent_sdk.query is patched
        finally:
            claude_integration.uninstrument()

    def test_seams_exist_in_the_installed_version(self) -> None:
        """The public names used here exist, and the installed SDK is in the tested range."""
        import inspect

        from claude_agent_sdk._internal.client import InternalClient
        from packaging.specifiers import SpecifierSet

        for name in ("TaskStartedMessage", "TaskNotificationMessage", "TaskUpdatedMessage", "StreamEvent"):
            assert hasattr(claude_agent_sdk, name)
        parameters = list(inspect.signature(InternalClient.process_query).parameters)
        assert parameters == [
            "self",
            "prompt",
            "options",
            "transport",
        ]  # The private seam instrument() wraps.
        assert "forward_subagent_text" in ClaudeAgentOptions.__dataclass_fields__
        for package, spec in claude_integration.SUPPORTED_VERSIONS.items():
            assert metadata.version(package) in SpecifierSet(spec)


def test_a_recording_failure_never_reaches_the_loop(
    telemetry_factory: Factory,
    registry: CollectorRegistry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unexpected error while recording a message is logged; the caller's loop goes on."""

    def broken(usage: Any) -> Any:
        msg = "unreadable usage"
        raise ValueError(msg)

    monkeypatch.setattr(claude_integration, "_usage", broken)
    play(telemetry_factory(), [assistant("m1"), result()])
    assert "not recorded" in caplog.text
    assert at_depth(registry, 1).completions == 1

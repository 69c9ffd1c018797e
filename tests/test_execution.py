"""Executions: admission, depth, turns, tokens, output, outcomes, concurrency, and the invariant."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from subagent_telemetry import (
    ConcurrencyLimitReached,
    DepthLimitExceeded,
    ErrorType,
    ExecutionLimitReached,
    Status,
    SubagentInputError,
    SubagentTelemetry,
    TimeLimitExceeded,
    TokenLimitExceeded,
    TurnLimitExceeded,
)
from subagent_telemetry._execution import truncate_utf8
from tests.conftest import make_config
from tests.support import agent_metrics
from tests.support.agent_metrics import total

Factory = Callable[..., SubagentTelemetry]


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def assert_invariant(registry: CollectorRegistry, max_depth: int) -> None:
    """executions == completions + errors for every depth (the refused one past max_depth too), and
    nothing is active."""
    agent_metrics.assert_invariant(registry, max_depth + 1)


class Boom(Exception):
    """A failure raised by test agent code."""


class TestDepth:
    def test_nested_executions_are_one_level_deeper(self, telemetry_factory: Factory) -> None:
        """Depth follows nesting without passing anything."""
        tel = telemetry_factory()
        with tel.execution("a") as a, tel.execution("b") as b, tel.execution("c") as c:
            assert (a.depth, b.depth, c.depth) == (1, 2, 3)

    def test_depth_crosses_await_gather_and_tasks(self, telemetry_factory: Factory) -> None:
        """Children started with gather or create_task see their parent's depth."""
        tel = telemetry_factory(make_config(max_concurrency=50))

        async def child() -> int:
            await asyncio.sleep(0)
            async with tel.execution("child") as run:
                return run.depth

        async def main() -> list[int]:
            async with tel.execution("parent"):
                gathered = await asyncio.gather(child(), child())
                task = await asyncio.create_task(child())
                return [*gathered, task]

        assert asyncio.run(main()) == [2, 2, 2]

    def test_depth_past_max_is_refused_and_recorded(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Opening past max_depth raises DepthLimitExceeded, counted as max_depth_reached."""
        tel = telemetry_factory(make_config(max_depth=2))
        with tel.execution("a"), tel.execution("b"), pytest.raises(DepthLimitExceeded), tel.execution("c"):
            pass
        assert sample(registry, "subagent_errors_total", depth="3", error_type="max_depth_reached") == 1
        assert sample(registry, "subagent_quota_rejections_total", resource="depth") == 1
        assert_invariant(registry, 2)

    def test_sibling_threads_start_at_depth_one(self, telemetry_factory: Factory) -> None:
        """A new thread has no parent execution."""
        tel = telemetry_factory()
        seen: list[int] = []

        def worker() -> None:
            with tel.execution("t") as run:
                seen.append(run.depth)

        with tel.execution("outer"):
            thread = threading.Thread(target=worker)
            thread.start()
            thread.join()
        assert seen == [1]


class TestTurnsTokensOutput:
    def test_turn_past_the_limit_raises(self, telemetry_factory: Factory) -> None:
        """record_turn beyond default_max_turns raises TurnLimitExceeded."""
        tel = telemetry_factory(make_config(default_max_turns=2))
        with pytest.raises(TurnLimitExceeded, match="Turn limit reached: 3/2"), tel.execution("a") as run:
            run.record_turn()
            run.record_turn()
            run.record_turn()

    def test_running_out_of_turns_is_an_incomplete_completion(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A TurnLimitExceeded escaping the execution records status=incomplete, not an error."""
        tel = telemetry_factory(make_config(default_max_turns=1))
        with pytest.raises(TurnLimitExceeded), tel.execution("a") as run:
            run.record_turn()
            run.record_turn()
        assert sample(registry, "subagent_completions_total", depth="1", status="incomplete") == 1
        assert sample(registry, "subagent_turns_used_sum", depth="1") == 1

    def test_per_call_max_turns_overrides_the_default(self, telemetry_factory: Factory) -> None:
        """max_turns= on the call wins over default_max_turns."""
        tel = telemetry_factory(make_config(default_max_turns=1))
        with tel.execution("a", max_turns=3) as run:
            for _ in range(3):
                run.record_turn()
        assert run.turns == 3

    def test_token_quota_stops_the_execution(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Passing max_total_tokens raises, records quota_exceeded and a tokens rejection."""
        tel = telemetry_factory(make_config(max_total_tokens=1_000))
        with pytest.raises(TokenLimitExceeded), tel.execution("a") as run:
            run.record_tokens(input=800, output=300)
        assert sample(registry, "subagent_errors_total", depth="1", error_type="quota_exceeded") == 1
        assert sample(registry, "subagent_quota_rejections_total", resource="tokens") == 1
        assert sample(registry, "subagent_tokens_consumed_sum", depth="1") == 1_100
        assert tel.tracker.get_usage().total_tokens == 1_100

    def test_output_is_truncated_utf8_safe_and_counted(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """set_output cuts at output_max_size bytes without splitting a character."""
        tel = telemetry_factory(make_config(output_max_size=1024))
        with tel.execution("a") as run:
            kept = run.set_output("é" * 1000)  # 2 bytes each: 2000 bytes
        assert kept == "é" * 512
        assert sample(registry, "subagent_output_truncations_total", depth="1") == 1

    def test_short_output_is_untouched(self, telemetry_factory: Factory, registry: CollectorRegistry) -> None:
        """Output under the cap comes back unchanged and is not counted."""
        tel = telemetry_factory(make_config(output_max_size=1024))
        with tel.execution("a") as run:
            assert run.set_output("ok") == "ok"
        assert sample(registry, "subagent_output_truncations_total", depth="1") == 0

    @pytest.mark.parametrize("limit", [1, 2, 3, 4, 5, 7])
    def test_truncation_never_splits_a_character(self, limit: int) -> None:
        """Cutting mixed 1-4 byte characters always yields valid UTF-8 within the limit."""
        text = "aé€😀" * 3
        kept, _ = truncate_utf8(text, limit)
        assert len(kept.encode()) <= limit
        assert text.startswith(kept)


class TestOutcomes:
    @pytest.mark.parametrize(
        ("exc", "error_type"),
        [
            (Boom("x"), "execution_failed"),
            (SubagentInputError("bad"), "invalid_input"),
            (TimeoutError(), "timeout"),
            (KeyboardInterrupt(), "interrupted"),
        ],
    )
    def test_exceptions_map_to_error_types(
        self, telemetry_factory: Factory, registry: CollectorRegistry, exc: BaseException, error_type: str
    ) -> None:
        """Each escaping exception is recorded once under its documented error type and re-raised."""
        tel = telemetry_factory()
        with pytest.raises(type(exc)), tel.execution("a"):
            raise exc
        assert sample(registry, "subagent_errors_total", depth="1", error_type=error_type) == 1
        assert_invariant(registry, 3)

    def test_success_is_a_complete_completion(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A clean exit records status=complete with duration, turns and tokens."""
        tel = telemetry_factory()
        with tel.execution("a") as run:
            run.record_turn()
            run.record_tokens(input=10, output=5)
        assert sample(registry, "subagent_completions_total", depth="1", status="complete") == 1
        assert sample(registry, "subagent_duration_seconds_count", depth="1", status="complete") == 1
        assert sample(registry, "subagent_tokens_consumed_sum", depth="1") == 15

    def test_mark_incomplete_records_incomplete(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Agent code can declare a partial result."""
        tel = telemetry_factory()
        with tel.execution("a") as run:
            run.mark_incomplete()
        assert sample(registry, "subagent_completions_total", depth="1", status="incomplete") == 1

    def test_cancellation_is_recorded_as_cancelled(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A task cancelled inside an execution records error_type=cancelled."""
        tel = telemetry_factory()

        async def main() -> None:
            async def body() -> None:
                async with tel.execution("a"):
                    await asyncio.sleep(10)

            task = asyncio.create_task(body())
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        assert sample(registry, "subagent_errors_total", depth="1", error_type="cancelled") == 1
        assert_invariant(registry, 3)

    def test_generator_close_is_recorded(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A generator closed while inside an execution records interrupted."""
        tel = telemetry_factory()

        def gen() -> Generator[int, None, None]:
            with tel.execution("a"):
                yield 1
                yield 2

        g = gen()
        next(g)
        g.close()
        assert sample(registry, "subagent_errors_total", depth="1", error_type="interrupted") == 1
        assert_invariant(registry, 3)

    def test_custom_classifier_decides_the_error_type(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """error_classifier maps user exceptions to the closed vocabulary."""
        tel = telemetry_factory(
            error_classifier=lambda e: ErrorType.INVALID_INPUT if isinstance(e, Boom) else None
        )
        with pytest.raises(Boom), tel.execution("a"):
            raise Boom
        assert sample(registry, "subagent_errors_total", depth="1", error_type="invalid_input") == 1

    def test_refused_admission_counts_as_execution_and_error(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A quota refusal is an execution with error_type=quota_exceeded and a rejection."""
        tel = telemetry_factory(make_config(max_executions=1))
        with tel.execution("a"):
            pass
        with pytest.raises(ExecutionLimitReached), tel.execution("b"):
            pytest.fail("a refused execution must not run")
        assert sample(registry, "subagent_executions_total", depth="1") == 2
        assert sample(registry, "subagent_errors_total", depth="1", error_type="quota_exceeded") == 1
        assert sample(registry, "subagent_quota_rejections_total", resource="executions") == 1
        assert_invariant(registry, 3)

    def test_failed_executions_count_against_the_budget(self, telemetry_factory: Factory) -> None:
        """An execution counts at admission, whatever its outcome."""
        tel = telemetry_factory(make_config(max_executions=1))
        with pytest.raises(Boom), tel.execution("a"):
            raise Boom
        with pytest.raises(ExecutionLimitReached), tel.execution("b"):
            pass

    def test_an_execution_object_cannot_be_reused(self, telemetry_factory: Factory) -> None:
        """Entering the same Execution twice is a programming error."""
        tel = telemetry_factory()
        run = tel.execution("a")
        with run:
            pass
        with pytest.raises(RuntimeError, match="only be entered once"), run:
            pass


class TestTimeBudget:
    def test_async_execution_past_the_deadline_is_cancelled(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """An async execution running past max_total_time is stopped with TimeLimitExceeded."""
        tel = telemetry_factory(make_config(max_total_time=0.05))

        async def main() -> None:
            async with tel.execution("slow"):
                await asyncio.sleep(5)

        started = time.monotonic()
        with pytest.raises(TimeLimitExceeded):
            asyncio.run(main())
        assert time.monotonic() - started < 2
        assert sample(registry, "subagent_errors_total", depth="1", error_type="timeout") == 1
        assert sample(registry, "subagent_quota_rejections_total", resource="time_seconds") == 1
        assert_invariant(registry, 3)

    def test_sync_code_can_check_the_deadline(self, telemetry_factory: Factory, clock: Any) -> None:
        """run.check_time() raises once the budget is spent."""
        tel = telemetry_factory(make_config(max_total_time=10), clock=clock)
        with pytest.raises(TimeLimitExceeded), tel.execution("a") as run:
            clock.advance(11)
            run.check_time()


class TestConcurrency:
    def test_threads_never_exceed_max_concurrency(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """With max_concurrency=3, at most 3 executions run at once; the rest wait."""
        tel = telemetry_factory(make_config(max_concurrency=3))
        running, peak, lock = 0, 0, threading.Lock()

        def worker() -> None:
            nonlocal running, peak
            with tel.execution("t"):
                with lock:
                    running += 1
                    peak = max(peak, running)
                time.sleep(0.005)
                with lock:
                    running -= 1

        threads = [threading.Thread(target=worker) for _ in range(24)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert peak == 3
        assert sample(registry, "subagent_completions_total", depth="1", status="complete") == 24

    def test_async_tasks_wait_for_a_slot(self, telemetry_factory: Factory) -> None:
        """Async admissions wait without blocking the loop and all complete."""
        tel = telemetry_factory(make_config(max_concurrency=2))
        running, peak = 0, 0

        async def one() -> None:
            nonlocal running, peak
            async with tel.execution("a"):
                running += 1
                peak = max(peak, running)
                await asyncio.sleep(0.002)
                running -= 1

        async def main() -> None:
            await asyncio.gather(*(one() for _ in range(30)))

        asyncio.run(main())
        assert peak == 2

    def test_admission_timeout_refuses(self, telemetry_factory: Factory, registry: CollectorRegistry) -> None:
        """No slot within concurrency_timeout raises ConcurrencyLimitReached, recorded as a rejection."""
        tel = telemetry_factory(make_config(max_concurrency=1, concurrency_timeout=0.05))
        release = threading.Event()

        def holder() -> None:
            with tel.execution("holder"):
                release.wait(5)

        thread = threading.Thread(target=holder)
        thread.start()
        time.sleep(0.02)
        with pytest.raises(ConcurrencyLimitReached), tel.execution("late"):
            pass
        release.set()
        thread.join()
        assert sample(registry, "subagent_quota_rejections_total", resource="concurrency") == 1
        assert_invariant(registry, 3)

    def test_async_timeout_refuses(self, telemetry_factory: Factory) -> None:
        """The async wait honours concurrency_timeout too."""
        tel = telemetry_factory(make_config(max_concurrency=1, concurrency_timeout=0.05))

        async def main() -> None:
            async def holder() -> None:
                async with tel.execution("holder"):
                    await asyncio.sleep(0.5)

            task = asyncio.create_task(holder())
            await asyncio.sleep(0.01)
            with pytest.raises(ConcurrencyLimitReached):
                async with tel.execution("late"):
                    pass
            await task

        asyncio.run(main())

    def test_nested_executions_never_wait_so_cannot_deadlock(self, telemetry_factory: Factory) -> None:
        """A child whose parent holds the last slot is refused at once instead of deadlocking."""
        tel = telemetry_factory(make_config(max_concurrency=1))
        with tel.execution("parent"), pytest.raises(ConcurrencyLimitReached), tel.execution("child"):
            pass

    def test_nested_refusal_suggests_only_fixes_that_work_for_it(self, telemetry_factory: Factory) -> None:
        """A refused child is told to raise max_concurrency, never concurrency_timeout (it never waits)."""
        tel = telemetry_factory(make_config(max_concurrency=1, concurrency_timeout=0.05))
        with tel.execution("parent"), pytest.raises(ConcurrencyLimitReached) as info, tel.execution("child"):
            pass
        assert info.value.nested
        message = str(info.value)
        assert "Raise agent.subagent.max_concurrency to allow more." in message
        assert "or agent.subagent.concurrency_timeout" not in message
        assert "never waits" in message

    def test_top_level_refusal_suggests_the_admission_timeout(self, telemetry_factory: Factory) -> None:
        """A top-level execution that waited in vain is told it may wait longer (concurrency_timeout)."""
        tel = telemetry_factory(make_config(max_concurrency=1, concurrency_timeout=0.01))
        holder = tel.start("holder")
        with pytest.raises(ConcurrencyLimitReached) as info, tel.execution("late"):
            pass
        holder.finish()
        assert not info.value.nested
        assert "agent.subagent.concurrency_timeout" in str(info.value)

    def test_cancelled_waiter_gives_its_slot_back(self, telemetry_factory: Factory) -> None:
        """A task cancelled while waiting for a slot does not leak it."""
        tel = telemetry_factory(make_config(max_concurrency=1))

        async def main() -> None:
            async def holder() -> None:
                async with tel.execution("holder"):
                    await asyncio.sleep(0.05)

            async def waiter() -> None:
                async with tel.execution("waiter"):
                    pass

            hold = asyncio.create_task(holder())
            await asyncio.sleep(0.01)
            wait = asyncio.create_task(waiter())
            await asyncio.sleep(0.01)
            wait.cancel()
            await hold
            async with tel.execution("after"):
                pass

        asyncio.run(asyncio.wait_for(main(), 2))
        assert tel._slots.in_use == 0


class TestManualHandle:
    def test_first_record_counts_and_later_ones_are_ignored(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Only the first record_completion/record_error is recorded."""
        tel = telemetry_factory()
        handle = tel.start("callback", depth=2)
        assert handle.elapsed() >= 0
        assert handle.record_completion(turns=3, tokens=400, status="complete") is True
        assert handle.record_error("execution_failed") is False
        assert sample(registry, "subagent_completions_total", depth="2", status="complete") == 1
        assert sample(registry, "subagent_errors_total", depth="2", error_type="execution_failed") == 0
        assert sample(registry, "subagent_turns_used_sum", depth="2") == 3
        assert tel.tracker.get_usage().total_tokens == 400

    def test_dropped_handle_is_recorded_as_aborted(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A handle garbage-collected without a record counts as error_type=aborted."""
        tel = telemetry_factory()
        tel.start("lost")
        gc.collect()
        assert sample(registry, "subagent_errors_total", depth="1", error_type="aborted") == 1
        assert_invariant(registry, 3)

    def test_unknown_error_type_is_logged_not_raised(
        self, telemetry_factory: Factory, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A free string never becomes a label: it is logged and recorded as execution_failed."""
        tel = telemetry_factory()
        tel.start("x").record_error("llm exploded")
        assert sample(registry, "subagent_errors_total", depth="1", error_type="execution_failed") == 1
        assert "llm exploded" in caplog.text


class TestDecorator:
    def test_sync_function_is_one_execution_per_call(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Each call of a decorated function is one execution named after it."""
        tel = telemetry_factory()

        @tel.instrument()
        def summarize(x: int) -> int:
            run = tel.current()
            assert run is not None
            run.record_turn()
            return x * 2

        assert summarize(2) == 4
        assert sample(registry, "subagent_completions_total", depth="1", status="complete") == 1

    def test_async_function_is_wrapped_with_async_with(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Coroutine functions get the async form."""
        tel = telemetry_factory()

        @tel.instrument("fetch")
        async def fetch() -> str:
            await asyncio.sleep(0)
            return "ok"

        assert asyncio.run(fetch()) == "ok"
        assert sample(registry, "subagent_completions_total", depth="1", status="complete") == 1

    def test_generator_function_is_one_execution_over_its_iteration(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A decorated generator is current while it runs (it used to end, empty, when called)."""
        tel = telemetry_factory()

        @tel.instrument()
        def stream(n: int) -> Iterator[int]:
            for i in range(n):
                run = tel.current()
                assert run is not None
                run.record_response(10, 5)
                yield i

        assert list(stream(3)) == [0, 1, 2]
        assert sample(registry, "subagent_completions_total", depth="1", status="complete") == 1
        assert sample(registry, "subagent_turns_used_sum", depth="1") == 3

    def test_async_generator_function_is_one_execution_forwarding_sends_and_errors(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """An async generator: current while it runs, asend() values reach it, a failure inside is the
        execution's outcome."""
        tel = telemetry_factory()

        @tel.instrument("chat")
        async def chat() -> AsyncIterator[str]:
            run = tel.current()
            assert run is not None
            reply = yield "hello"
            run.record_turn()
            if reply == "boom":
                raise ValueError(reply)
            yield f"got {reply}"

        async def main() -> list[str]:
            first = chat()
            seen = [await first.__anext__(), await first.asend("x")]
            await first.aclose()
            failing = chat()
            await failing.__anext__()
            with pytest.raises(ValueError, match="boom"):
                await failing.asend("boom")
            return seen

        assert asyncio.run(main()) == ["hello", "got x"]
        assert sample(registry, "subagent_errors_total", depth="1", error_type="execution_failed") == 1
        assert sample(registry, "subagent_turns_used_sum", depth="1") == 2
        assert_invariant(registry, 3)


class BrokenBackend:
    """A backend that fails on every call."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        def fail(*args: object) -> None:
            raise RuntimeError(f"backend {name} is broken")

        return fail


class TestRecordingNeverRaises:
    def test_broken_backend_does_not_reach_agent_code(
        self, telemetry_factory: Factory, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A failing backend is logged; the execution and other backends carry on."""
        tel = telemetry_factory(backends=[BrokenBackend()])
        with tel.execution("a") as run:
            run.record_turn()
            run.set_output("x" * 10)
        assert sample(registry, "subagent_completions_total", depth="1", status="complete") == 1
        assert "failed to record" in caplog.text

    def test_negative_tokens_are_dropped_with_a_warning(
        self, telemetry_factory: Factory, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Bad measurements are logged and dropped, not raised."""
        tel = telemetry_factory()
        with tel.execution("a") as run:
            run.record_tokens(input=-5)
        assert run.tokens == 0
        assert "counts dropped" in caplog.text


class TestLogging:
    def test_one_structured_record_per_execution(
        self, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Each finished execution logs one record with agent, depth, outcome, duration, turns, tokens."""
        config = make_config().model_copy(
            update={"telemetry": make_config().telemetry.model_copy(update={"log_executions": True})}
        )
        tel = SubagentTelemetry(config, registry=registry)
        caplog.set_level(logging.INFO, logger="subagent_telemetry.executions")
        with tel.execution("writer") as run:
            run.record_turn()
            run.record_tokens(input=7)
        records = [r for r in caplog.records if r.name == "subagent_telemetry.executions"]
        assert len(records) == 1
        fields = records[0].__dict__
        assert (fields["agent"], fields["depth"], fields["status"], fields["turns"], fields["tokens"]) == (
            "writer",
            1,
            "complete",
            1,
            7,
        )
        assert fields["error_type"] is None


# -- the invariant under randomized workloads -----------------------------------------------------------

ACTIONS = st.sampled_from(["ok", "fail", "input", "turns", "tokens", "cancel", "nest", "incomplete"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=st.lists(st.lists(ACTIONS, min_size=1, max_size=4), min_size=1, max_size=12))
def test_invariant_holds_for_random_async_workloads(plan: list[list[str]]) -> None:
    """Whatever happens, executions == completions + errors per depth once nothing runs."""
    registry = CollectorRegistry()
    tel = SubagentTelemetry(
        make_config(
            max_depth=3, default_max_turns=2, max_total_tokens=5_000, max_executions=30, max_concurrency=4
        ),
        registry=registry,
    )

    async def run(actions: list[str], level: int) -> None:
        action = actions[0] if actions else "ok"
        async with tel.execution(f"a{level}") as ex:
            await asyncio.sleep(0)
            if action == "fail":
                raise Boom
            if action == "input":
                raise SubagentInputError("bad")
            if action == "turns":
                for _ in range(3):
                    ex.record_turn()
            if action == "tokens":
                ex.record_tokens(input=2_000)
            if action == "cancel":
                raise asyncio.CancelledError
            if action == "incomplete":
                ex.mark_incomplete()
            if action == "nest":
                await asyncio.gather(
                    run(actions[1:], level + 1), run(actions[1:], level + 1), return_exceptions=True
                )

    async def main() -> None:
        tasks = [asyncio.create_task(run(actions, 1)) for actions in plan]
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())
    assert_invariant(registry, 3)


def test_invariant_holds_for_random_threaded_workloads() -> None:
    """Threads with mixed outcomes and quota refusals keep the invariant."""
    import random

    registry = CollectorRegistry()
    tel = SubagentTelemetry(make_config(max_executions=300, max_concurrency=4), registry=registry)
    rng = random.Random(7)
    choices = [rng.random() for _ in range(16 * 30)]

    def worker(offset: int) -> None:
        for i in range(30):
            roll = choices[offset * 30 + i]
            try:
                with tel.execution("w") as run:
                    if roll < 0.2:
                        raise Boom
                    if roll < 0.3:
                        with tel.execution("inner"):
                            raise SubagentInputError("x")
                    run.record_turn()
            except (Boom, SubagentInputError, ExecutionLimitReached, ConcurrencyLimitReached):
                pass

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert_invariant(registry, 3)
    assert total(registry, "subagent_executions_total") == 16 * 30 + total(
        registry, "subagent_executions_total", depth="2"
    )
    assert Status.COMPLETE.value == "complete"

"""QuotaTracker: the seed API, atomic admission, token and time budgets, early warnings."""

from __future__ import annotations

import asyncio
import math
import threading
from decimal import Decimal

import pytest

from subagent_telemetry import (
    CostLimitExceeded,
    ExecutionLimitReached,
    QuotaExceeded,
    QuotaLimits,
    QuotaTracker,
    Resource,
    SubagentTelemetry,
    TimeLimitExceeded,
    TokenLimitExceeded,
)
from subagent_telemetry.quota._tracker import NANO
from tests.conftest import FakeClock, make_config


class TestSeedApi:
    def test_third_reservation_over_two_is_refused(self) -> None:
        """The seed example: two admissions, the third raises ExecutionLimitReached."""
        tracker = QuotaTracker(QuotaLimits(max_executions=2, max_total_tokens=None, max_total_time=None))
        tracker.check_and_reserve()
        tracker.record_execution(100)
        tracker.check_and_reserve()
        tracker.record_execution(100)
        with pytest.raises(ExecutionLimitReached) as info:
            tracker.check_and_reserve()
        assert isinstance(info.value, QuotaExceeded)
        assert str(info.value).startswith("Execution limit reached: 2/2")
        assert "agent.subagent.max_executions" in str(info.value)
        assert (info.value.resource, info.value.used, info.value.limit) == (Resource.EXECUTIONS, 2, 2)

    def test_usage_reports_executions_tokens_and_elapsed(self, clock: FakeClock) -> None:
        """get_usage() returns counts and seconds since the tracker started."""
        tracker = QuotaTracker(QuotaLimits(), clock=clock)
        tracker.check_and_reserve()
        tracker.record_execution(250)
        clock.advance(7.5)
        usage = tracker.get_usage()
        assert (usage.executions, usage.total_tokens, usage.elapsed_seconds) == (1, 250, 7.5)

    def test_remaining_is_none_when_unlimited(self) -> None:
        """Unlimited resources report None remaining."""
        tracker = QuotaTracker(QuotaLimits())
        assert (tracker.remaining_executions(), tracker.remaining_tokens(), tracker.remaining_time()) == (
            None,
            None,
            None,
        )

    def test_remaining_counts_down_and_never_goes_negative(self, clock: FakeClock) -> None:
        """Remaining budget shrinks with use and stops at zero."""
        tracker = QuotaTracker(QuotaLimits(3, 100, 10.0), clock=clock)
        tracker.check_and_reserve()
        with pytest.raises(TokenLimitExceeded):
            tracker.record_execution(150)
        clock.advance(4)
        assert tracker.remaining_executions() == 2
        assert tracker.remaining_tokens() == 0
        assert tracker.remaining_time() == 6.0

    @pytest.mark.parametrize("field", ["max_executions", "max_total_tokens", "max_total_time"])
    def test_limits_must_be_positive(self, field: str) -> None:
        """A zero limit is a mistake, not 'unlimited'."""
        with pytest.raises(ValueError, match=field):
            QuotaLimits(**{field: 0})


class TestTokens:
    def test_overshoot_is_counted_and_raises(self) -> None:
        """record_execution keeps the honest total and raises once it passes the limit."""
        tracker = QuotaTracker(QuotaLimits(max_total_tokens=10_000))
        tracker.record_execution(9_000)
        with pytest.raises(TokenLimitExceeded) as info:
            tracker.record_execution(1_500)
        assert str(info.value).startswith("Token limit exceeded: 10500/10000")
        assert tracker.get_usage().total_tokens == 10_500

    def test_reaching_the_limit_exactly_does_not_raise(self) -> None:
        """Using exactly the budget is allowed."""
        tracker = QuotaTracker(QuotaLimits(max_total_tokens=100))
        tracker.record_execution(100)
        assert tracker.get_usage().total_tokens == 100

    def test_admission_refused_when_no_tokens_remain(self) -> None:
        """With the token budget spent, the next admission is refused."""
        tracker = QuotaTracker(QuotaLimits(max_total_tokens=100))
        tracker.record_execution(100)
        with pytest.raises(TokenLimitExceeded):
            tracker.check_and_reserve()
        assert tracker.get_usage().executions == 0

    def test_negative_tokens_are_rejected(self) -> None:
        """Negative token counts are a programming error."""
        with pytest.raises(ValueError, match="whole number from 0"):
            QuotaTracker(QuotaLimits()).record_execution(-1)

    @pytest.mark.parametrize("cost", [math.nan, 1.5, True, "5", Decimal("1"), -1])
    def test_a_cost_that_is_not_whole_nano_units_is_rejected_before_the_store(self, cost: object) -> None:
        """cost_nanos=NaN used to turn the spend into NaN and admit forever; now ValueError, nothing added."""
        tracker = QuotaTracker(QuotaLimits(max_total_cost=Decimal(1)))
        with pytest.raises(ValueError, match="nano-units"):
            tracker.record_execution(0, None, cost)  # type: ignore[arg-type]
        assert tracker.get_usage().cost_nanos == 0
        tracker.record_execution(0, None, NANO)
        with pytest.raises(CostLimitExceeded):
            tracker.check_and_reserve()


class TestTime:
    def test_admission_refused_after_the_time_budget(self, clock: FakeClock) -> None:
        """Past max_total_time, admission raises TimeLimitExceeded with the design's heading."""
        tracker = QuotaTracker(QuotaLimits(max_total_time=300), clock=clock)
        tracker.check_and_reserve()
        clock.advance(300.2)
        with pytest.raises(TimeLimitExceeded) as info:
            tracker.check_and_reserve()
        assert str(info.value).startswith("Time limit exceeded: 300.2s >= 300s")
        assert "agent.subagent.max_total_time" in str(info.value)

    def test_admitted_just_before_the_deadline(self, clock: FakeClock) -> None:
        """One tick before the budget ends, admission still succeeds."""
        tracker = QuotaTracker(QuotaLimits(max_total_time=300), clock=clock)
        tracker.check_and_reserve()
        clock.advance(299.9)
        tracker.check_and_reserve()

    def test_deadline_is_on_the_tracker_clock(self, clock: FakeClock) -> None:
        """deadline() is start + budget on the injected clock."""
        tracker = QuotaTracker(QuotaLimits(max_total_time=60), clock=clock)
        tracker.check_and_reserve()
        clock.advance(10)
        assert tracker.deadline() == pytest.approx(clock.now + 50)

    def test_check_time_raises_for_sync_code(self, clock: FakeClock) -> None:
        """check_time() lets sync code stop when the budget is spent."""
        tracker = QuotaTracker(QuotaLimits(max_total_time=5), clock=clock)
        tracker.check_and_reserve()
        tracker.check_time()
        clock.advance(5)
        with pytest.raises(TimeLimitExceeded):
            tracker.check_time()

    def test_time_budget_starts_at_the_first_admission(self, clock: FakeClock) -> None:
        """Idling past max_total_time before the first admission uses none of the budget."""
        tracker = QuotaTracker(QuotaLimits(max_total_time=300), clock=clock)
        clock.advance(1000)
        assert tracker.get_usage().elapsed_seconds == 0
        tracker.check_and_reserve()
        clock.advance(299)
        tracker.check_and_reserve()
        clock.advance(1)
        with pytest.raises(TimeLimitExceeded):
            tracker.check_and_reserve()

    def test_idle_servers_first_execution_is_admitted(
        self, clock: FakeClock, telemetry_factory: type[SubagentTelemetry]
    ) -> None:
        """A server idle for longer than max_total_time admits its first execution."""
        tel = telemetry_factory(make_config(max_total_time=60), clock=clock)
        clock.advance(120)
        with tel.execution("a"):
            pass
        assert tel.tracker.get_usage().executions == 1

    def test_reset_starts_a_new_session(self, clock: FakeClock) -> None:
        """reset() zeroes usage; the new session's clock starts at its first admission."""
        tracker = QuotaTracker(QuotaLimits(max_executions=1, max_total_time=5), clock=clock)
        tracker.check_and_reserve()
        clock.advance(10)
        tracker.reset()
        tracker.check_and_reserve()
        assert tracker.get_usage().elapsed_seconds == 0


class TestAtomicity:
    def test_threads_racing_never_over_admit(self) -> None:
        """64 threads racing for 1,000 slots admit exactly 1,000."""
        tracker = QuotaTracker(QuotaLimits(max_executions=1_000))
        admitted = []
        barrier = threading.Barrier(64)

        def worker() -> None:
            barrier.wait()
            count = 0
            for _ in range(100):
                try:
                    tracker.check_and_reserve()
                    count += 1
                except ExecutionLimitReached:
                    pass
            admitted.append(count)

        threads = [threading.Thread(target=worker) for _ in range(64)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(admitted) == 1_000
        assert tracker.get_usage().executions == 1_000

    def test_asyncio_tasks_racing_never_over_admit(self) -> None:
        """500 tasks that yield between attempts admit exactly the limit."""
        tracker = QuotaTracker(QuotaLimits(max_executions=137))

        async def attempt() -> bool:
            await asyncio.sleep(0)
            try:
                tracker.check_and_reserve()
            except ExecutionLimitReached:
                return False
            return True

        async def main() -> list[bool]:
            return await asyncio.gather(*(attempt() for _ in range(500)))

        assert sum(asyncio.run(main())) == 137


class TestEarlyWarning:
    def test_warns_once_per_resource_when_crossing_the_ratio(self) -> None:
        """The hook fires once per resource, when usage first reaches the ratio."""
        calls: list[tuple[Resource, float, float]] = []
        tracker = QuotaTracker(
            QuotaLimits(max_executions=10, max_total_tokens=1_000),
            warning_ratio=0.8,
            on_warning=lambda r, u, lim: calls.append((r, u, lim)),
        )
        for _ in range(7):
            tracker.check_and_reserve()
        assert calls == []
        tracker.check_and_reserve()
        tracker.check_and_reserve()
        tracker.record_execution(900)
        assert calls == [(Resource.EXECUTIONS, 8, 10.0), (Resource.TOKENS, 900, 1000.0)]

    def test_rearmed_by_reset(self) -> None:
        """A new session can warn again."""
        calls: list[Resource] = []
        tracker = QuotaTracker(
            QuotaLimits(max_executions=1), warning_ratio=0.5, on_warning=lambda r, u, lim: calls.append(r)
        )
        tracker.check_and_reserve()
        tracker.reset()
        tracker.check_and_reserve()
        assert calls == [Resource.EXECUTIONS, Resource.EXECUTIONS]

"""The money budget in the tracker: exact nano-unit totals, admission, settlement, honest overshoot."""

from __future__ import annotations

import asyncio
import random
import threading
from decimal import Decimal

import pytest

from subagent_telemetry import CostLimitExceeded, QuotaExceeded, QuotaLimits, QuotaTracker, Resource

NANO = 10**9


def _limits(cost: str, **other: object) -> QuotaLimits:
    return QuotaLimits(max_total_cost=Decimal(cost), **other)  # type: ignore[arg-type]


class TestLimits:
    def test_cost_limit_is_kept_in_nano_units(self) -> None:
        """$5.25 is 5 250 000 000 nano-units."""
        assert _limits("5.25").cost_limit_nanos == 5_250_000_000

    @pytest.mark.parametrize("bad", ["0", "-1", "0.0000000001", "10000000"])
    def test_cost_limit_outside_exact_range_is_refused(self, bad: str) -> None:
        """Zero, negative, finer than a nano-unit or past Lua's exact integers: ValueError."""
        with pytest.raises(ValueError, match="max_total_cost"):
            _limits(bad)

    def test_cost_is_a_budget_resource(self) -> None:
        """limit_of/used_of report money in currency units for the quota gauges."""
        limits = _limits("5")
        tracker = QuotaTracker(limits)
        tracker.check_and_reserve()
        usage = tracker.record_execution(10, cost_nanos=1_500_000_000)
        assert (limits.limit_of(Resource.COST), usage.used_of(Resource.COST)) == (5.0, 1.5)


class TestAdmissionAndSettlement:
    def test_spend_is_counted_exactly(self) -> None:
        """Money adds up in integers: 0.1 ten times is exactly 1."""
        tracker = QuotaTracker(QuotaLimits())
        for _ in range(10):
            tracker.record_execution(0, cost_nanos=NANO // 10)
        assert tracker.get_usage().cost_nanos == NANO

    def test_response_passing_the_limit_raises_and_is_counted(self) -> None:
        """The response that passes the limit is still counted (honest total), then raises."""
        tracker = QuotaTracker(_limits("1"))
        tracker.check_and_reserve()
        tracker.record_execution(0, cost_nanos=NANO)  # Exactly at the limit: allowed.
        with pytest.raises(CostLimitExceeded) as info:
            tracker.record_execution(0, cost_nanos=3)
        assert isinstance(info.value, QuotaExceeded)
        assert tracker.get_usage().cost_nanos == NANO + 3
        assert info.value.used == Decimal("1.000000003")
        assert info.value.resource is Resource.COST

    def test_admission_is_refused_once_the_budget_is_spent(self) -> None:
        """A spent budget refuses the next execution at admission with CostLimitExceeded."""
        tracker = QuotaTracker(_limits("1"))
        tracker.check_and_reserve()
        tracker.record_execution(0, cost_nanos=NANO)
        with pytest.raises(CostLimitExceeded, match=r"1/1 USD"):
            tracker.check_and_reserve()

    def test_message_names_the_currency_and_the_key(self) -> None:
        """The refusal is actionable: figures in the currency and the key to raise."""
        tracker = QuotaTracker(QuotaLimits(max_total_cost=Decimal(2), currency="EUR"))
        with pytest.raises(CostLimitExceeded) as info:
            tracker.record_execution(0, cost_nanos=2 * NANO + 500_000_000)
        assert str(info.value).startswith("Cost limit exceeded: 2.5/2 EUR")
        assert "agent.subagent.max_total_cost" in str(info.value)

    def test_remaining_cost_is_exact_and_never_negative(self) -> None:
        """remaining_cost() is a Decimal that stops at zero."""
        tracker = QuotaTracker(_limits("0.3"))
        tracker.record_execution(0, cost_nanos=100_000_000)
        assert tracker.remaining_cost() == Decimal("0.2")
        with pytest.raises(CostLimitExceeded):
            tracker.record_execution(0, cost_nanos=NANO)
        assert tracker.remaining_cost() == 0
        assert QuotaTracker(QuotaLimits()).remaining_cost() is None

    def test_warning_fires_once_when_spend_crosses_the_ratio(self) -> None:
        """The early warning covers money like the other budgets."""
        warned: list[tuple[Resource, float, float]] = []
        tracker = QuotaTracker(_limits("10"), warning_ratio=0.8, on_warning=lambda *args: warned.append(args))
        tracker.record_execution(0, cost_nanos=7 * NANO)
        tracker.record_execution(0, cost_nanos=NANO)
        tracker.record_execution(0, cost_nanos=NANO)
        assert warned == [(Resource.COST, 8.0, 10.0)]

    def test_reset_zeroes_the_spend(self) -> None:
        """A new session starts with nothing spent."""
        tracker = QuotaTracker(_limits("1"))
        tracker.record_execution(0, cost_nanos=NANO // 2)
        tracker.reset()
        assert tracker.get_usage().cost_nanos == 0


def _run_until_refused(tracker: QuotaTracker, costs: list[int], results: list[int]) -> None:
    """One execution: admitted, then responses until the budget stops it; records its last cost."""
    try:
        tracker.check_and_reserve()
    except CostLimitExceeded:
        return
    for cost in costs:
        try:
            tracker.record_execution(0, cost_nanos=cost)
        except CostLimitExceeded:
            results.append(cost)
            return


class TestRaces:
    def test_64_threads_overshoot_at_most_one_response_each(self) -> None:
        """64 threads spending concurrently: the total passes the limit by at most the last response of
        each execution that was running (the documented overshoot), and is exactly the sum recorded."""
        limit_nanos = 50 * NANO
        tracker = QuotaTracker(QuotaLimits(max_total_cost=Decimal(50)))
        rng = random.Random(7)
        plans = [[rng.randrange(1, NANO // 10) for _ in range(2_000)] for _ in range(64)]
        last: list[int] = []
        barrier = threading.Barrier(64)

        def worker(plan: list[int]) -> None:
            barrier.wait()
            _run_until_refused(tracker, plan, last)

        threads = [threading.Thread(target=worker, args=(plan,)) for plan in plans]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        spent = tracker.get_usage().cost_nanos
        assert limit_nanos < spent <= limit_nanos + sum(last)
        assert len(last) <= 64

    @pytest.mark.asyncio
    async def test_asyncio_tasks_overshoot_at_most_one_response_each(self) -> None:
        """Tasks interleaving at every await obey the same bound."""
        limit_nanos = 5 * NANO
        tracker = QuotaTracker(QuotaLimits(max_total_cost=Decimal(5)))
        last: list[int] = []

        async def execution(seed: int) -> None:
            rng = random.Random(seed)
            try:
                tracker.check_and_reserve()
            except CostLimitExceeded:
                return
            while True:
                await asyncio.sleep(0)
                cost = rng.randrange(1, NANO // 20)
                try:
                    tracker.record_execution(0, cost_nanos=cost)
                except CostLimitExceeded:
                    last.append(cost)
                    return

        await asyncio.gather(*(execution(seed) for seed in range(64)))
        spent = tracker.get_usage().cost_nanos
        assert limit_nanos < spent <= limit_nanos + sum(last)

    def test_sum_is_exact_after_100k_responses(self) -> None:
        """100 000 responses of odd costs: the store's total equals the exact sum to the nano-unit."""
        tracker = QuotaTracker(QuotaLimits())
        rng = random.Random(3)
        costs = [rng.randrange(0, 10**7) for _ in range(100_000)]
        for cost in costs:
            tracker.record_execution(1, cost_nanos=cost)
        assert tracker.get_usage().cost_nanos == sum(costs)

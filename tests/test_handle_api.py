"""The public handle API (docs/api.md): start/try_start/astart/try_astart, use, finish, record_response,
record_completion/record_error keeping what was recorded, parents for depth and spans."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from subagent_telemetry import (
    ConcurrencyLimitReached,
    DepthLimitExceeded,
    ErrorType,
    ExecutionLimitReached,
    QuotaExceeded,
    Status,
    SubagentMetrics,
    SubagentTelemetry,
    TokenLimitExceeded,
    TurnLimitExceeded,
)
from tests.conftest import make_config
from tests.test_execution import assert_invariant, sample

Factory = Callable[..., SubagentTelemetry]


class FrameworkError(Exception):
    """A framework's own exception type (e.g. one that wraps tool errors)."""


class TestAccumulatedCounts:
    def test_the_issue_example_exports_two_turns_and_101_tokens(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """record_completion() with no arguments keeps what record_turn/record_tokens accumulated."""
        tel = telemetry_factory()
        h = tel.start("h")
        h.record_turn()
        h.record_turn()
        h.record_tokens(input=100, output=1)
        assert h.record_completion() is True
        assert sample(registry, "subagent_turns_used_sum", depth="1") == 2
        assert sample(registry, "subagent_tokens_consumed_sum", depth="1") == 101
        assert tel.tracker.get_usage().total_tokens == 101

    def test_explicit_totals_count_when_nothing_was_recorded(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """turns=/tokens= are totals for callers that recorded nothing incrementally."""
        tel = telemetry_factory()
        tel.start("h").record_completion(turns=3, tokens=400)
        assert sample(registry, "subagent_turns_used_sum", depth="1") == 3
        assert sample(registry, "subagent_tokens_consumed_sum", depth="1") == 400
        assert tel.tracker.get_usage().total_tokens == 400

    def test_an_explicit_total_is_never_charged_twice(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Mixing: only the part of an explicit total beyond what was already charged is charged."""
        tel = telemetry_factory()
        h = tel.start("h")
        h.record_tokens(input=100, output=20)
        h.record_completion(tokens=150)
        assert tel.tracker.get_usage().total_tokens == 150
        assert sample(registry, "subagent_tokens_consumed_sum", depth="1") == 150

    def test_an_explicit_total_below_what_was_recorded_keeps_the_recorded_count(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Charges are never refunded: the larger of recorded and explicit is what counts."""
        tel = telemetry_factory()
        h = tel.start("h")
        h.record_turn()
        h.record_turn()
        h.record_tokens(input=300)
        h.record_completion(turns=1, tokens=100)
        assert sample(registry, "subagent_turns_used_sum", depth="1") == 2
        assert sample(registry, "subagent_tokens_consumed_sum", depth="1") == 300
        assert tel.tracker.get_usage().total_tokens == 300

    def test_record_error_keeps_counts_and_takes_totals(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """record_error records the error type with the accumulated (or explicit) counts."""
        tel = telemetry_factory()
        h = tel.start("h")
        h.record_turn()
        assert h.record_error(ErrorType.TIMEOUT, tokens=50) is True
        assert sample(registry, "subagent_errors_total", depth="1", error_type="timeout") == 1
        assert sample(registry, "subagent_turns_used_sum", depth="1") == 1
        assert sample(registry, "subagent_tokens_consumed_sum", depth="1") == 50

    def test_an_explicit_total_past_the_budget_still_completes(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """An explicit total past max_total_tokens is counted; it refuses the next admission, not this one."""
        tel = telemetry_factory(make_config(max_total_tokens=100))
        assert tel.start("h").record_completion(tokens=500) is True
        assert sample(registry, "subagent_completions_total", depth="1", status="complete") == 1
        assert sample(registry, "subagent_quota_rejections_total", resource="tokens") == 1
        with pytest.raises(TokenLimitExceeded):
            tel.start("next")


class TestRecordResponse:
    def test_one_response_is_one_turn_and_its_tokens(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """record_response counts a turn and adds the response's tokens."""
        tel = telemetry_factory()
        with tel.execution("a") as run:
            run.record_response(input=10, output=5)
            run.record_response(input=1, output=1)
        assert (run.turns, run.input_tokens, run.output_tokens, run.tokens) == (2, 11, 6, 17)
        assert sample(registry, "subagent_tokens_consumed_sum", depth="1") == 17

    def test_a_total_without_split_counts_in_tokens_and_budget(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """total= is counted in the token total and the budget, not as input or output."""
        tel = telemetry_factory()
        with tel.execution("a") as run:
            run.record_response(total=42)
        assert (run.input_tokens, run.output_tokens, run.tokens) == (0, 0, 42)
        assert tel.tracker.get_usage().total_tokens == 42
        assert sample(registry, "subagent_tokens_consumed_sum", depth="1") == 42

    def test_total_with_a_split_is_dropped_with_a_warning(
        self, telemetry_factory: Factory, caplog: pytest.LogCaptureFixture
    ) -> None:
        """total= is exclusive with input/output: such a call is dropped, never raised."""
        tel = telemetry_factory()
        with tel.execution("a") as run:
            run.record_tokens(input=5, total=10)
        assert run.tokens == 0
        assert "counts dropped" in caplog.text

    def test_the_tokens_of_a_response_past_the_turn_limit_are_counted(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """The response happened: its tokens count even when its turn passes max_turns."""
        tel = telemetry_factory()
        with pytest.raises(TurnLimitExceeded), tel.execution("a", max_turns=1) as run:
            run.record_response(input=10)
            run.record_response(input=7)
        assert run.tokens == 17
        assert sample(registry, "subagent_completions_total", depth="1", status="incomplete") == 1

    def test_model_and_provider_are_kept_but_never_labels(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """The last model/provider seen is an attribute of the execution, not a label value."""
        tel = telemetry_factory()
        h = tel.start("h", model="gpt-start")
        assert h.model == "gpt-start"
        h.record_response(input=1, model="claude-x", provider="anthropic")
        h.record_completion()
        assert (h.model, h.provider) == ("claude-x", "anthropic")
        labels = {k for f in registry.collect() for s in f.samples for k in s.labels}
        assert "model" not in labels
        assert "provider" not in labels


class TestFinish:
    def test_finish_classifies_an_exception_as_with_does(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """finish(exc) uses the default rules (TimeoutError → timeout)."""
        tel = telemetry_factory()
        assert tel.start("h").finish(TimeoutError()) is True
        assert sample(registry, "subagent_errors_total", depth="1", error_type="timeout") == 1

    def test_finish_uses_the_error_classifier(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """The configured error_classifier decides for finish(exc) too."""
        tel = telemetry_factory(
            error_classifier=lambda e: ErrorType.INVALID_INPUT if isinstance(e, FrameworkError) else None
        )
        tel.start("h").finish(FrameworkError())
        assert sample(registry, "subagent_errors_total", depth="1", error_type="invalid_input") == 1

    def test_finish_with_something_that_is_not_an_exception_still_records_one_outcome(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """finish(exc="oops") never raises: execution_failed is recorded and the slot freed."""
        tel = telemetry_factory(make_config(max_concurrency=1))
        handle = tel.start("h")
        assert handle.finish("oops") is True  # type: ignore[arg-type]
        assert handle.error_type is ErrorType.EXECUTION_FAILED
        assert sample(registry, "subagent_errors_total", depth="1", error_type="execution_failed") == 1
        assert tel.start("next").finish() is True  # The only slot was given back.

    def test_a_classifier_may_return_a_status(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A framework's own turn-limit exception can be recorded as incomplete."""
        tel = telemetry_factory(error_classifier=lambda e: Status.INCOMPLETE)
        with pytest.raises(FrameworkError), tel.execution("a"):
            raise FrameworkError
        assert sample(registry, "subagent_completions_total", depth="1", status="incomplete") == 1

    def test_a_wrapped_quota_error_is_recorded_as_the_quota_error(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Classification follows __cause__/__context__ to a QuotaExceeded a framework wrapped."""
        tel = telemetry_factory(error_classifier=lambda e: ErrorType.INVALID_INPUT)
        cause = TokenLimitExceeded(200, 100)
        wrapped = FrameworkError("tool failed")
        wrapped.__cause__ = cause
        tel.start("h").finish(wrapped)
        with pytest.raises(FrameworkError), tel.execution("b"):
            try:
                raise DepthLimitExceeded(4, 3)
            except DepthLimitExceeded:
                raise FrameworkError("wrapped implicitly") from None
        assert sample(registry, "subagent_errors_total", depth="1", error_type="quota_exceeded") == 1
        assert sample(registry, "subagent_errors_total", depth="1", error_type="max_depth_reached") == 1

    def test_a_wrapped_turn_limit_is_incomplete(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A TurnLimitExceeded in the chain records status=incomplete."""
        tel = telemetry_factory()
        wrapped = FrameworkError()
        wrapped.__context__ = TurnLimitExceeded(3, 2)
        tel.start("h").finish(wrapped)
        assert sample(registry, "subagent_completions_total", depth="1", status="incomplete") == 1

    def test_an_explicit_outcome_wins(self, telemetry_factory: Factory, registry: CollectorRegistry) -> None:
        """status= / error_type= record that outcome whatever exc is."""
        tel = telemetry_factory()
        tel.start("a").finish(FrameworkError(), status=Status.INCOMPLETE)
        tel.start("b").finish(error_type="cancelled")
        assert sample(registry, "subagent_completions_total", depth="1", status="incomplete") == 1
        assert sample(registry, "subagent_errors_total", depth="1", error_type="cancelled") == 1

    def test_finish_without_arguments_completes(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """finish() is a complete outcome (or incomplete after mark_incomplete)."""
        tel = telemetry_factory()
        tel.start("a").finish()
        b = tel.start("b")
        b.mark_incomplete()
        b.finish()
        assert sample(registry, "subagent_completions_total", depth="1", status="complete") == 1
        assert sample(registry, "subagent_completions_total", depth="1", status="incomplete") == 1

    def test_only_the_first_outcome_counts(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """finish/record_completion/record_error return False once an outcome was recorded."""
        tel = telemetry_factory()
        h = tel.start("h")
        assert h.finish() is True
        assert h.finish(FrameworkError()) is False
        assert h.record_error() is False
        assert h.record_completion(turns=9) is False
        assert_invariant(registry, 3)
        assert sample(registry, "subagent_turns_used_sum", depth="1") == 0

    def test_finish_ends_a_with_execution_early_without_a_second_outcome(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """An execution finished inside its with block records that outcome once; current is restored."""
        tel = telemetry_factory()
        with tel.execution("a") as run:
            assert run.finish(error_type=ErrorType.TIMEOUT) is True
            assert tel.current() is None
        assert tel.current() is None
        assert sample(registry, "subagent_errors_total", depth="1", error_type="timeout") == 1
        assert_invariant(registry, 3)
        assert tel._slots.in_use == 0

    def test_finish_frees_the_slot(self, telemetry_factory: Factory) -> None:
        """A finished handle gives its concurrency slot back."""
        tel = telemetry_factory(make_config(max_concurrency=1, concurrency_timeout=0.01))
        tel.start("a").finish()
        tel.start("b").finish()
        assert tel._slots.in_use == 0

    def test_finish_of_an_execution_never_entered_records_nothing(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """There is nothing to end before admission."""
        tel = telemetry_factory()
        assert tel.execution("a").finish() is False
        assert_invariant(registry, 3)
        assert sample(registry, "subagent_executions_total", depth="1") == 0

    def test_concurrent_outcomes_record_exactly_one(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Callbacks racing on threads to end one handle record one outcome."""
        tel = telemetry_factory()
        h = tel.start("h")
        barrier = threading.Barrier(8)
        results: list[bool] = []

        def end(i: int) -> None:
            barrier.wait()
            results.append(h.record_completion() if i % 2 else h.finish(FrameworkError()))

        threads = [threading.Thread(target=end, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results.count(True) == 1
        assert_invariant(registry, 3)


class TestParents:
    def test_start_defaults_its_parent_to_the_current_execution(self, telemetry_factory: Factory) -> None:
        """A handle started inside an execution is its child, one level deeper."""
        tel = telemetry_factory()
        with tel.execution("outer") as outer:
            h = tel.start("h")
        assert (h.parent, h.depth) == (outer, 2)
        h.finish()

    def test_parent_none_is_top_level(self, telemetry_factory: Factory) -> None:
        """parent=None starts a top-level handle even inside an execution."""
        tel = telemetry_factory()
        with tel.execution("outer"):
            h = tel.start("h", parent=None)
        assert (h.parent, h.depth) == (None, 1)
        h.finish()

    def test_a_handle_can_be_the_parent(self, telemetry_factory: Factory) -> None:
        """parent=<handle> nests one level under it, in any context."""
        tel = telemetry_factory()
        coordinator = tel.start("coordinator")
        child = tel.start("child", parent=coordinator)
        grandchild = tel.start("grandchild", parent=child)
        assert [coordinator.depth, child.depth, grandchild.depth] == [1, 2, 3]
        for h in (grandchild, child, coordinator):
            h.finish()

    def test_a_parent_at_max_depth_refuses_the_child(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Depth through explicit parents is limited like nesting."""
        tel = telemetry_factory(make_config(max_depth=2))
        a = tel.start("a")
        b = tel.start("b", parent=a)
        with pytest.raises(DepthLimitExceeded):
            tel.start("c", parent=b)
        assert sample(registry, "subagent_errors_total", depth="3", error_type="max_depth_reached") == 1
        b.finish()
        a.finish()

    def test_a_handle_does_not_become_current_by_itself(self, telemetry_factory: Factory) -> None:
        """start() leaves the current execution as it is."""
        tel = telemetry_factory()
        h = tel.start("h")
        assert tel.current() is None
        h.finish()

    def test_use_makes_a_handle_current_for_the_block(self, telemetry_factory: Factory) -> None:
        """Inside tel.use(h), executions and handles nest under h; the previous current comes back."""
        tel = telemetry_factory()
        h = tel.start("h")
        with tel.use(h) as used:
            assert used is h
            assert tel.current() is h
            with tel.execution("inner") as inner:
                child = tel.start("child")
        assert tel.current() is None
        assert (inner.parent, inner.depth, child.parent, child.depth) == (h, 2, inner, 3)
        child.finish()
        h.finish()

    def test_use_works_in_async_code_across_tasks(self, telemetry_factory: Factory) -> None:
        """Tasks created inside tel.use(h) inherit h as their parent."""
        tel = telemetry_factory()

        async def child() -> int:
            async with tel.execution("child") as run:
                return run.depth

        async def main() -> list[int]:
            h = await tel.astart("h")
            with tel.use(h):
                depths = await asyncio.gather(child(), child())
            h.record_completion()
            return depths

        assert asyncio.run(main()) == [2, 2]

    def test_use_restores_the_previous_execution_when_ended_in_another_context(
        self, telemetry_factory: Factory
    ) -> None:
        """A use() block entered in one context and exited in a copy of it restores the copy."""
        tel = telemetry_factory()
        h = tel.start("h")
        with tel.execution("outer") as outer:
            block = tel.use(h)
            ctx = contextvars.copy_context()
            ctx.run(block.__enter__)
            inner = ctx.copy()
            inner.run(block.__exit__, None, None, None)
            assert inner.run(tel.current) is outer
        h.finish()

    def test_use_none_makes_the_block_top_level(self, telemetry_factory: Factory) -> None:
        """tel.use(None): executions in the block are top-level."""
        tel = telemetry_factory()
        with tel.execution("outer"), tel.use(None), tel.execution("detached") as run:
            assert run.depth == 1

    def test_use_refuses_what_is_not_an_execution(self, telemetry_factory: Factory) -> None:
        """A wrong argument is a programming error, raised at once."""
        tel = telemetry_factory()
        with pytest.raises(TypeError, match=r"tel\.use"):
            tel.use("h")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="parent must be"):
            tel.start("h", parent="p")  # type: ignore[arg-type]


class TestAdmissionWithoutException:
    def test_try_start_returns_the_refusal_counted_once(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """try_start returns the QuotaExceeded instead of raising it; it is counted once."""
        tel = telemetry_factory(make_config(max_executions=1))
        first = tel.try_start("a")
        assert isinstance(first, SubagentMetrics)
        refusal = tel.try_start("b")
        assert isinstance(refusal, ExecutionLimitReached)
        assert sample(registry, "subagent_errors_total", depth="1", error_type="quota_exceeded") == 1
        assert sample(registry, "subagent_quota_rejections_total", resource="executions") == 1
        first.finish()
        assert_invariant(registry, 3)

    def test_astart_admits_without_raising_past_the_event_loop(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """astart waits for a concurrency slot on the loop (top level), then admits."""
        tel = telemetry_factory(make_config(max_concurrency=1, concurrency_timeout=5))

        async def main() -> int:
            holder = await tel.astart("holder")
            waiter = asyncio.create_task(tel.astart("waiter"))
            await asyncio.sleep(0.05)
            assert not waiter.done()
            holder.record_completion()
            handle = await waiter
            handle.record_completion()
            return handle.depth

        assert asyncio.run(main()) == 1
        assert_invariant(registry, 3)

    def test_try_astart_returns_the_refusal(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A nested async admission without a free slot returns ConcurrencyLimitReached."""
        tel = telemetry_factory(make_config(max_concurrency=1))

        async def main() -> object:
            parent = await tel.astart("parent")
            refusal = await tel.try_astart("child", parent=parent)
            parent.finish()
            return refusal

        assert isinstance(asyncio.run(main()), ConcurrencyLimitReached)
        assert sample(registry, "subagent_quota_rejections_total", resource="concurrency") == 1
        assert_invariant(registry, 3)

    def test_try_start_still_raises_programming_errors(self, telemetry_factory: Factory) -> None:
        """Only quota refusals are returned; an invalid argument raises."""
        tel = telemetry_factory()
        with pytest.raises(ValueError, match="depth"):
            tel.try_start("h", depth=0)
        assert issubclass(ExecutionLimitReached, QuotaExceeded)

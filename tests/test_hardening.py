"""Issue 11, execution lifecycle: classifier values, never-admitted handles, context resets that fail,
out-of-order exits, token values, unencodable names and explicit depths cannot corrupt the numbers,
leak a slot or break an exporter."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import math
import re
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from subagent_telemetry import (
    Config,
    DepthLimitExceeded,
    ExecutionLimitReached,
    SubagentTelemetry,
    TokenLimitExceeded,
)
from subagent_telemetry._text import NAME_MAX_CHARS
from tests.conftest import make_config
from tests.test_execution import assert_invariant, sample, total

Factory = Callable[..., SubagentTelemetry]


class Boom(Exception):
    """The agent's own failure."""


def series(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every (sample name, labels) the registry exposes."""
    return {(s.name, tuple(sorted(s.labels.items()))) for f in registry.collect() for s in f.samples}


# -- 1. error_classifier values outside the vocabulary ---------------------------------------------------

OUTSIDE_VOCABULARY = st.one_of(
    st.text(max_size=20).filter(lambda t: t not in {"complete", "incomplete"} and not t.isidentifier()),
    st.integers(),
    st.floats(allow_nan=True),
    st.lists(st.integers(), max_size=2),
    st.just(object()),
    st.just("nope"),
)


class TestClassifierOutsideTheVocabulary:
    @settings(max_examples=40, deadline=None)
    @given(value=OUTSIDE_VOCABULARY)
    @example(value="llm exploded")
    @example(value=[1])
    def test_default_classification_and_the_agent_exception_propagates(self, value: Any) -> None:
        """Any other value: the default rules decide, the same exception object escapes, the slot is free."""
        registry = CollectorRegistry()
        tel = SubagentTelemetry(
            make_config(max_concurrency=1), registry=registry, error_classifier=lambda e: value
        )
        raised = Boom("agent failure")
        with pytest.raises(Boom) as caught, tel.execution("a"):
            raise raised
        assert caught.value is raised
        assert sample(registry, "subagent_errors_total", depth="1", error_type="execution_failed") == 1
        assert tel._slots.in_use == 0
        assert_invariant(registry, 3)

    def test_vocabulary_strings_are_accepted(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A classifier may return the string value of an ErrorType or Status."""
        tel = telemetry_factory(error_classifier=lambda e: "invalid_input")
        with pytest.raises(Boom), tel.execution("a"):
            raise Boom
        assert sample(registry, "subagent_errors_total", depth="1", error_type="invalid_input") == 1

    def test_the_wrong_value_is_logged(
        self, telemetry_factory: Factory, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The classifier's mistake is visible in the log, not in agent code."""
        tel = telemetry_factory(error_classifier=lambda e: "nope")
        with pytest.raises(Boom), tel.execution("a"):
            raise Boom
        assert "neither an ErrorType nor a Status" in caplog.text


# -- 2. handles that were never admitted ------------------------------------------------------------------


class TestNeverAdmittedHandles:
    @pytest.mark.parametrize(
        "kwargs",
        [{"depth": 0}, {"depth": -3}, {"depth": "2"}, {"depth": 1.0}, {"max_turns": 0}, {"max_turns": True}],
    )
    def test_a_handle_failing_validation_records_nothing_when_collected(
        self, telemetry_factory: Factory, registry: CollectorRegistry, kwargs: dict[str, Any]
    ) -> None:
        """Invalid arguments raise ValueError; the half-built handle is never finalized as aborted."""
        tel = telemetry_factory()
        with pytest.raises(ValueError, match="must be an int"):
            tel.start("bad", **kwargs)
        gc.collect()
        assert total(registry, "subagent_errors_total") == 0
        assert total(registry, "subagent_executions_total") == 0
        assert (
            min(s.value for f in registry.collect() for s in f.samples if s.name == "subagent_active_count")
            == 0
        )

    def test_a_refused_handle_records_only_its_refusal_when_collected(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """A refusal counts once; collecting the refused handle adds no aborted error."""
        tel = telemetry_factory(make_config(max_executions=1))
        tel.start("first").finish()
        for _ in range(3):
            with pytest.raises(ExecutionLimitReached):
                tel.start("refused")
        assert isinstance(tel.try_start("refused"), ExecutionLimitReached)
        gc.collect()
        assert sample(registry, "subagent_errors_total", depth="1", error_type="aborted") == 0
        assert sample(registry, "subagent_errors_total", depth="1", error_type="quota_exceeded") == 4
        assert_invariant(registry, 3)

    def test_a_handle_whose_store_fails_records_nothing_when_collected(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Admission failing with a non-quota error frees the slot and leaves nothing to finalize."""

        class BrokenStore:
            def reserve(self, limits: object) -> object:
                raise ConnectionError("store down")

            def usage(self) -> Any:
                from subagent_telemetry import QuotaUsage

                return QuotaUsage(0, 0, 0.0)

        tel = telemetry_factory(store=BrokenStore())
        with pytest.raises(ConnectionError):
            tel.start("h")
        gc.collect()
        assert tel._slots.in_use == 0
        assert total(registry, "subagent_errors_total") == 0
        assert total(registry, "subagent_active_count") == 0


# -- 3. the context-variable reset fails at exit ----------------------------------------------------------


class TestExitInAnotherContext:
    def test_a_generator_entered_in_a_copied_context_and_closed_outside_records_its_outcome(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """The reset cannot succeed; the outcome is recorded, the slot released, nothing raises."""
        tel = telemetry_factory(make_config(max_concurrency=1, concurrency_timeout=0.5))

        def gen() -> Generator[int, None, None]:
            with tel.execution("g"):
                yield 1
                yield 2

        g = gen()
        ctx = contextvars.copy_context()
        assert ctx.run(next, g) == 1
        g.close()
        assert sample(registry, "subagent_errors_total", depth="1", error_type="interrupted") == 1
        assert tel._slots.in_use == 0
        assert ctx.run(tel.current) is None
        with tel.execution("next") as run:
            assert run.depth == 1
        assert_invariant(registry, 3)

    def test_copy_context_run_enter_then_exit_outside(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """__enter__ in copy_context().run and __exit__ in the caller's context still end the execution."""
        tel = telemetry_factory()
        cm = tel.execution("a")
        ctx = contextvars.copy_context()
        ctx.run(cm.__enter__)
        cm.__exit__(None, None, None)
        assert sample(registry, "subagent_completions_total", depth="1", status="complete") == 1
        assert ctx.run(tel.current) is None
        assert tel.current() is None
        assert_invariant(registry, 3)

    def test_async_generators_abandoned_by_break_do_not_leak_slots(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """`break` out of `async for` without aclosing: the loop finalizes the generator in another task;
        with max_concurrency=2, ten of them still leave every slot free."""
        tel = telemetry_factory(make_config(max_concurrency=2, concurrency_timeout=5))

        async def agen() -> Any:
            async with tel.execution("stream"):
                yield 1
                yield 2

        async def finalized() -> None:
            """The loop closes abandoned generators in tasks of their own: let them run.

            A full collection only now and then: in a large test process one takes long enough that
            calling it on every poll made this test time out under load.
            """
            for attempt in range(1000):
                if tel._slots.in_use == 0:
                    return
                if attempt % 50 == 49:
                    gc.collect()
                await asyncio.sleep(0.01)

        async def main() -> int:
            for _ in range(10):
                async for _item in agen():
                    break
                await finalized()
            async with tel.execution("after") as run:
                return run.depth

        assert asyncio.run(asyncio.wait_for(main(), 120)) == 1
        assert tel._slots.in_use == 0
        assert total(registry, "subagent_executions_total") == 11
        assert_invariant(registry, 3)


# -- 4. out-of-order exits ----------------------------------------------------------------------------------


def exit_out_of_order(tel: SubagentTelemetry) -> None:
    """Two generators enter executions a then b (b nested in a) and are closed a first, then b."""

    def gen(name: str) -> Generator[None, None, None]:
        with tel.execution(name):
            yield

    first, second = gen("a"), gen("b")
    next(first)
    next(second)
    first.close()
    second.close()


class TestOutOfOrderExits:
    def test_interleaved_generators_leave_no_finished_execution_current(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Two generators closed in entry order: nothing finished is current; top level is depth 1 again."""
        tel = telemetry_factory()

        exit_out_of_order(tel)
        assert tel.current() is None
        with tel.execution("next") as run:
            assert (run.depth, run.parent) == (1, None)
        assert_invariant(registry, 3)

    def test_zip_of_two_instrumented_generators(self, telemetry_factory: Factory) -> None:
        """zip() exhausts its generators in an order that exits executions out of order."""
        tel = telemetry_factory()

        def numbers(name: str) -> Iterator[int]:
            with tel.execution(name):
                yield from range(3)

        pairs = list(zip(numbers("left"), numbers("right"), strict=False))
        assert len(pairs) == 3
        gc.collect()
        assert tel.current() is None
        with tel.execution("next") as run:
            assert run.depth == 1

    @settings(max_examples=20, deadline=None)
    @given(
        steps=st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=30),
        closers=st.lists(st.sampled_from(["here", "copy", "gc"]), min_size=4, max_size=4),
    )
    def test_any_interleaving_and_closing_context_keeps_the_books(
        self, steps: list[tuple[int, bool]], closers: list[str]
    ) -> None:
        """Four generators stepped in any order, closed here, in a copied context or by the collector:
        the invariant holds, no slot leaks, nothing finished is current, top level is depth 1."""
        registry = CollectorRegistry()
        tel = SubagentTelemetry(make_config(max_depth=5, max_concurrency=8), registry=registry)

        def gen(i: int) -> Generator[None, None, None]:
            with tel.execution(f"g{i}"):
                while True:
                    yield

        gens: list[Generator[None, None, None] | None] = [gen(i) for i in range(4)]
        for index, close in steps:
            g = gens[index]
            if g is None:
                continue
            if not close:
                next(g)
                continue
            how = closers[index]
            if how == "here":
                g.close()
            elif how == "copy":
                contextvars.copy_context().run(g.close)
            gens[index] = None
            del g
            if how == "gc":
                gc.collect()
            assert tel.current() is None or not tel.current()._finished  # type: ignore[union-attr]
        for i, g in enumerate(gens):
            if g is not None:
                gens[i] = None
                g.close()
        gc.collect()
        assert tel.current() is None
        assert tel._slots.in_use == 0
        with tel.execution("next") as run:
            assert run.depth == 1
        assert_invariant(registry, 5)

    def test_spans_after_out_of_order_exits_are_not_children_of_ended_spans(self) -> None:
        """With tracing on, the OTel context is repaired too: the next top-level span is a root."""
        pytest.importorskip("opentelemetry.sdk")
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tel = SubagentTelemetry(make_config(), registry=CollectorRegistry(), tracer_provider=provider)

        exit_out_of_order(tel)
        assert not trace.get_current_span().is_recording()
        with tel.execution("next"):
            pass
        spans = {s.name: s for s in exporter.get_finished_spans()}
        assert spans["invoke_agent next"].parent is None
        provider.shutdown()


class TestCancellationPoints:
    @settings(max_examples=40, deadline=None)
    @given(
        plans=st.lists(
            st.tuples(st.integers(0, 6), st.sampled_from(["with", "handle", "use"])), min_size=1, max_size=6
        )
    )
    def test_cancelling_anywhere_keeps_the_books(self, plans: list[tuple[int, str]]) -> None:
        """Tasks holding nested executions, handles or use() blocks, cancelled after any number of loop
        steps: one outcome each, no slot left, nothing finished current, top level is depth 1 again."""
        registry = CollectorRegistry()
        tel = SubagentTelemetry(make_config(max_depth=4, max_concurrency=50), registry=registry)

        async def nested() -> None:
            async with tel.execution("child"):
                for _ in range(3):
                    await asyncio.sleep(0)

        async def worker(form: str) -> None:
            if form == "with":
                async with tel.execution("parent"):
                    await asyncio.sleep(0)
                    await nested()
                return
            handle = await tel.astart("handle")
            try:
                if form == "use":
                    with tel.use(handle):
                        await nested()
                else:
                    child = await tel.astart("child", parent=handle)
                    await asyncio.sleep(0)
                    child.record_completion()
            except BaseException as exc:
                handle.finish(exc)
                raise
            handle.record_completion()

        async def main() -> None:
            tasks = [(asyncio.create_task(worker(form)), steps) for steps, form in plans]
            for step in range(7):
                for task, steps in tasks:
                    if steps == step:
                        task.cancel()
                await asyncio.sleep(0)
            await asyncio.gather(*(task for task, _ in tasks), return_exceptions=True)

        asyncio.run(main())
        gc.collect()
        assert tel._slots.in_use == 0
        assert tel.current() is None
        with tel.execution("next") as run:
            assert run.depth == 1
        assert_invariant(registry, 4)


# -- 6. token values --------------------------------------------------------------------------------------

NOT_COUNTS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).filter(
        lambda f: not (f.is_integer() and 0 <= f <= 10**12)
    ),
    st.integers(max_value=-1),
    st.integers(min_value=10**12 + 1),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
)
COUNTS = st.one_of(st.integers(0, 10**6), st.integers(0, 10**6).map(float))


class TestTokenValues:
    @pytest.mark.parametrize(
        "value", [math.nan, math.inf, -math.inf, 1.5, True, False, -1, 10**30, "12", None, 2**63]
    )
    def test_a_bad_count_is_dropped_and_the_budget_stays_enforced(
        self, telemetry_factory: Factory, registry: CollectorRegistry, value: Any
    ) -> None:
        """The call is dropped before the store; the session total stays a finite int; the budget holds."""
        tel = telemetry_factory(make_config(max_total_tokens=100))
        with tel.execution("a") as run:
            run.record_tokens(input=value)
            run.record_tokens(output=value)
            run.record_response(total=value)
        usage = tel.tracker.get_usage()
        assert type(usage.total_tokens) is int
        assert usage.total_tokens == 0
        with pytest.raises(TokenLimitExceeded), tel.execution("b") as run:
            run.record_tokens(input=101)
        with pytest.raises(TokenLimitExceeded):
            tel.start("refused")
        assert math.isfinite(sample(registry, "subagent_quota_used", resource="tokens", session="default"))

    @settings(max_examples=80, deadline=None)
    @given(
        calls=st.lists(st.tuples(st.one_of(COUNTS, NOT_COUNTS), st.one_of(COUNTS, NOT_COUNTS)), max_size=8)
    )
    @example(calls=[(math.nan, 5)])
    @example(calls=[(10.0, 2)])
    def test_only_whole_counts_reach_the_total(self, calls: list[tuple[Any, Any]]) -> None:
        """The session total is exactly the sum of the calls whose counts are both valid."""
        registry = CollectorRegistry()
        tel = SubagentTelemetry(make_config(), registry=registry)
        expected = 0
        with tel.execution("a") as run:
            for input_value, output_value in calls:
                run.record_tokens(input=input_value, output=output_value)
                valid = all(
                    type(v) in (int, float) and float(v).is_integer() and 0 <= v <= 10**12
                    for v in (input_value, output_value)
                )
                if valid:
                    expected += int(input_value) + int(output_value)
        assert tel.tracker.get_usage().total_tokens == expected == run.tokens
        assert sample(registry, "subagent_tokens_consumed_sum", depth="1") == expected

    def test_the_largest_count_is_accepted_and_one_more_is_dropped(self, telemetry_factory: Factory) -> None:
        """A call adds at most MAX_TOKENS_PER_CALL, on the fast path and the checked path alike."""
        from subagent_telemetry.quota._tracker import MAX_TOKENS_PER_CALL

        tel = telemetry_factory()
        with tel.execution("a") as run:
            run.record_tokens(input=MAX_TOKENS_PER_CALL - 1, output=1)
            run.record_tokens(input=MAX_TOKENS_PER_CALL, output=1)
            run.record_tokens(input=MAX_TOKENS_PER_CALL + 1)
            run.record_tokens(output=float(MAX_TOKENS_PER_CALL))
            run.record_tokens(input=float(MAX_TOKENS_PER_CALL), output=1.0)
            run.record_tokens(total=MAX_TOKENS_PER_CALL + 1)
            run.record_response(total=MAX_TOKENS_PER_CALL)
        assert run.tokens == 3 * MAX_TOKENS_PER_CALL

    def test_explicit_totals_follow_the_same_rule(
        self, telemetry_factory: Factory, caplog: pytest.LogCaptureFixture
    ) -> None:
        """record_completion(turns=nan, tokens=inf) keeps the recorded counts and warns."""
        tel = telemetry_factory()
        h = tel.start("h")
        h.record_response(input=4)
        h.record_completion(turns=math.nan, tokens=math.inf)
        assert (h.turns, h.tokens) == (1, 4)
        assert "counts dropped" in caplog.text

    @pytest.mark.parametrize("value", [math.nan, math.inf, 1.5, True, -1, 10**13])
    def test_the_tracker_refuses_what_is_not_a_count(self, value: Any) -> None:
        """QuotaTracker.record_execution raises ValueError before its store sees the value."""
        from subagent_telemetry import QuotaLimits, QuotaTracker

        tracker = QuotaTracker(QuotaLimits(max_total_tokens=10))
        with pytest.raises(ValueError, match="whole number"):
            tracker.record_execution(value)
        assert tracker.get_usage().total_tokens == 0


# -- 7. names that are not encodable text -----------------------------------------------------------------

NASTY_NAMES = st.text(
    st.one_of(
        st.characters(),
        st.characters(categories=["Cs"]),
        st.sampled_from('\x00\n\r\t\x85\x7f\u2028\u2029"\\{}'),
    ),
    max_size=40,
)


SURROGATES = re.compile("[\ud800-\udfff]")
#: What no sanitized name may contain: C0/C1 controls, DEL, line/paragraph separators, surrogates.
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _agent_label_config() -> Config:
    return Config.model_validate(
        {
            "telemetry": {"log_executions": False, "agent_label": {"enabled": True, "max_values": 1000}},
        }
    )


class TestNames:
    @settings(max_examples=60, deadline=None)
    @given(name=NASTY_NAMES, model=NASTY_NAMES)
    @example(name="\ud800", model="\udfff")
    @example(name="a\nb\x00c", model="m\u2028")
    def test_every_exposition_encodes_whatever_the_name(self, name: str, model: str) -> None:
        """Names and model names are sanitized once: both exposition formats keep working."""
        registry = CollectorRegistry()
        tel = SubagentTelemetry(_agent_label_config(), registry=registry)
        with tel.execution(name) as run:
            run.record_response(input=1, model=model, provider=model)
        handle = tel.start(name, model=model)
        handle.finish()
        for text in (run.name, run.agent, run.model, handle.name):
            assert text is not None
            text.encode("utf-8")
            assert not UNSAFE.search(text)
            assert len(text) <= NAME_MAX_CHARS
        generate_latest(registry).decode("utf-8")
        openmetrics_latest(registry).decode("utf-8")

    def test_printable_names_are_kept_as_they_are(self, telemetry_factory: Factory) -> None:
        """Ordinary names (spaces, accents, emoji) are not touched."""
        tel = telemetry_factory()
        with tel.execution("résumé writer 🚀") as run:
            pass
        assert run.name == "résumé writer 🚀"

    def test_long_names_are_cut(self, telemetry_factory: Factory) -> None:
        """A name is at most NAME_MAX_CHARS characters."""
        tel = telemetry_factory()
        with tel.execution("x" * 10_000) as run:
            pass
        assert run.name == "x" * NAME_MAX_CHARS

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(text=NASTY_NAMES, repeat=st.integers(1, 400))
    @example(text="\ud800", repeat=400)
    def test_set_output_never_raises_and_returns_encodable_text(
        self, telemetry_factory: Factory, text: str, repeat: int
    ) -> None:
        """Long or short, lone surrogates or not: set_output returns encodable text within the limit."""
        tel = telemetry_factory(make_config(output_max_size=1024))
        with tel.execution("a") as run:
            kept = run.set_output(text * repeat)
        assert len(kept.encode("utf-8")) <= 1024
        assert not SURROGATES.search(kept)

    @pytest.mark.parametrize("value", [None, b"bytes", 42])
    def test_set_output_of_something_that_is_not_text_returns_it_as_is(
        self, telemetry_factory: Factory, value: object
    ) -> None:
        """set_output(None) (a model that answered nothing) returns None instead of raising TypeError."""
        tel = telemetry_factory()
        with tel.execution("a") as run:
            assert run.set_output(value) is value  # type: ignore[arg-type]
        assert run.status == "complete"


# -- 8. explicit depths --------------------------------------------------------------------------------------


class TestExplicitDepth:
    def test_two_thousand_distinct_depths_do_not_grow_the_exposition(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Depths past max_depth are refused under the one label max_depth + 1."""
        tel = telemetry_factory(make_config(max_depth=3))
        with pytest.raises(DepthLimitExceeded):
            tel.start("deep", depth=4)
        before = series(registry)
        size = len(generate_latest(registry))
        for depth in range(5, 2005):
            refusal = tel.try_start("deep", depth=depth)
            assert isinstance(refusal, DepthLimitExceeded)
        assert series(registry) == before
        assert len(generate_latest(registry)) <= size + 20
        assert sample(registry, "subagent_errors_total", depth="4", error_type="max_depth_reached") == 2001
        assert {labels for name, labels in series(registry) if name == "subagent_executions_total"} == {
            (("depth", str(d)),) for d in range(1, 5)
        }

    def test_the_refusal_names_the_depth_asked_for(self, telemetry_factory: Factory) -> None:
        """The exception keeps the real depth; only the label is bounded."""
        tel = telemetry_factory(make_config(max_depth=3))
        with pytest.raises(DepthLimitExceeded, match="depth 2000 > 3"):
            tel.start("deep", depth=2000)

"""Money in executions: each model response priced at the edge, charged to the budget, exported."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import genai_prices
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from subagent_telemetry import (
    Config,
    CostLimitExceeded,
    QuotaExceeded,
    SubagentTelemetry,
    TokenLimitExceeded,
)

NANO = 10**9


def _config(
    subagent: dict[str, Any] | None = None,
    cost: dict[str, Any] | None = None,
    telemetry: dict[str, Any] | None = None,
) -> Config:
    return Config.model_validate(
        {
            "agent": {"subagent": {"max_concurrency": 100, **(subagent or {})}},
            "telemetry": {"log_executions": False, **(telemetry or {})},
            "cost": cost or {},
        }
    )


@pytest.fixture
def make() -> Iterator[Any]:
    made: list[SubagentTelemetry] = []

    def factory(config: Config, **kwargs: Any) -> tuple[SubagentTelemetry, CollectorRegistry]:
        registry = CollectorRegistry()
        tel = SubagentTelemetry(config, registry=registry, **kwargs)
        made.append(tel)
        return tel, registry

    yield factory
    for tel in made:
        tel.shutdown(timeout_seconds=1)


def _reference(model: str, provider: str, **usage: int) -> Decimal:
    return genai_prices.calc_price(genai_prices.Usage(**usage), model, provider_id=provider).total_price


class TestPricing:
    def test_a_response_costs_what_genai_prices_says(self, make: Any) -> None:
        """record_response(model=...) charges calc_price()'s figure, cache reads at their price."""
        tel, _ = make(_config())
        with tel.execution("a") as run:
            run.record_response(1_000, 200, model="gpt-4o", provider="openai", cache_read=300)
        expected = _reference(
            "gpt-4o", "openai", input_tokens=1_000, output_tokens=200, cache_read_tokens=300
        )
        assert Decimal(run.cost_nanos).scaleb(-9) == expected
        assert tel.tracker.get_usage().cost_nanos == run.cost_nanos

    def test_the_model_is_remembered_between_responses(self, make: Any) -> None:
        """A model given once (or at start) prices the execution's later responses too."""
        tel, _ = make(_config())
        with tel.execution("a") as run:
            run.record_response(1_000, 0, model="gpt-4o-mini", provider="openai")
            run.record_response(1_000, 0)
        assert run.cost_nanos == 2 * 150_000

    def test_an_override_wins(self, make: Any) -> None:
        """cost.prices replaces the bundled price of a model."""
        tel, _ = make(_config(cost={"prices": {"gpt-4o": {"input": 1, "output": 1}}}))
        with tel.execution("a") as run:
            run.record_response(500_000, 500_000, model="gpt-4o", provider="openai")
        assert run.cost_nanos == NANO

    def test_sub_nano_costs_accumulate_exactly(self, make: Any) -> None:
        """100 000 one-token responses at $0.000375/M (0.375 nano-dollars each) cost exactly 37 500
        nano-dollars: the execution keeps the exact remainder, the store gets the whole part."""
        tel, _ = make(_config(cost={"prices": {"tiny": {"input": "0.000375"}}}))
        with tel.execution("a") as run:
            for _ in range(100_000):
                run.record_tokens(1, model="tiny")
        assert run.cost_nanos == 37_500
        assert tel.tracker.get_usage().cost_nanos == 37_500

    def test_parts_larger_than_their_total_are_dropped_with_a_warning(
        self, make: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        """cache_read beyond input is not a valid split: priced without the parts, and logged."""
        tel, _ = make(_config(cost={"prices": {"m": {"input": 2, "cache_read": 1}}}))
        with tel.execution("a") as run:
            run.record_response(100, 0, model="m", cache_read=500)
        assert run.cost_nanos == 200_000
        assert run.cache_read_tokens == 0
        assert "cache_read=500" in caplog.text

    def test_tokens_without_a_model_cost_nothing(self, make: Any) -> None:
        """Recording without any model keeps today's behaviour: tokens only."""
        tel, registry = make(_config())
        with tel.execution("a") as run:
            run.record_response(1_000, 1_000)
        assert (run.cost_nanos, run.unpriced_tokens) == (0, 0)
        assert registry.get_sample_value("subagent_execution_cost_count", {"depth": "1"}) == 0


class TestUnpriced:
    def test_unknown_model_is_counted_as_unpriced_and_warned_once(
        self, make: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An unknown model costs nothing, its tokens land in the unpriced counter, one warning."""
        tel, registry = make(_config())
        with caplog.at_level(logging.WARNING, "subagent_telemetry"):
            for _ in range(3):
                with tel.execution("a") as run:
                    run.record_response(100, 50, model="house-model-7")
        assert registry.get_sample_value("subagent_unpriced_tokens_total", {"depth": "1"}) == 450
        assert registry.get_sample_value("subagent_cost_total", {"depth": "1"}) == 0
        assert sum("house-model-7" in r.getMessage() for r in caplog.records) == 1

    def test_usage_without_a_split_is_unpriced(self, make: Any) -> None:
        """total= cannot be priced (no input/output split): it is counted as unpriced."""
        tel, _ = make(_config())
        with tel.execution("a") as run:
            run.record_tokens(total=500, model="gpt-4o", provider="openai")
        assert (run.cost_nanos, run.unpriced_tokens) == (0, 500)

    def test_unpriced_usage_is_refused_when_configured(self, make: Any) -> None:
        """cost.unpriced: refuse with a money budget raises CostLimitExceeded naming the model."""
        tel, registry = make(_config({"max_total_cost": 5}, {"unpriced": "refuse"}))
        with (
            pytest.raises(CostLimitExceeded, match="'house-model-7' has no price"),
            tel.execution("a") as run,
        ):
            run.record_response(100, 50, model="house-model-7")
        assert registry.get_sample_value("subagent_quota_rejections_total", {"resource": "cost"}) == 1

    def test_refused_unpriced_usage_still_charges_its_tokens_to_the_session(self, make: Any) -> None:
        """The refused response's tokens were spent: they reach the session total, so the token budget
        stays enforced for an agent that catches the refusal and goes on."""
        tel, _ = make(_config({"max_total_cost": 5, "max_total_tokens": 1_000}, {"unpriced": "refuse"}))
        with tel.execution("a") as run:
            with pytest.raises(CostLimitExceeded):
                run.record_tokens(600, 0, model="house-model-7")
            assert tel.tracker.get_usage().total_tokens == 600
            with pytest.raises(TokenLimitExceeded):
                run.record_tokens(600, 0)

    def test_unpriced_usage_is_allowed_without_a_money_budget(self, make: Any) -> None:
        """refuse only applies when max_total_cost is set: nothing to protect otherwise."""
        tel, _ = make(_config(cost={"unpriced": "refuse"}))
        with tel.execution("a") as run:
            run.record_response(100, 50, model="house-model-7")
        assert run.unpriced_tokens == 150


class TestBudget:
    def test_the_response_passing_the_budget_raises_and_stops_the_session(self, make: Any) -> None:
        """CostLimitExceeded from the response that passes max_total_cost; the next admission is
        refused; both counted as rejections with resource="cost"."""
        tel, registry = make(
            _config({"max_total_cost": "0.01"}, {"prices": {"m": {"input": 1_000, "output": 1_000}}})
        )
        with pytest.raises(CostLimitExceeded) as info, tel.execution("a") as run:
            for _ in range(100):
                run.record_response(3, 0, model="m")  # $0.003 each: the fourth passes $0.01.
        assert run.cost_nanos == 12_000_000
        assert info.value.used == Decimal("0.012")
        with pytest.raises(CostLimitExceeded):
            tel.execution("b").__enter__()
        assert registry.get_sample_value("subagent_quota_rejections_total", {"resource": "cost"}) == 2
        assert (
            registry.get_sample_value("subagent_errors_total", {"depth": "1", "error_type": "quota_exceeded"})
            == 2
        )

    def test_quota_gauges_show_money(self, make: Any) -> None:
        """subagent_quota_limit/used carry resource="cost" in currency units."""
        tel, registry = make(_config({"max_total_cost": 5}, {"prices": {"m": {"input": 1}}}))
        with tel.execution("a") as run:
            run.record_response(250_000, 0, model="m")
        labels = {"resource": "cost", "session": "default"}
        assert registry.get_sample_value("subagent_quota_limit", labels) == 5
        assert registry.get_sample_value("subagent_quota_used", labels) == 0.25

    def test_64_threads_overshoot_at_most_one_response_each(self, make: Any) -> None:
        """64 concurrent executions on one $1 budget: each stops at the response that passes it, so
        the total passes the limit by at most one response per execution."""
        tel, _ = make(_config({"max_total_cost": 1}, {"prices": {"m": {"input": 1}}}))
        last: list[int] = []
        barrier = threading.Barrier(64)

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            barrier.wait()
            try:
                with tel.execution("w") as run:
                    while True:
                        tokens = rng.randrange(1, 20_000)
                        try:
                            run.record_tokens(tokens, 0, model="m")  # Turns: not the point here.
                        except CostLimitExceeded:
                            last.append(tokens * 1_000)  # nano-units at $1 per million tokens
                            raise
            except QuotaExceeded:
                pass

        threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(64)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        spent = tel.tracker.get_usage().cost_nanos
        assert NANO < spent <= NANO + sum(last)

    def test_asyncio_tasks_overshoot_at_most_one_response_each(self, make: Any) -> None:
        """The same bound for asyncio tasks interleaving between responses."""
        tel, _ = make(_config({"max_total_cost": 1}, {"prices": {"m": {"input": 1}}}))
        last: list[int] = []

        async def task(seed: int) -> None:
            rng = random.Random(seed)
            try:
                async with tel.execution("t") as run:
                    while True:
                        await asyncio.sleep(0)
                        tokens = rng.randrange(1, 20_000)
                        try:
                            run.record_tokens(tokens, 0, model="m")  # Turns: not the point here.
                        except CostLimitExceeded:
                            last.append(tokens * 1_000)
                            raise
            except QuotaExceeded:
                pass

        async def main() -> None:
            await asyncio.gather(*(task(seed) for seed in range(64)))

        asyncio.run(main())
        spent = tel.tracker.get_usage().cost_nanos
        assert NANO < spent <= NANO + sum(last)


class TestMetrics:
    def test_cost_per_execution_by_depth(self, make: Any) -> None:
        """The histogram observes each finished execution's spend at its depth; the counter sums it."""
        tel, registry = make(_config(cost={"prices": {"m": {"input": 1}}}))
        with tel.execution("parent") as parent:
            parent.record_response(10_000, 0, model="m")
            with tel.execution("child") as child:
                child.record_response(20_000, 0, model="m")
        assert registry.get_sample_value("subagent_execution_cost_sum", {"depth": "1"}) == 0.01
        assert registry.get_sample_value("subagent_execution_cost_sum", {"depth": "2"}) == 0.02
        assert registry.get_sample_value("subagent_execution_cost_bucket", {"depth": "2", "le": "0.025"}) == 1
        assert registry.get_sample_value("subagent_cost_total", {"depth": "2"}) == 0.02

    def test_model_label_is_bounded(self, make: Any) -> None:
        """With telemetry.model_label on, the first max_values models are labels, the rest `other`."""
        tel, registry = make(
            _config(
                cost={"prices": {name: {"input": 1} for name in ("a", "b", "c")}},
                telemetry={"model_label": {"enabled": True, "max_values": 2}},
            )
        )
        for name in ("a", "b", "c"):
            with tel.execution("x") as run:
                run.record_response(1_000_000, 0, model=name)
        for label in ("a", "b", "other"):
            assert registry.get_sample_value("subagent_cost_total", {"depth": "1", "model": label}) == 1


class TestTraces:
    def test_spans_carry_cost_usage_parts_and_subtree_cost(self) -> None:
        """invoke_agent spans: subagent.cost, subtree cost, gen_ai.usage cache/reasoning attributes."""
        exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        config = _config(cost={"prices": {"m": {"input": 1, "output": 2, "cache_read": "0.5"}}})
        tel = SubagentTelemetry(
            config,
            registry=CollectorRegistry(),
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )
        with tel.execution("parent") as parent:
            parent.record_response(1_000_000, 0, model="m", cache_read=500_000)
            with tel.execution("child") as child:
                child.record_response(0, 1_000_000, model="m", reasoning=10)
        spans = {span.name: span.attributes for span in exporter.get_finished_spans()}
        child_attrs, parent_attrs = spans["invoke_agent child"], spans["invoke_agent parent"]
        assert child_attrs["subagent.cost"] == 2.0
        assert child_attrs["gen_ai.usage.reasoning.output_tokens"] == 10
        assert parent_attrs["subagent.cost"] == 0.75
        assert parent_attrs["gen_ai.usage.cache_read.input_tokens"] == 500_000
        assert parent_attrs["subagent.subtree.cost"] == 2.75
        assert parent_attrs["subagent.cost.currency"] == "USD"
        tel.shutdown(timeout_seconds=1)
        meter_provider.shutdown()
        tracer_provider.shutdown()

"""The OpenTelemetry backend: catalog-driven instruments, nested spans, events, subtree tokens, exemplars."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from subagent_telemetry import _catalog as cat
from subagent_telemetry._config import Config
from subagent_telemetry._errors import DepthLimitExceeded, TokenLimitExceeded, TurnLimitExceeded
from subagent_telemetry._telemetry import SubagentTelemetry
from subagent_telemetry._vocab import REJECTION_RESOURCES
from subagent_telemetry.backends._otel_logs import RateLimitFilter
from subagent_telemetry.backends._otel_metrics import GENAI_DURATION_BUCKETS, GENAI_TOKEN_BUCKETS
from tests.support.expected_series import check, parity_config, run_reference_workload

#: What any process exports (the quota-store metrics need a shared store).
EXECUTION_AND_QUOTA_METRICS = (
    *cat.PER_EXECUTION,
    cat.QUOTA_LIMIT,
    cat.QUOTA_USED,
    cat.QUOTA_REJECTIONS,
    cat.MAX_CONCURRENCY,
)


@dataclass
class Otel:
    reader: InMemoryMetricReader
    spans: InMemorySpanExporter
    meter_provider: MeterProvider
    tracer_provider: TracerProvider

    def metrics(self) -> dict[str, Any]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}

    def points(self, otel_name: str) -> list[Any]:
        return list(self.metrics()[otel_name].data.data_points)

    def value(self, otel_name: str, **attrs: str) -> float | None:
        for point in self.points(otel_name):
            if dict(point.attributes) == attrs:
                return float(point.sum if isinstance(point, HistogramDataPoint) else point.value)
        return None

    def finished(self) -> dict[str, ReadableSpan]:
        return {s.name: s for s in self.spans.get_finished_spans()}


@pytest.fixture
def otel() -> Iterator[Otel]:
    reader = InMemoryMetricReader()
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Otel(reader, exporter, meter_provider, tracer_provider)
    meter_provider.shutdown()
    tracer_provider.shutdown()


def make(
    otel: Otel, config: Config | None = None, *, traces: bool = True, **kwargs: Any
) -> SubagentTelemetry:
    return SubagentTelemetry(
        config or parity_config(),
        registry=CollectorRegistry(),
        meter_provider=otel.meter_provider,
        tracer_provider=otel.tracer_provider if traces else None,
        **kwargs,
    )


def prom_name(spec: cat.MetricSpec) -> str:
    """OTLP→Prometheus naming for our units: ``s`` → ``_seconds``, ``{...}`` dropped, counters ``_total``."""
    name = spec.otel_name.replace(".", "_")
    if spec.otel_unit == "s":
        name += "_seconds"
    if spec.kind is cat.Kind.COUNTER:
        name += "_total"
    return name


class TestInstruments:
    def test_every_catalog_metric_is_an_instrument_with_its_otel_name_and_unit(self, otel: Otel) -> None:
        """Each catalog entry is exported under its otel_name with its otel_unit."""
        run_reference_workload(make(otel))
        exported = {name: m.unit for name, m in otel.metrics().items()}
        catalog = {spec.otel_name: spec.otel_unit for spec in cat.CATALOG}
        assert exported.items() <= catalog.items()
        assert set(exported) >= {spec.otel_name for spec in EXECUTION_AND_QUOTA_METRICS}

    @pytest.mark.parametrize("spec", cat.CATALOG, ids=lambda s: s.name)
    def test_translated_name_is_the_scrape_name(self, spec: cat.MetricSpec) -> None:
        """otel_name/otel_unit translate to exactly the catalog's Prometheus name."""
        assert prom_name(spec) == spec.name

    @pytest.mark.parametrize("spec", [s for s in cat.CATALOG if s.kind is cat.Kind.HISTOGRAM], ids=str)
    def test_histogram_boundaries_are_the_scrape_buckets(self, otel: Otel, spec: cat.MetricSpec) -> None:
        """Each histogram uses the catalog's bucket boundaries (the scrape path's)."""
        run_reference_workload(make(otel))
        (point, *_) = otel.points(spec.otel_name)
        assert tuple(point.explicit_bounds) == spec.buckets

    def test_active_count_is_a_non_monotonic_sum(self, otel: Otel) -> None:
        """The active count goes up while an execution runs and back down when it ends."""
        tel = make(otel)
        with tel.execution("a"):
            assert otel.value(cat.ACTIVE.otel_name, depth="1") == 1
        assert otel.value(cat.ACTIVE.otel_name, depth="1") == 0
        assert otel.metrics()[cat.ACTIVE.otel_name].data.is_monotonic is False

    def test_quota_gauges_carry_resource_and_session(self, otel: Otel) -> None:
        """subagent.quota_used is observed at collection time with the scrape path's labels."""
        tel = make(otel)
        with tel.execution("a") as run:
            run.record_tokens(input=7, output=3)
        assert otel.value(cat.QUOTA_USED.otel_name, resource="tokens", session="parity") == 10
        assert otel.value(cat.QUOTA_LIMIT.otel_name, resource="executions", session="parity") == 10

    def test_unlimited_budgets_have_no_limit_series(self, otel: Otel) -> None:
        """As on the scrape path, an unlimited resource exports no quota_limit point."""
        make(otel, Config())  # Every budget unlimited.
        metrics = otel.metrics()
        limits = (
            metrics[cat.QUOTA_LIMIT.otel_name].data.data_points
            if cat.QUOTA_LIMIT.otel_name in metrics
            else []
        )
        assert [p for p in limits if p.attributes["resource"] == "tokens"] == []
        assert cat.QUOTA_USED.otel_name in metrics

    def test_agent_label_is_added_when_enabled(self, otel: Otel) -> None:
        """With telemetry.agent_label on, per-execution points carry the mapped agent name."""
        config = parity_config(agent_label={"enabled": True})
        with make(otel, config).execution("planner"):
            pass
        assert otel.value(cat.EXECUTIONS.otel_name, depth="1", agent="planner") == 1

    def test_degraded_store_decisions_are_counted(self, otel: Otel) -> None:
        """A decision taken without the shared store is counted by policy and decision."""
        tel = make(otel)
        (backend,) = [b for b in tel._recorder.backends if hasattr(b, "tracing")]
        backend.store_degraded("local_allowance", "allowed")  # type: ignore[attr-defined]
        name = cat.QUOTA_STORE_DEGRADED.otel_name
        assert otel.value(name, policy="local_allowance", decision="allowed") == 1

    def test_counters_exist_at_zero_before_any_execution(self, otel: Otel) -> None:
        """Counters start at zero for every depth, so rates work on a fresh system (as on /metrics)."""
        make(otel)
        assert otel.value(cat.ERRORS.otel_name, depth="3", error_type="timeout") == 0


class TestParityWithTheScrapePath:
    def test_reference_workload_matches_the_expected_table_over_otel(self, otel: Otel) -> None:
        """The shared expected-series table holds for the OTel instruments, translated by name."""
        run_reference_workload(make(otel))
        assert check(lambda name, labels: _otel_lookup(otel, name, labels)) == []

    def test_reference_workload_matches_the_expected_table_on_the_registry(self, otel: Otel) -> None:
        """The same table holds for the scrape path's registry."""
        tel = make(otel)
        run_reference_workload(tel)
        assert check(tel.registry.get_sample_value) == []

    def test_both_paths_count_rejections_of_the_documented_resources_only(self, otel: Otel) -> None:
        """subagent_quota_rejections_total has the same resources on both paths, never `turns`."""
        tel = make(otel)
        with pytest.raises(TurnLimitExceeded), tel.execution("a", max_turns=1) as run:
            run.record_turn()
            run.record_turn()
        over_otlp = {p.attributes["resource"] for p in otel.points(cat.QUOTA_REJECTIONS.otel_name)}
        scraped = {
            s.labels["resource"]
            for family in tel.registry.collect()
            if family.name == cat.QUOTA_REJECTIONS.base_name
            for s in family.samples
            if s.name == cat.QUOTA_REJECTIONS.name
        }
        assert over_otlp == scraped == {r.value for r in REJECTION_RESOURCES}
        assert "turns" not in over_otlp

    def test_opentelemetry_prometheus_exporter_produces_the_scrape_names(self) -> None:
        """OTel's own Prometheus exporter names our instruments exactly like the scrape path."""
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        otel_registry = CollectorRegistry()
        provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=otel_registry)])
        tel = SubagentTelemetry(parity_config(), registry=CollectorRegistry(), meter_provider=provider)
        run_reference_workload(tel)
        scope = {"otel_scope_name": "subagent_telemetry", "otel_scope_schema_url": ""}
        scope["otel_scope_version"] = _scope_version(otel_registry)

        def lookup(name: str, labels: dict[str, str]) -> float | None:
            return otel_registry.get_sample_value(name, {**labels, **scope})

        assert check(lookup) == []
        provider.shutdown()


def _scope_version(registry: CollectorRegistry) -> str:
    for family in registry.collect():
        for sample in family.samples:
            if "otel_scope_version" in sample.labels:
                return sample.labels["otel_scope_version"]
    return ""


def _otel_lookup(otel: Otel, name: str, labels: dict[str, str]) -> float | None:
    spec = cat.by_name(name)
    suffix = name.removeprefix(spec.name)
    attrs = {k: v for k, v in labels.items() if k != "le"}
    for point in otel.points(spec.otel_name):
        if dict(point.attributes) != attrs:
            continue
        if isinstance(point, NumberDataPoint):
            return float(point.value)
        if suffix == "_sum":
            return float(point.sum)
        if suffix == "_count" or labels.get("le") == "+Inf":
            return float(point.count)
    return None


class TestSpans:
    def test_nested_executions_make_a_span_tree(self, otel: Otel) -> None:
        """Each execution's span is the child of the enclosing execution's span."""
        tel = make(otel)
        with tel.execution("a"), tel.execution("b"), tel.execution("c"):
            pass
        spans = otel.finished()
        assert spans["invoke_agent c"].parent.span_id == spans["invoke_agent b"].context.span_id  # type: ignore[union-attr]
        assert spans["invoke_agent b"].parent.span_id == spans["invoke_agent a"].context.span_id  # type: ignore[union-attr]
        assert spans["invoke_agent a"].parent is None
        assert len({s.context.trace_id for s in spans.values()}) == 1

    def test_span_follows_genai_conventions(self, otel: Otel) -> None:
        """Name ``invoke_agent {name}``, kind INTERNAL, gen_ai.* and subagent.* attributes."""
        with make(otel).execution("planner") as run:
            run.record_turn()
            run.record_tokens(input=12, output=3)
        span = otel.finished()["invoke_agent planner"]
        assert span.kind is SpanKind.INTERNAL
        assert (
            dict(span.attributes or {}).items()
            >= {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": "planner",
                "gen_ai.usage.input_tokens": 12,
                "gen_ai.usage.output_tokens": 3,
                "subagent.depth": 1,
                "subagent.turns": 1,
                "subagent.status": "complete",
            }.items()
        )

    def test_failure_sets_error_type_and_error_status(self, otel: Otel) -> None:
        """A failed execution's span has error.type and status ERROR."""
        with pytest.raises(TimeoutError), make(otel).execution("slow"):
            raise TimeoutError
        span = otel.finished()["invoke_agent slow"]
        assert span.status.status_code is StatusCode.ERROR
        assert (span.attributes or {})["error.type"] == "timeout"

    def test_refusal_is_an_errored_span_with_an_event(self, otel: Otel) -> None:
        """A depth refusal records a span with a subagent.quota_refused event under its parent."""
        tel = make(otel)
        with (
            tel.execution("a"),
            tel.execution("b"),
            tel.execution("c"),
            pytest.raises(DepthLimitExceeded),
            tel.execution("d"),
        ):
            pass
        spans = otel.finished()
        refused = spans["invoke_agent d"]
        assert refused.parent.span_id == spans["invoke_agent c"].context.span_id  # type: ignore[union-attr]
        assert refused.status.status_code is StatusCode.ERROR
        (event,) = refused.events
        assert event.name == "subagent.quota_refused"
        assert dict(event.attributes or {}) == {
            "subagent.quota.resource": "depth",
            "subagent.quota.used": 4,
            "subagent.quota.limit": 3,
        }

    def test_truncation_is_an_event(self, otel: Otel) -> None:
        """Cut output shows as a subagent.output_truncated event with both sizes."""
        with make(otel).execution("a") as run:
            run.set_output("x" * 2000)
        (event,) = otel.finished()["invoke_agent a"].events
        assert event.name == "subagent.output_truncated"
        assert dict(event.attributes or {}) == {
            "subagent.output.size_bytes": 2000,
            "subagent.output.limit_bytes": 1024,
        }

    def test_turn_limit_is_an_event(self, otel: Otel) -> None:
        """Asking for a turn past max_turns adds a subagent.turn_limit event; the span ends incomplete."""
        with make(otel).execution("a", max_turns=1) as run:
            run.record_turn()
            with pytest.raises(TurnLimitExceeded):
                run.record_turn()
        span = otel.finished()["invoke_agent a"]
        assert [e.name for e in span.events] == ["subagent.turn_limit"]

    def test_token_budget_stop_is_an_event(self, otel: Otel) -> None:
        """Passing the session token budget adds a subagent.quota_exceeded event."""
        with pytest.raises(TokenLimitExceeded), make(otel).execution("a") as run:
            run.record_tokens(input=2000)
        (event,) = otel.finished()["invoke_agent a"].events
        assert (event.name, dict(event.attributes or {})) == (
            "subagent.quota_exceeded",
            {"subagent.quota.resource": "tokens"},
        )

    def test_parent_reports_subtree_tokens(self, otel: Otel) -> None:
        """Each span carries its own tokens and its whole subtree's (self included)."""
        tel = make(otel)
        with tel.execution("a") as a:
            a.record_tokens(input=10, output=1)
            with tel.execution("b") as b:
                b.record_tokens(input=20, output=2)
                with tel.execution("c") as c:
                    c.record_tokens(input=30, output=3)
            with tel.execution("b2") as b2:
                b2.record_tokens(input=40, output=4)
        attrs = {name: dict(s.attributes or {}) for name, s in otel.finished().items()}
        assert attrs["invoke_agent a"]["gen_ai.usage.input_tokens"] == 10
        assert attrs["invoke_agent a"]["subagent.subtree.total_tokens"] == 110
        assert attrs["invoke_agent a"]["subagent.subtree.executions"] == 4
        assert attrs["invoke_agent b"]["subagent.subtree.input_tokens"] == 50
        assert attrs["invoke_agent c"]["subagent.subtree.output_tokens"] == 3

    def test_async_tasks_nest_like_depth(self, otel: Otel) -> None:
        """Concurrent asyncio children of one parent are all parented on it, not on each other."""
        tel = make(otel)

        async def child(name: str) -> None:
            async with tel.execution(name):
                await asyncio.sleep(0.01)

        async def main() -> None:
            async with tel.execution("parent"):
                await asyncio.gather(child("x"), child("y"))

        asyncio.run(main())
        spans = otel.finished()
        parent_id = spans["invoke_agent parent"].context.span_id
        assert spans["invoke_agent x"].parent.span_id == parent_id  # type: ignore[union-attr]
        assert spans["invoke_agent y"].parent.span_id == parent_id  # type: ignore[union-attr]

    def test_manual_handle_parents_on_the_current_execution_without_becoming_current(
        self, otel: Otel
    ) -> None:
        """A manual handle's span is a child of the current execution; the next sibling is not its child."""
        tel = make(otel)
        with tel.execution("parent"):
            handle = tel.start("manual")
            with tel.execution("sibling"):
                pass
            handle.record_completion(turns=1, tokens=5)
        spans = otel.finished()
        parent_id = spans["invoke_agent parent"].context.span_id
        assert spans["invoke_agent manual"].parent.span_id == parent_id  # type: ignore[union-attr]
        assert spans["invoke_agent sibling"].parent.span_id == parent_id  # type: ignore[union-attr]

    def test_a_handle_started_with_a_parent_is_a_child_of_its_span(self, otel: Otel) -> None:
        """tel.start(parent=X) in any context makes X's span the parent, whatever is current."""
        tel = make(otel)
        coordinator = tel.start("coordinator")
        with tel.execution("unrelated"):
            child = tel.start("child", parent=coordinator)
        child.record_completion()
        coordinator.record_completion()
        spans = otel.finished()
        assert spans["invoke_agent child"].parent.span_id == spans["invoke_agent coordinator"].context.span_id  # type: ignore[union-attr]

    def test_spans_inside_use_nest_under_the_handle(self, otel: Otel) -> None:
        """Inside tel.use(h), executions and the agent's own spans are children of h's span."""
        tel = make(otel)
        h = tel.start("h")
        tracer = otel.tracer_provider.get_tracer("agent")
        with tel.use(h), tracer.start_as_current_span("tool call"), tel.execution("inner"):
            pass
        h.record_completion()
        spans = otel.finished()
        h_id = spans["invoke_agent h"].context.span_id
        assert spans["tool call"].parent.span_id == h_id  # type: ignore[union-attr]
        assert spans["invoke_agent inner"].parent.span_id == spans["tool call"].context.span_id  # type: ignore[union-attr]

    def test_unsplit_totals_and_the_model_are_on_the_span(self, otel: Otel) -> None:
        """record_response(total=, model=) shows in subagent.tokens, the subtree total and the model."""
        tel = make(otel)
        with tel.execution("a") as a:
            a.record_response(total=40, model="m-1", provider="p")
            with tel.execution("b") as b:
                b.record_response(input=1, output=2)
        attrs = {name: dict(s.attributes or {}) for name, s in otel.finished().items()}
        assert attrs["invoke_agent a"]["subagent.tokens"] == 40
        assert attrs["invoke_agent a"]["subagent.subtree.total_tokens"] == 43
        assert attrs["invoke_agent a"]["gen_ai.response.model"] == "m-1"
        assert attrs["invoke_agent a"]["gen_ai.provider.name"] == "p"

    def test_context_is_restored_after_an_execution(self, otel: Otel) -> None:
        """After the outermost execution ends, no span of ours is current any more."""
        from opentelemetry import trace

        with make(otel).execution("a"):
            assert trace.get_current_span().is_recording()
        assert not trace.get_current_span().is_recording()


class TestTracingSwitch:
    def test_tracing_is_on_with_a_tracer_provider(self, otel: Otel) -> None:
        """With a tracer provider the scrape path's histograms carry trace-id exemplars."""
        tel = make(otel)
        with tel.execution("a") as run:
            pass
        text = openmetrics_latest(tel.registry).decode()
        assert f'trace_id="{run.trace_id}"' in text
        assert run.trace_id == format(otel.finished()["invoke_agent a"].context.trace_id, "032x")

    def test_metrics_only_has_no_spans_and_no_exemplars(self, otel: Otel) -> None:
        """With only a meter provider nothing is traced and no exemplar is attached."""
        tel = make(otel, traces=False)
        with tel.execution("a") as run:
            pass
        assert run.trace_id is None
        assert "trace_id" not in openmetrics_latest(tel.registry).decode()


class TestGenAiMetrics:
    def test_off_by_default(self, otel: Otel) -> None:
        """Without the flag no gen_ai.* metric is exported."""
        run_reference_workload(make(otel))
        assert not [n for n in otel.metrics() if n.startswith("gen_ai.")]

    def test_token_usage_and_duration_with_spec_boundaries(self, otel: Otel) -> None:
        """With the flag, gen_ai.client.token.usage (by token type) and gen_ai.invoke_agent.duration."""
        config = parity_config(otlp={"genai_metrics": True})
        with make(otel, config).execution("a") as run:
            run.record_tokens(input=12, output=3)
        usage = {p.attributes["gen_ai.token.type"]: p for p in otel.points("gen_ai.client.token.usage")}
        assert (usage["input"].sum, usage["output"].sum) == (12, 3)
        assert tuple(usage["input"].explicit_bounds) == GENAI_TOKEN_BUCKETS
        (duration,) = otel.points("gen_ai.invoke_agent.duration")
        assert tuple(duration.explicit_bounds) == GENAI_DURATION_BUCKETS
        assert duration.attributes["gen_ai.operation.name"] == "invoke_agent"


class TestRateLimitedLogs:
    def test_a_repeated_warning_passes_once_per_interval(self) -> None:
        """The same export-failure message is let through once, then dropped until the interval passes."""
        log_filter = RateLimitFilter(interval_seconds=60)
        record = logging.LogRecord(
            "opentelemetry.exporter.x", logging.WARNING, "", 0, "down %s", ("a",), None
        )
        assert [log_filter.filter(record) for _ in range(3)] == [True, False, False]

    def test_debug_records_are_never_dropped(self) -> None:
        """Only warnings and errors are rate-limited."""
        log_filter = RateLimitFilter(interval_seconds=60)
        record = logging.LogRecord("opentelemetry.sdk.x", logging.DEBUG, "", 0, "m", (), None)
        assert all(log_filter.filter(record) for _ in range(3))

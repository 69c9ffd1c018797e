"""Prometheus backend: exactly the catalog's metrics, labels, buckets and help; bounded labels."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from subagent_telemetry import Config, SubagentTelemetry
from subagent_telemetry import _catalog as cat
from tests.conftest import make_config

Factory = Callable[..., SubagentTelemetry]


def families(registry: CollectorRegistry) -> dict[str, object]:
    return {f.name: f for f in registry.collect()}


class TestCatalogConformance:
    def test_every_catalog_metric_is_exported_with_its_type_and_help(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Each catalog entry appears on /metrics with the catalog's kind and HELP text."""
        telemetry_factory()
        exported = {f.name: f for f in registry.collect()}
        for spec in cat.CATALOG:
            family = exported[spec.base_name]
            assert family.type == spec.kind.value, spec.name
            assert family.documentation == spec.help, spec.name

    def test_nothing_outside_the_catalog_is_exported(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Every exported series belongs to a catalog metric (or is client_python's `_created`)."""
        tel = telemetry_factory()
        with tel.execution("a") as run:
            run.record_turn()
        for family in registry.collect():
            for s in family.samples:
                if s.name.endswith("_created"):
                    continue
                assert cat.by_name(s.name), s.name

    def test_labels_are_exactly_the_catalog_labels(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Series carry the catalog's label names (plus `le` on buckets), nothing else."""
        tel = telemetry_factory()
        with tel.execution("a") as run:
            run.record_turn()
        for family in registry.collect():
            for s in family.samples:
                if s.name.endswith("_created"):
                    continue
                spec = cat.by_name(s.name)
                expected = set(spec.labels) | ({"le"} if s.name.endswith("_bucket") else set())
                assert set(s.labels) == expected, s.name

    def test_histogram_buckets_are_the_documented_ones(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Duration, turns and tokens use the catalog's explicit buckets."""
        telemetry_factory()
        for spec in (cat.DURATION, cat.TURNS, cat.TOKENS):
            family = families(registry)[spec.name]
            bounds = sorted(
                {float(s.labels["le"]) for s in family.samples if s.name.endswith("_bucket")}  # type: ignore[attr-defined]
            )
            assert bounds == [*spec.buckets, float("inf")]

    def test_buckets_reach_the_documented_ranges(self) -> None:
        """Duration to 600 s and beyond, turns 1-100, tokens log-scale past 1 M."""
        assert cat.DURATION.buckets[-1] > 600
        assert (cat.TURNS.buckets[0], cat.TURNS.buckets[-1]) == (1, 100)
        assert cat.TOKENS.buckets[-1] > 1_000_000

    def test_series_exist_before_the_first_execution(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Counters for every configured depth start at zero, so rates work on fresh processes."""
        telemetry_factory(make_config(max_depth=2))
        assert registry.get_sample_value("subagent_executions_total", {"depth": "2"}) == 0
        assert (
            registry.get_sample_value("subagent_errors_total", {"depth": "1", "error_type": "quota_exceeded"})
            == 0
        )


class TestQuotaGauges:
    def test_limits_and_usage_are_read_at_scrape_time(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """quota_limit/quota_used reflect the tracker when collected."""
        tel = telemetry_factory(make_config(max_executions=20, max_total_tokens=1000))
        with tel.execution("a") as run:
            run.record_tokens(input=250)
        labels = {"resource": "executions", "session": "default"}
        assert registry.get_sample_value("subagent_quota_limit", labels) == 20
        assert registry.get_sample_value("subagent_quota_used", labels) == 1
        tokens = {"resource": "tokens", "session": "default"}
        assert registry.get_sample_value("subagent_quota_used", tokens) == 250

    def test_unlimited_resources_have_no_limit_series(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """No limit series for unlimited resources, so ratios and alerts are absent."""
        telemetry_factory(make_config(max_executions=5))
        labels = {"resource": "tokens", "session": "default"}
        assert registry.get_sample_value("subagent_quota_limit", labels) is None

    def test_max_concurrency_is_exported(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """subagent_max_concurrency carries the configured value."""
        telemetry_factory(make_config(max_concurrency=7))
        assert registry.get_sample_value("subagent_max_concurrency") == 7

    def test_active_count_tracks_running_executions(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """The active gauge is up while running and back to zero after."""
        tel = telemetry_factory()
        with tel.execution("a"), tel.execution("b"):
            assert registry.get_sample_value("subagent_active_count", {"depth": "2"}) == 1
        assert registry.get_sample_value("subagent_active_count", {"depth": "2"}) == 0


class TestAgentLabel:
    def _config(self, **agent_label: object) -> Config:
        return Config.model_validate(
            {"telemetry": {"log_executions": False, "agent_label": {"enabled": True, **agent_label}}}
        )

    def test_allowlist_folds_the_rest_into_other(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Names outside the allowlist are recorded as agent="other"."""
        tel = telemetry_factory(self._config(allowlist=["planner"]))
        for name in ("planner", "surprise"):
            with tel.execution(name):
                pass
        get = registry.get_sample_value
        assert get("subagent_executions_total", {"depth": "1", "agent": "planner"}) == 1
        assert get("subagent_executions_total", {"depth": "1", "agent": "other"}) == 1
        assert get("subagent_executions_total", {"depth": "1", "agent": "surprise"}) is None

    def test_cap_bounds_distinct_values(
        self, telemetry_factory: Factory, registry: CollectorRegistry
    ) -> None:
        """Without an allowlist the first max_values names are kept, the rest become other."""
        tel = telemetry_factory(self._config(max_values=2))
        for i in range(10):
            with tel.execution(f"agent-{i}"):
                pass
        agents = {
            s.labels["agent"]
            for f in registry.collect()
            for s in f.samples
            if s.name == "subagent_executions_total"
        }
        assert agents == {"agent-0", "agent-1", "other"}


class TestExposition:
    def test_openmetrics_exposition_carries_exemplars_when_traced(self, registry: CollectorRegistry) -> None:
        """With a trace id on the run, duration and token observations carry it as an exemplar."""
        from subagent_telemetry.backends._prometheus import PrometheusBackend

        backend = PrometheusBackend(registry, max_depth=1, exemplars=True)

        class Run:
            name = "a"
            agent = ""
            depth = 1
            depth_label = "1"
            turns = 1
            input_tokens = 10
            output_tokens = 5
            tokens = 15
            status = __import__("subagent_telemetry").Status.COMPLETE
            error_type = None
            duration_seconds = 0.5
            trace_id = "0af7651916cd43dd8448eb211c80319c"
            backend_state = None
            parent = None
            model = None

        backend.started(Run())  # type: ignore[arg-type]
        backend.finished(Run())  # type: ignore[arg-type]
        text = generate_openmetrics(registry).decode()
        assert '# {trace_id="0af7651916cd43dd8448eb211c80319c"} 0.5' in text

    @pytest.mark.parametrize("generate", [generate_latest, generate_openmetrics])
    def test_both_formats_render(
        self, telemetry_factory: Factory, registry: CollectorRegistry, generate: Callable[..., bytes]
    ) -> None:
        """Text and OpenMetrics formats both include the executions counter."""
        tel = telemetry_factory()
        with tel.execution("a"):
            pass
        assert b'subagent_executions_total{depth="1"} 1.0' in generate(registry)


def test_a_second_telemetry_on_one_registry_warns_instead_of_failing(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """Two SubagentTelemetry on one registry still construct; the second warns that the scrape repeats."""
    SubagentTelemetry(make_config(), registry=registry)
    SubagentTelemetry(make_config(), registry=registry)
    assert "already holds subagent metrics" in caplog.text

"""What the operator tools read: /metrics text into readings, and quantiles as Prometheus computes them."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from subagent_telemetry import SubagentTelemetry
from subagent_telemetry import _catalog as cat
from subagent_telemetry.tools._sources import SourceError, delta_buckets, parse_metrics_text, quantile
from tests.conftest import make_config


class TestQuantile:
    @pytest.mark.parametrize(
        ("q", "expected"),
        [(0.5, 1.5), (0.25, 1.0), (0.75, 2.0), (1.0, 4.0)],
    )
    def test_interpolates_inside_the_bucket_like_histogram_quantile(self, q: float, expected: float) -> None:
        """Linear interpolation within the bucket that holds rank q * count (Prometheus' rule)."""
        buckets = [(1.0, 2.0), (2.0, 6.0), (4.0, 8.0), (float("inf"), 8.0)]
        assert quantile(q, buckets) == pytest.approx(expected)

    def test_rank_in_the_inf_bucket_gives_the_highest_finite_bound(self) -> None:
        """Observations above the last bound answer with that bound, as histogram_quantile does."""
        assert quantile(0.99, [(1.0, 1.0), (5.0, 2.0), (float("inf"), 10.0)]) == 5.0

    def test_no_observations_give_none(self) -> None:
        """An empty histogram has no quantile."""
        assert quantile(0.5, [(1.0, 0.0), (float("inf"), 0.0)]) is None

    def test_delta_buckets_never_go_negative(self) -> None:
        """A counter reset between two readings counts as nothing happened, not as negative."""
        assert delta_buckets([(1.0, 1.0), (float("inf"), 3.0)], [(1.0, 5.0), (float("inf"), 2.0)]) == [
            (1.0, 0.0),
            (float("inf"), 1.0),
        ]


class TestParse:
    def test_reads_the_catalog_series_of_a_real_exposition(self) -> None:
        """The exposition of a real SubagentTelemetry gives its counts per depth and its quota limits."""
        registry = CollectorRegistry()
        tel = SubagentTelemetry(make_config(max_executions=5), registry=registry)
        try:
            with tel.execution("a"), tel.execution("b"):
                pass
            readings = parse_metrics_text(generate_latest(registry).decode())
        finally:
            tel.shutdown(timeout_seconds=1)
        assert readings.by(cat.EXECUTIONS.name, "depth") == {"1": 1.0, "2": 1.0, "3": 0.0}
        assert readings.by(cat.QUOTA_LIMIT.name, "resource", agg="max") == {"executions": 5.0}

    def test_ignores_metrics_outside_the_catalog(self) -> None:
        """Other metrics on the same /metrics page are left out."""
        readings = parse_metrics_text("# TYPE other_total counter\nother_total 3\n")
        assert dict(readings.series) == {}

    def test_garbage_is_a_source_error(self) -> None:
        """A page that is not an exposition raises SourceError (shown by the tools), nothing else."""
        with pytest.raises(SourceError):
            parse_metrics_text("<html>not metrics{</html>\n")

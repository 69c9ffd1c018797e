"""What the operator tools read: /metrics text into readings, and quantiles as Prometheus computes them."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from subagent_telemetry import SubagentTelemetry
from subagent_telemetry import _catalog as cat
from subagent_telemetry.tools._sources import SourceError, delta_buckets, parse_metrics_text, quantile
from subagent_telemetry.tools._tune import nearest_rank, nice_up, session_peaks
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


class TestTuneArithmetic:
    @pytest.mark.parametrize(
        ("value", "expected"), [(74_300, 75_000), (75_000, 75_000), (7.43, 8), (99_393.8, 100_000), (0, 0)]
    )
    def test_nice_up_rounds_up_to_two_significant_digits(self, value: float, expected: int) -> None:
        """Budgets are rounded up (never down) to two significant digits, at least to a whole number."""
        assert nice_up(value) == expected

    def test_nearest_rank_takes_a_value_that_occurred(self) -> None:
        """p95 of six sessions is the sixth (ceil(0.95 x 6) = 6), not an interpolation."""
        assert nearest_rank([10, 60, 20, 50, 30, 40], 0.95) == 60
        assert nearest_rank([10, 60, 20, 50, 30, 40], 0.5) == 30

    def test_session_peaks_are_the_values_before_each_drop_and_the_last(self) -> None:
        """A quota gauge that drops starts a new session; the value before the drop is the old one's peak."""
        assert session_peaks([0, 2, 5, 1, 3, 0, 0, 4]) == [5, 3, 4]

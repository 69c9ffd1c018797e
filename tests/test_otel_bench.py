"""The OpenTelemetry benchmark runs and reports sane figures (tiny sizes; no timing assertions)."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("opentelemetry.sdk")

from benchmarks import bench_otel


class TestOtelBenchmark:
    def test_quick_run_reports_finite_figures_with_targets(self) -> None:
        """Every figure is a finite number and the ratio figures carry their targets."""
        report = bench_otel.run(quick=True)
        figures = {f["name"]: f for f in report["figures"]}
        assert all(math.isfinite(f["value"]) for f in figures.values())
        assert figures["metrics: backend ratio vs bare OTel SDK"]["target"] == "≤ 1.1"
        assert figures["import: opentelemetry modules loaded with OTel disabled"]["value"] == 0

    def test_backend_and_bare_workloads_make_the_same_records(self) -> None:
        """The backend's execution and the bare SDK's produce the same points (a fair comparison)."""
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        def points(reader: InMemoryMetricReader) -> dict[str, float]:
            data = reader.get_metrics_data()
            assert data is not None
            out: dict[str, float] = {}
            for rm in data.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        for p in m.data.data_points:
                            if dict(p.attributes) in ({"depth": "1"}, {"depth": "1", "status": "complete"}):
                                out[m.name] = float(getattr(p, "value", None) or getattr(p, "count", 0))
            return out

        lib_reader, bare_reader = InMemoryMetricReader(), InMemoryMetricReader()
        backend = bench_otel.OtelBackend(
            bench_otel.otel_config(),
            meter_provider=MeterProvider(metric_readers=[lib_reader]),
            usage=lambda: bench_otel.QuotaUsage(0, 0, 0.0),
            limits=bench_otel.QuotaLimits,
        )
        bench_otel.backend_execution(backend)()
        bench_otel.bare_execution(bench_otel.BareOtel(MeterProvider(metric_readers=[bare_reader])))()
        lib, bare = points(lib_reader), points(bare_reader)
        assert {k: v for k, v in lib.items() if k in bare} == bare

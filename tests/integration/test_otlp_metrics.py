"""OTLP metrics land under the scrape path's names: pushed into VictoriaMetrics, scraped by Prometheus.

One ``SubagentTelemetry`` records the reference workload into both paths at once: /metrics, scraped by a
real Prometheus, and OTLP/HTTP pushed into a real VictoriaMetrics started with
``-opentelemetry.usePrometheusNaming`` (Debian's Prometheus builds have no OTLP receiver). The same
table of expected series (tests/support/expected_series.py) is checked through each one's query API.
"""

from __future__ import annotations

import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

pytest.importorskip("opentelemetry.sdk")

from subagent_telemetry import _catalog as cat
from subagent_telemetry._telemetry import SubagentTelemetry
from tests.support.expected_series import EXPECTED_BUCKETS, check, parity_config, run_reference_workload
from tests.support.servers import (
    ManagedProcess,
    free_port,
    prom_query,
    start_prometheus,
    start_victoria_metrics,
    wait_for,
)
from tests.test_otel import EXECUTION_AND_QUOTA_METRICS

pytestmark = pytest.mark.integration

SERVICE = "parity-otlp"
#: Labels each backend adds from the target or the OTLP resource/scope, beyond the catalog's.
PROMETHEUS_EXTRA = {"job", "instance"}
VICTORIA_EXTRA = {
    "service_name",
    "service_instance_id",
    "scope_name",
    "scope_version",
    "telemetry_sdk_language",
    "telemetry_sdk_name",
    "telemetry_sdk_version",
}


@dataclass(frozen=True)
class QueryPath:
    """One way to query what the library exported: a base URL and the matcher naming our process."""

    base_url: str
    matcher: str
    extra_labels: set[str]
    #: Query at this time (the scrape path's series go stale once the process stops serving).
    at_unix_seconds: float | None = None

    def lookup(self, name: str, labels: dict[str, str]) -> float | None:
        matchers = ",".join([self.matcher, *(f'{k}="{v}"' for k, v in sorted(labels.items()))])
        result = prom_query(
            self.base_url, f"sum({name}{{{matchers}}})", time_unix_seconds=self.at_unix_seconds
        )
        return float(result[0]["value"][1]) if result else None

    def series(self, name: str) -> list[dict[str, str]]:
        query = urllib.parse.urlencode({"match[]": f"{name}{{{self.matcher}}}"})
        with urllib.request.urlopen(f"{self.base_url}/api/v1/series?{query}", timeout=10) as response:
            data: list[dict[str, str]] = yaml.safe_load(response.read())["data"]
        return data


@dataclass(frozen=True)
class Paths:
    scrape: QueryPath
    otlp: QueryPath


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Paths]:
    tmp_path = tmp_path_factory.mktemp("otlp-metrics")
    with start_victoria_metrics(tmp_path, ["-opentelemetry.usePrometheusNaming"]) as vm:
        port = free_port()
        config = parity_config(
            service_name=SERVICE,
            prometheus={"port": port},
            otlp={"enabled": True, "endpoint": f"{vm.url}/opentelemetry", "traces": False},
        )
        from prometheus_client import CollectorRegistry

        tel = SubagentTelemetry(config, registry=CollectorRegistry())
        tel.serve()
        prometheus_yml = f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: {SERVICE}
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""
        with start_prometheus(tmp_path, prometheus_yml) as prometheus:
            run_reference_workload(tel)
            wait_for(
                lambda: prom_query(prometheus.url, f'sum(subagent_executions_total{{job="{SERVICE}"}}) == 6'),
                timeout_seconds=30,
            )
            scraped_at = time.time()
            tel.shutdown()  # The final OTLP export happens here.
            wait_for(
                lambda: prom_query(
                    vm.url, f'sum(subagent_executions_total{{service_name="{SERVICE}"}}) == 6'
                ),
                timeout_seconds=30,
            )
            yield Paths(
                scrape=QueryPath(prometheus.url, f'job="{SERVICE}"', PROMETHEUS_EXTRA, scraped_at),
                otlp=QueryPath(vm.url, f'service_name="{SERVICE}"', VICTORIA_EXTRA),
            )


@pytest.fixture(params=["scrape", "otlp"])
def path(request: pytest.FixtureRequest, paths: Paths) -> QueryPath:
    chosen: QueryPath = getattr(paths, request.param)
    return chosen


class TestSameSeriesOnBothPaths:
    def test_expected_series_table(self, path: QueryPath) -> None:
        """Every series of the shared table exists with the expected value."""
        assert check(path.lookup) == []

    @pytest.mark.parametrize("spec", EXECUTION_AND_QUOTA_METRICS, ids=lambda s: s.name)
    def test_every_series_name_exists_with_the_catalog_labels(
        self, path: QueryPath, spec: cat.MetricSpec
    ) -> None:
        """Each series name of each metric exists and carries exactly the catalog's labels."""
        for name in spec.series_names:
            found = path.series(name)
            assert found, f"no {name}"
            label_sets = {frozenset(set(s) - {"__name__"} - path.extra_labels) for s in found}
            le = {"le"} if name.endswith("_bucket") else set()
            assert label_sets == {frozenset(set(spec.labels) | le)}, name

    @pytest.mark.parametrize("name", sorted(EXPECTED_BUCKETS))
    def test_histogram_bucket_boundaries(self, path: QueryPath, name: str) -> None:
        """Both paths expose exactly the catalog's bucket boundaries."""
        bounds = {float(s["le"]) for s in path.series(f"{name}_bucket")}
        assert bounds == set(EXPECTED_BUCKETS[name])

    def test_the_job_label_names_the_service(self, paths: Paths) -> None:
        """Prometheus labels the scrape job ``job``; VictoriaMetrics keeps ``service_name`` from OTLP."""
        assert {s["job"] for s in paths.scrape.series(cat.EXECUTIONS.name)} == {SERVICE}
        assert {s["service_name"] for s in paths.otlp.series(cat.EXECUTIONS.name)} == {SERVICE}
        instances = {s["service_instance_id"] for s in paths.otlp.series(cat.EXECUTIONS.name)}
        assert len(instances) == 1


class TestShortLivedDemo:
    def test_demo_once_delivers_its_metrics_before_exit(self, tmp_path: Path) -> None:
        """``demo --once N --no-serve --otlp-endpoint`` exits and VictoriaMetrics has all N executions."""
        with start_victoria_metrics(tmp_path, ["-opentelemetry.usePrometheusNaming"]) as vm:
            config_file = tmp_path / "demo.yaml"
            config_file.write_text(yaml.safe_dump({"telemetry": {"service_name": "demo-once"}}))
            cli = Path(sys.executable).with_name("subagent-telemetry")
            args = [str(cli), "demo", "--config", str(config_file), "--once", "7", "--no-serve"]
            args += ["--seed", "3", "--error-rate", "0", "--otlp-endpoint", f"{vm.url}/opentelemetry"]
            demo = ManagedProcess("demo-once", args, workdir=tmp_path / "demo")
            assert demo.process.wait(timeout=60) == 0, demo.log_tail()
            # The process has exited; VictoriaMetrics makes ingested samples searchable within a second.
            expr = 'sum(subagent_executions_total{service_name="demo-once",depth="1"})'
            result = wait_for(lambda: prom_query(vm.url, expr), timeout_seconds=15)
            assert [float(r["value"][1]) for r in result] == [7.0]

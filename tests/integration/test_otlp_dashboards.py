"""Every dashboard panel query, on data that arrived over OTLP: the demo pushing into VictoriaMetrics.

The second path of tests/integration/test_dashboards_live.py (scrape → Prometheus): the same panel
table, run by the same ``run_panel_queries``, against VictoriaMetrics with Prometheus naming. The
dashboards are rendered with ``alerts.job_label: service_name`` and ``instance_label:
service_instance_id`` — the labels VictoriaMetrics keeps from the OTLP resource (docs/otel.md).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("grafana_foundation_sdk")
pytest.importorskip("opentelemetry.sdk")

from subagent_telemetry._config import Config
from subagent_telemetry.render.dashboards import DASHBOARD_PATHS, render_dashboards
from tests.integration.test_dashboards_live import DEMO_CONFIG, RANGE_SECONDS, run_panel_queries
from tests.support.grafana import PanelQuery, Variables, panel_queries
from tests.support.servers import ManagedProcess, prom_query, start_victoria_metrics, wait_for

pytestmark = pytest.mark.integration

SERVICE = "subagent-demo-otlp"
EXPORT_INTERVAL_SECONDS = 1.0
OTLP_CONFIG: dict[str, Any] = {
    **DEMO_CONFIG,
    # The default selector is job=~".+"; VictoriaMetrics has service_name instead of job.
    "alerts": {
        "selector": 'service_name=~".+"',
        "job_label": "service_name",
        "instance_label": "service_instance_id",
    },
}
QUERIES: list[PanelQuery] = [
    q
    for path in DASHBOARD_PATHS.values()
    for q in panel_queries(yaml.safe_load(render_dashboards(Config.model_validate(OTLP_CONFIG))[path]))
]


@dataclass(frozen=True)
class OtlpStack:
    url: str
    instance: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtlpStack]:
    """The demo pushing OTLP every second into VictoriaMetrics, with RANGE_SECONDS of data."""
    tmp_path = tmp_path_factory.mktemp("dashboards-otlp")
    with start_victoria_metrics(tmp_path, ["-opentelemetry.usePrometheusNaming"]) as vm:
        telemetry = {
            "service_name": SERVICE,
            "otlp": {
                "enabled": True,
                "endpoint": f"{vm.url}/opentelemetry",
                "export_interval_seconds": EXPORT_INTERVAL_SECONDS,
                "traces": False,
            },
        }
        config_file = tmp_path / "demo.yaml"
        config_file.write_text(yaml.safe_dump({**OTLP_CONFIG, "telemetry": telemetry}))
        cli = Path(sys.executable).with_name("subagent-telemetry")
        args = [str(cli), "demo", "--config", str(config_file), "--no-serve", "--seed", "5"]
        args += ["--duration", "600", "--error-rate", "0.2", "--rate", "4"]
        demo = ManagedProcess("demo-otlp", args, workdir=tmp_path / "demo")
        try:
            first = wait_for(
                lambda: prom_query(
                    vm.url, f'timestamp(subagent_max_concurrency{{service_name="{SERVICE}"}})'
                ),
                timeout_seconds=30,
            )
            instance = first[0]["metric"]["service_instance_id"]
            time.sleep(max(0.0, float(first[0]["value"][1]) + RANGE_SECONDS - time.time()))
            yield OtlpStack(vm.url, instance)
        finally:
            demo.stop()


def variables(**values: Any) -> Variables:
    return Variables(
        scrape_interval_seconds=EXPORT_INTERVAL_SECONDS,
        interval_seconds=EXPORT_INTERVAL_SECONDS,
        range_seconds=RANGE_SECONDS,
        values=values,
    )


def _until_all_have_data(url: str, chosen: Variables, timeout_seconds: float = 90.0) -> list[str]:
    last: list[str] = []

    def attempt() -> bool:
        nonlocal last
        _, last = run_panel_queries(url, QUERIES, chosen, at_unix_seconds=time.time())
        return not last

    try:
        wait_for(attempt, timeout_seconds=timeout_seconds, interval_seconds=2.0)
    except TimeoutError:
        return last
    return []


class TestPanelQueriesOnOtlpData:
    def test_every_panel_returns_data_with_all_selected(self, stack: OtlpStack) -> None:
        """With job and instance on All, every panel target has data from the OTLP path."""
        assert _until_all_have_data(stack.url, variables()) == []

    def test_every_panel_returns_data_for_the_service_and_instance(self, stack: OtlpStack) -> None:
        """With service_name and service_instance_id selected as job and instance, every target has data."""
        chosen = variables(job=[SERVICE], instance=[stack.instance])
        assert _until_all_have_data(stack.url, chosen) == []

    def test_an_unknown_job_selects_nothing(self, stack: OtlpStack) -> None:
        """The job variable filters on service_name: an unknown service leaves every panel empty."""
        results, _ = run_panel_queries(
            stack.url, QUERIES, variables(job=["no-such-service"]), at_unix_seconds=time.time()
        )
        assert len(results) == len(QUERIES)
        assert all(not r.numbers() for r in results.values())

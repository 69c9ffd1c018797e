"""Every dashboard panel query, run on live data: the demo workload scraped by a real Prometheus 3.x.

Grafana itself cannot run on these machines (no binary, no container runtime), so it is not started.
Everything Grafana would do with these dashboards short of drawing them is checked instead:

- every PromQL target of every panel of every rendered dashboard is sent to Prometheus's HTTP API the
  way Grafana's Prometheus data source sends it: variables substituted (tests/support/grafana.py —
  ``$__rate_interval`` = max(``$__interval`` + scrape interval, 4 * scrape interval), ``$__interval``
  never below the scrape interval, ``$__range*``; ``$job``/``$instance`` as the All value ``.+`` and
  as concrete, regex-escaped values), range queries over the dashboard's time range with
  ``step = $__interval`` and instant queries for stat, gauge and table panels;
- each must parse, succeed and return at least one series with a number in it;
- the quota panels show the configured limits (and the 80 % warning level);
- the job/instance variable queries list the demo's job and instance.

The alert-list panel has no PromQL target (it reads Grafana's alerting state), so there is nothing to
run for it; a test asserts it is the only data panel without targets.

``run_panel_queries`` takes a base URL and variable values, so the same table of panel queries can run
against any Prometheus-compatible backend (the OTLP → VictoriaMetrics path reuses it).
"""

from __future__ import annotations

import json
import math
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("grafana_foundation_sdk")

from subagent_telemetry._config import Config
from subagent_telemetry._vocab import Resource
from subagent_telemetry.render.dashboards import DASHBOARD_PATHS, render_dashboards
from tests.support.grafana import NO_QUERY_PANEL_TYPES, PanelQuery, Variables, panel_queries, panels
from tests.support.servers import (
    ManagedProcess,
    PromQueryError,
    free_port,
    prom_query,
    prom_query_range,
    start_prometheus,
    wait_for,
)

pytestmark = pytest.mark.integration

SCRAPE_INTERVAL_SECONDS = 1.0
#: The dashboard time range the range queries cover (the demo has run at least this long by then).
RANGE_SECONDS = 30.0
JOB = "subagent-demo"
DEMO_CONFIG: dict[str, Any] = {
    "agent": {
        "subagent": {
            # Small budgets, so sessions fill up, trip the 80 % level and refuse within seconds.
            "max_executions": 80,
            "max_total_tokens": 150_000,
            "max_total_time": 30,
            "max_total_cost": 0.5,  # The demo's model mix spends this within seconds too.
            "max_concurrency": 4,
            # Demo outputs are up to ~2.8 kB, so some get truncated.
            "output_max_size": 1024,
        }
    }
}
CONFIG = Config.model_validate(DEMO_CONFIG)
LIMITS = {
    "executions": 80.0,
    "tokens": 150_000.0,
    "time_seconds": 30.0,
    "cost": 0.5,
}


def dashboards() -> list[dict[str, Any]]:
    files = render_dashboards(CONFIG)
    return [json.loads(files[path]) for path in DASHBOARD_PATHS.values()]


#: The one table of panel queries both backends run.
BOARDS = dashboards()
QUERIES: list[PanelQuery] = [q for board in BOARDS for q in panel_queries(board)]


@dataclass(frozen=True)
class PanelResult:
    query: PanelQuery
    expr: str
    series: list[dict[str, Any]]

    def numbers(self) -> list[float]:
        """Every non-NaN value of every series (instant or range)."""
        points = [s["value"] for s in self.series if "value" in s]
        points += [p for s in self.series for p in s.get("values", [])]
        return [v for v in (float(p[1]) for p in points) if not math.isnan(v)]


def run_panel_queries(
    base_url: str, queries: Sequence[PanelQuery], variables: Variables, *, at_unix_seconds: float
) -> tuple[dict[str, PanelResult], list[str]]:
    """Run each panel query as Grafana would against ``base_url``; return results and failures."""
    results: dict[str, PanelResult] = {}
    failures: list[str] = []
    step = max(variables.interval_seconds, variables.scrape_interval_seconds)
    for query in queries:
        expr = variables.substitute(query.expr)
        try:
            if query.instant:
                series = prom_query(base_url, expr, time_unix_seconds=at_unix_seconds)
            else:
                series = prom_query_range(
                    base_url,
                    expr,
                    start_unix_seconds=at_unix_seconds - variables.range_seconds,
                    end_unix_seconds=at_unix_seconds,
                    step_seconds=step,
                )
        except PromQueryError as err:
            failures.append(f"{query.name}: {err}")
            continue
        result = PanelResult(query, expr, series)
        results[query.name] = result
        if not result.numbers():
            failures.append(f"{query.name}: no data for {expr}")
    return results, failures


def run_until_all_have_data(
    base_url: str, variables: Variables, timeout_seconds: float = 90.0
) -> dict[str, PanelResult]:
    """Poll until every panel query returns data (the demo needs a while to hit every case)."""
    last: list[str] = []

    def attempt() -> dict[str, PanelResult] | None:
        nonlocal last
        results, last = run_panel_queries(base_url, QUERIES, variables, at_unix_seconds=time.time())
        return None if last else results

    try:
        return wait_for(attempt, timeout_seconds=timeout_seconds, interval_seconds=2.0)
    except TimeoutError:
        pytest.fail(f"panels without data after {timeout_seconds}s:\n" + "\n".join(last))


@dataclass(frozen=True)
class LiveStack:
    prometheus_url: str
    demo_instance: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    """The demo on a free port and Prometheus scraping it every second, with RANGE_SECONDS of data."""
    tmp_path = tmp_path_factory.mktemp("dashboards-live")
    config_file = tmp_path / "demo.yaml"
    config_file.write_text(yaml.safe_dump(DEMO_CONFIG))
    port = free_port()
    cli = Path(sys.executable).with_name("subagent-telemetry")
    args = [str(cli), "demo", "--config", str(config_file), "--port", str(port), "--seed", "5"]
    args += ["--duration", "600", "--error-rate", "0.2", "--rate", "4"]
    demo = ManagedProcess("demo", args, workdir=tmp_path / "demo")
    try:
        demo.wait_ready(url=f"http://127.0.0.1:{port}/metrics", timeout_seconds=30)
        instance = f"127.0.0.1:{port}"
        prometheus_yml = f"""
global:
  scrape_interval: {SCRAPE_INTERVAL_SECONDS:g}s
  evaluation_interval: {SCRAPE_INTERVAL_SECONDS:g}s
scrape_configs:
  - job_name: {JOB}
    static_configs:
      - targets: ["{instance}"]
"""
        with start_prometheus(tmp_path, prometheus_yml) as prometheus:
            first = wait_for(
                lambda: prom_query(prometheus.url, "timestamp(subagent_max_concurrency)"),
                timeout_seconds=30,
            )
            # The range queries look back RANGE_SECONDS; wait until that much has been scraped.
            until = float(first[0]["value"][1]) + RANGE_SECONDS
            time.sleep(max(0.0, until - time.time()))
            yield LiveStack(prometheus.url, instance)
    finally:
        demo.stop()


def variables(**values: Sequence[str] | None) -> Variables:
    return Variables(
        scrape_interval_seconds=SCRAPE_INTERVAL_SECONDS,
        # range / maxDataPoints is far below the scrape interval, so Grafana uses the scrape interval.
        interval_seconds=SCRAPE_INTERVAL_SECONDS,
        range_seconds=RANGE_SECONDS,
        values=values,
    )


class TestPanelQueriesOnLiveData:
    def test_the_table_covers_every_query_panel(self) -> None:
        """Every data panel has targets except the alert list, which has none to run."""
        for board in BOARDS:
            for panel in panels(board):
                if panel["type"] in NO_QUERY_PANEL_TYPES:
                    assert not panel.get("targets"), panel["title"]
                else:
                    assert panel.get("targets"), panel["title"]
        alert_lists = [p for b in BOARDS for p in panels(b) if p["type"] == "alertlist"]
        assert [p["title"] for p in alert_lists] == ["Firing alerts"]

    def test_every_panel_returns_data_with_all_selected(self, results: dict[str, PanelResult]) -> None:
        """With job and instance on All (``.+``), every target parses, succeeds and has data."""
        assert len(results) == len(QUERIES)

    def test_every_panel_returns_data_for_a_concrete_job_and_instance(self, live: LiveStack) -> None:
        """With one job and one instance selected (regex-escaped), every target still has data."""
        chosen = variables(job=[JOB], instance=[live.demo_instance])
        results = run_until_all_have_data(live.prometheus_url, chosen)
        escaped = live.demo_instance.replace(".", "\\\\.")  # 127\\.0\\.0\\.1:port in PromQL text
        assert all(f'instance=~"{escaped}"' in r.expr for r in results.values())

    def test_an_unknown_job_selects_nothing(self, live: LiveStack) -> None:
        """The variables really filter: a job that does not exist leaves the panels empty."""
        results, _ = run_panel_queries(
            live.prometheus_url, QUERIES, variables(job=["no-such-job"]), at_unix_seconds=time.time()
        )
        assert len(results) == len(QUERIES)  # Every query succeeded ...
        assert all(not r.numbers() for r in results.values())  # ... and found nothing.

    def test_variable_queries_list_the_demo(self, live: LiveStack) -> None:
        """label_values() of the job and instance variables finds the demo's job and instance."""
        expected = {"job": JOB, "instance": live.demo_instance}
        for board in BOARDS:
            for var in board["templating"]["list"]:
                if var["type"] != "query":
                    continue
                inner = var["query"].removeprefix("label_values(").removesuffix(")")
                match, label = inner.rsplit(", ", 1)
                match = variables().substitute(match)
                url = f"{live.prometheus_url}/api/v1/label/{label}/values?" + urllib.parse.urlencode(
                    {"match[]": match}
                )
                with urllib.request.urlopen(url, timeout=10) as response:
                    values = yaml.safe_load(response.read())["data"]
                assert expected[var["name"]] in values, (var["name"], values)


@pytest.fixture(scope="module")
def results(live: LiveStack) -> dict[str, PanelResult]:
    """Every panel's result with All selected, once every panel has data."""
    return run_until_all_have_data(live.prometheus_url, variables())


class TestQuotaPanelsShowTheLimits:
    def by_title(self, results: dict[str, PanelResult], title: str, ref_id: str = "A") -> PanelResult:
        (found,) = [r for r in results.values() if r.query.panel_title == title and r.query.ref_id == ref_id]
        return found

    def test_configured_limits_panel(self, results: dict[str, PanelResult]) -> None:
        """The "Configured limits" stat shows exactly agent.subagent's three budgets."""
        shown = {
            s["metric"]["resource"]: float(s["value"][1])
            for s in self.by_title(results, "Configured limits").series
        }
        assert shown == LIMITS

    @pytest.mark.parametrize(
        ("title", "resource"),
        [
            ("Executions used vs limit", "executions"),
            ("Tokens used vs limit", "tokens"),
            ("Wall-clock time used vs limit", "time_seconds"),
        ],
    )
    def test_usage_panels_draw_limit_and_warning_level(
        self, results: dict[str, PanelResult], title: str, resource: str
    ) -> None:
        """Each used-vs-limit panel's limit line is the configured limit, its warning line 80 % of it."""
        limit = set(self.by_title(results, title, "B").numbers())
        warning = set(self.by_title(results, title, "C").numbers())
        threshold = CONFIG.alerts.quota_nearly_exhausted.threshold
        assert limit == {LIMITS[resource]}
        assert warning
        assert all(v == pytest.approx(threshold * LIMITS[resource]) for v in warning)
        used = self.by_title(results, title, "A").numbers()
        assert max(used) > 0

    def test_budget_gauge_is_a_share_of_the_limits(self, results: dict[str, PanelResult]) -> None:
        """The gauge shows used / limit for every limited resource."""
        series = self.by_title(results, "Budget used").series
        assert {s["metric"]["resource"] for s in series} == set(LIMITS)
        assert all(float(s["value"][1]) >= 0 for s in series)

    def test_refusals_are_attributed_to_a_resource(self, results: dict[str, PanelResult]) -> None:
        """Refusals by resource show the resources of the closed vocabulary, budgets among them."""
        series = self.by_title(results, "Refusals by resource").series
        resources = {s["metric"]["resource"] for s in series}
        assert resources <= {r.value for r in Resource}
        assert resources & set(LIMITS)

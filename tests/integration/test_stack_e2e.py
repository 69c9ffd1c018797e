"""End to end without Docker: demo agent → Prometheus (rendered rules) → Alertmanager, on real binaries.

Three stacks run side by side (started once for the module, so their warm-up overlaps): one whose demo
fails 20 % of its executions, one whose demo runs into a small execution budget, and a quiet one (no
errors, ample quota) started through the `subagent-telemetry stack up` command and stopped with SIGTERM.
The test config renders every alert with `for: 0s` and a 1m rate window, and the stacks scrape and
evaluate every second, so a condition that holds fires at once — and one that does not never does.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from subagent_telemetry.tools._stack import Stack, StackOptions
from tests.support.servers import prom_query, tool, tools_dir, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ALERTS = (
    "SubagentHighErrorRate",
    "SubagentQuotaNearlyExhausted",
    "SubagentActiveOverMaxConcurrency",
    "SubagentSlowExecutions",
    "SubagentQuotaRejections",
    "SubagentMetricsAbsent",
    "SubagentCostBudgetBurn",
)
ALERT_KEYS = (
    "high_error_rate",
    "quota_nearly_exhausted",
    "active_over_max_concurrency",
    "slow_executions",
    "quota_rejections",
    "metrics_absent",
    "cost_budget_burn",
)
FIRE_TIMEOUT_SECONDS = 60.0
QUIET_WINDOW_SECONDS = 15.0
#: Ample budget and concurrency: the demo refuses nested executions when every slot is taken, and a
#: refusal counts as an error (error_type quota_exceeded) and a quota rejection.
AMPLE = {
    "max_executions": 1_000_000,
    "max_total_tokens": 1_000_000_000,
    "max_total_time": None,
    "max_concurrency": 1000,
}
#: An execution budget the demo (5 top-level executions a second, each with children) spends in seconds.
SMALL = {**AMPLE, "max_executions": 40}


def _write_config(path: Path, quotas: dict[str, Any]) -> Path:
    config = {
        "agent": {"subagent": quotas},
        "telemetry": {"log_executions": False},
        "alerts": {"rate_window": "2m", **{key: {"for": "0s"} for key in ALERT_KEYS}},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _options(config: Path, workdir: Path, error_rate: float) -> StackOptions:
    return StackOptions(
        config_path=config,
        tools_dir=tools_dir(),
        workdir=workdir,
        demo_port=0,
        prometheus_port=0,
        alertmanager_port=0,
        alert_log_port=0,
        error_rate=error_rate,
        rate_per_second=5.0,
        session_seconds=3600.0,
        seed=7,
        scrape_interval="1s",
        evaluation_interval="1s",
    )


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def am_alert_names(alertmanager_url: str) -> set[str]:
    """Names of the alerts Alertmanager holds (its API v2)."""
    return {alert["labels"]["alertname"] for alert in _get_json(f"{alertmanager_url}/api/v2/alerts")}


def prom_alert_states(prometheus_url: str) -> dict[str, str]:
    """Alert name → state (pending or firing) of every active alert in Prometheus."""
    alerts = _get_json(f"{prometheus_url}/api/v1/alerts")["data"]["alerts"]
    return {alert["labels"]["alertname"]: alert["state"] for alert in alerts}


def loaded_alerts(prometheus_url: str) -> set[str]:
    groups = _get_json(f"{prometheus_url}/api/v1/rules?type=alert")["data"]["groups"]
    return {rule["name"] for group in groups for rule in group["rules"]}


@dataclass
class CliStack:
    """`subagent-telemetry stack up` in a subprocess, and what it printed about itself."""

    process: subprocess.Popen[str]
    urls: dict[str, str]
    pids: dict[str, int]
    output: list[str]


def _start_cli_stack(config: Path, workdir: Path) -> CliStack:
    command = [sys.executable, "-m", "subagent_telemetry.cli", "stack", "up", "--config", str(config)]
    command += ["--workdir", str(workdir), "--error-rate", "0", "--rate", "5", "--seed", "7"]
    command += ["--scrape-interval", "1s", "--evaluation-interval", "1s"]
    for name in ("demo", "prometheus", "alertmanager", "alert-log"):
        command += [f"--{name}-port", "0"]
    env = {**os.environ, "SUBAGENT_TELEMETRY_TOOLS": str(tools_dir())}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO
    )
    assert process.stdout is not None
    output: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        output.append(line)
        if line.startswith("stack ready"):
            break
    else:
        process.kill()
        pytest.fail("stack up did not get ready in 60s:\n" + "".join(output))
    if not output or not output[-1].startswith("stack ready"):
        process.wait(timeout=10)
        pytest.fail("stack up exited:\n" + "".join(output))
    urls, pids = {}, {}
    for line in output:
        match = re.match(r"^(demo agent|prometheus|alertmanager)\s+(http://\S+)\s+\(pid (\d+)", line)
        if match:
            urls[match[1]] = match[2]
            pids[match[1]] = int(match[3])
    return CliStack(process, urls, pids, output)


@dataclass
class Stacks:
    errors: Stack
    errors_out: io.StringIO
    quota: Stack
    quiet: CliStack


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stacks]:
    tool("prometheus")
    tool("alertmanager")
    root = tmp_path_factory.mktemp("stack-e2e")
    ample = _write_config(root / "ample.yaml", AMPLE)
    small = _write_config(root / "small.yaml", SMALL)
    quiet = _start_cli_stack(ample, root / "quiet")
    started: list[Stack] = []
    try:
        errors_out = io.StringIO()
        errors = Stack(_options(ample, root / "errors", error_rate=0.2))
        errors.start(errors_out)
        started.append(errors)
        quota = Stack(_options(small, root / "quota", error_rate=0.0))
        quota.start(io.StringIO())
        started.append(quota)
        yield Stacks(errors, errors_out, quota, quiet)
    finally:
        for stack in started:
            stack.stop()
        if quiet.process.poll() is None:
            quiet.process.send_signal(signal.SIGTERM)
            quiet.process.wait(timeout=30)


class TestAlertsReachAlertmanager:
    def test_rendered_alerts_loaded(self, stacks: Stacks) -> None:
        """Prometheus runs every alert rendered from the test config."""
        assert loaded_alerts(stacks.errors.prometheus_url) == set(ALERTS)

    def test_high_error_rate(self, stacks: Stacks) -> None:
        """With 20 % of executions failing, SubagentHighErrorRate reaches Alertmanager."""
        url = stacks.errors.alertmanager_url
        wait_for(lambda: "SubagentHighErrorRate" in am_alert_names(url), FIRE_TIMEOUT_SECONDS, 0.5)

    def test_high_error_rate_printed_by_the_default_receiver(self, stacks: Stacks) -> None:
        """Alertmanager's default webhook receiver prints the firing alert."""
        wait_for(
            lambda: "FIRING SubagentHighErrorRate" in stacks.errors_out.getvalue(),
            FIRE_TIMEOUT_SECONDS,
            0.5,
        )

    def test_quota_nearly_exhausted(self, stacks: Stacks) -> None:
        """With the execution budget above 80 %, SubagentQuotaNearlyExhausted reaches Alertmanager."""
        url = stacks.quota.alertmanager_url
        wait_for(lambda: "SubagentQuotaNearlyExhausted" in am_alert_names(url), FIRE_TIMEOUT_SECONDS, 0.5)
        (alert,) = [
            a
            for a in _get_json(f"{url}/api/v2/alerts")
            if a["labels"]["alertname"] == "SubagentQuotaNearlyExhausted"
        ]
        assert alert["labels"]["resource"] == "executions"


class TestQuietStack:
    def test_nothing_fires_without_errors_and_with_ample_quota(self, stacks: Stacks) -> None:
        """No errors and ample quota: once the rules see live data, no alert is pending or firing."""
        prometheus = stacks.quiet.urls["prometheus"]
        alertmanager = stacks.quiet.urls["alertmanager"]
        # The rules have data: traffic flows, the error ratio is computed (0) and the budget is tracked.
        wait_for(
            lambda: (
                prom_query(prometheus, "job:subagent_executions:rate2m > 0")
                and prom_query(prometheus, "job:subagent_error_ratio:rate2m == 0")
                and prom_query(prometheus, "job_session_resource:subagent_quota_utilization:ratio")
            ),
            FIRE_TIMEOUT_SECONDS,
            0.5,
        )
        assert loaded_alerts(prometheus) == set(ALERTS)
        deadline = time.monotonic() + QUIET_WINDOW_SECONDS
        while time.monotonic() < deadline:
            assert prom_alert_states(prometheus) == {}
            assert am_alert_names(alertmanager) == set()
            time.sleep(1)

    def test_sigterm_stops_every_process(self, stacks: Stacks) -> None:
        """SIGTERM to `stack up` stops the demo, Prometheus and Alertmanager and exits 0."""
        quiet = stacks.quiet
        assert set(quiet.pids) == {"demo agent", "prometheus", "alertmanager"}
        quiet.process.send_signal(signal.SIGTERM)
        assert quiet.process.wait(timeout=30) == 0
        for name, pid in quiet.pids.items():
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
            assert name

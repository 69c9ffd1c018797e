"""The real demo agent (a subprocess) scraped every second by a real Prometheus evaluating the rendered
rules, with ``for: 0m`` on the refusal and error-rate alerts so they fire within seconds."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from subagent_telemetry._config import Config
from subagent_telemetry.render.rules import RULES_FILE, render_rules
from tests.support.servers import (
    ManagedProcess,
    RunningServer,
    free_port,
    prom_query,
    start_prometheus,
    wait_for,
)

#: Alerts quick to fire on the demo (it refuses work and fails 5 % of executions).
FAST_ALERTS = Config.model_validate(
    {
        "alerts": {
            "rate_window": "2m",
            "quota_rejections": {"for": "0m"},
            "high_error_rate": {"for": "0m"},
        }
    }
)


@dataclass(frozen=True)
class DemoStack:
    metrics_url: str
    prometheus: RunningServer


@contextlib.contextmanager
def demo_scraped_by_prometheus(tmp: Path, seed: int = 7) -> Iterator[DemoStack]:
    """Start the demo on a free port and a Prometheus scraping it at 1 s; both stopped on exit."""
    port = free_port()
    demo = ManagedProcess(
        "demo",
        [sys.executable, "-m", "subagent_telemetry.cli", "demo", "--port", str(port), "--seed", str(seed)],
        workdir=tmp / "demo",
    )
    try:
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        demo.wait_ready(metrics_url)
        rules = tmp / "rules.yaml"
        rules.write_text(render_rules(FAST_ALERTS)[RULES_FILE])
        config = (
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files: ['{rules}']\n"
            "scrape_configs:\n  - job_name: demo\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{port}']\n"
        )
        with start_prometheus(tmp, config) as prometheus:
            wait_for(lambda: prom_query(prometheus.url, 'up{job="demo"} == 1'), timeout_seconds=30)
            yield DemoStack(metrics_url, prometheus)
    finally:
        demo.stop()

"""docs/deploy.md, run: the recipes for a production Prometheus and for Mimir, step by step, on real
Prometheus 3.x and promtool (Kubernetes and Grafana cannot run here: tests/test_kubernetes.py checks
those manifests against the upstream schemas instead)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from subagent_telemetry.render.rules import ALERT_NAMES
from tests.support.servers import RunningServer, start_prometheus, tool, wait_for

pytestmark = pytest.mark.integration


def _render(out: Path, *formats: str) -> None:
    """`subagent-telemetry render --format ... --out OUT`, as the recipe runs it."""
    args = [arg for fmt in formats for arg in ("--format", fmt)]
    subprocess.run(
        [sys.executable, "-m", "subagent_telemetry.cli", "render", *args, "--out", str(out)],
        check=True,
        capture_output=True,
    )


def _promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *map(str, args)], capture_output=True, text=True, cwd=cwd)


def _reload(prometheus: RunningServer) -> int:
    """POST /-/reload; the HTTP status (200 applied, 500 refused)."""
    request = urllib.request.Request(f"{prometheus.url}/-/reload", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code


def _rules(prometheus: RunningServer) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{prometheus.url}/api/v1/rules", timeout=10) as response:
        data: dict[str, Any] = json.load(response)["data"]
    return [rule for group in data["groups"] for rule in group["rules"]]


def _loaded_alerts(prometheus: RunningServer) -> set[str]:
    return {rule["name"] for rule in _rules(prometheus) if rule["type"] == "alerting"}


def _reload_successful(prometheus: RunningServer) -> bool:
    """Prometheus's own gauge, read from its /metrics."""
    with urllib.request.urlopen(f"{prometheus.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    (line,) = (x for x in text.splitlines() if x.startswith("prometheus_config_last_reload_successful "))
    return line.split()[1] == "1"


@pytest.fixture
def prometheus(tmp_path: Path) -> Any:
    """A running Prometheus whose prometheus.yml loads every file in rules/ (the recipe's rule_files)."""
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    config = f"global: {{evaluation_interval: 1s}}\nrule_files: ['{rules_dir}/*.yaml']\n"
    with start_prometheus(tmp_path, config) as server:
        yield server, rules_dir


def test_rendered_rules_load_into_a_running_prometheus_through_reload(
    prometheus: tuple[RunningServer, Path], tmp_path: Path
) -> None:
    """render → promtool check → promtool test → copy into rule_files → POST /-/reload → rules evaluate."""
    server, rules_dir = prometheus
    assert _loaded_alerts(server) == set()
    out = tmp_path / "deploy"
    _render(out, "rules", "rule-tests")
    check = _promtool("check", "rules", out / "alerts" / "rules.yaml")
    assert check.returncode == 0, check.stdout + check.stderr
    tests = sorted(p.name for p in (out / "alerts" / "tests").glob("*.yaml"))
    unit = _promtool("test", "rules", *tests, cwd=out / "alerts" / "tests")
    assert unit.returncode == 0, unit.stdout + unit.stderr
    shutil.copy(out / "alerts" / "rules.yaml", rules_dir / "subagent-telemetry.yaml")

    assert _reload(server) == 200
    assert _reload_successful(server)
    assert _loaded_alerts(server) == set(ALERT_NAMES.values())
    # Every rule evaluates without error (evaluation_interval 1s here).
    wait_for(lambda: all(r["health"] == "ok" and r["evaluationTime"] > 0 for r in _rules(server)))


def test_a_broken_rules_file_is_refused_on_reload_and_the_old_rules_keep_running(
    prometheus: tuple[RunningServer, Path], tmp_path: Path
) -> None:
    """Why the recipe runs promtool first: a bad file fails the reload (HTTP 500), the old rules stay."""
    server, rules_dir = prometheus
    _render(tmp_path / "deploy", "rules")
    target = rules_dir / "subagent-telemetry.yaml"
    shutil.copy(tmp_path / "deploy" / "alerts" / "rules.yaml", target)
    assert _reload(server) == 200

    broken = target.read_text().replace("expr: ", "expr: sum(", 1)
    target.write_text(broken)
    assert _promtool("check", "rules", target).returncode != 0
    assert _reload(server) == 500
    assert _loaded_alerts(server) == set(ALERT_NAMES.values())
    assert not _reload_successful(server)


def test_the_mimir_namespace_file_holds_groups_promtool_accepts(tmp_path: Path) -> None:
    """`mimirtool rules load` takes a namespace file; its groups are the Prometheus rule groups."""
    out = tmp_path / "deploy"
    _render(out, "mimir", "rules")
    mimir = yaml.safe_load((out / "alerts" / "mimir-rules.yaml").read_text())
    plain = yaml.safe_load((out / "alerts" / "rules.yaml").read_text())
    assert set(mimir) == {"namespace", "groups"}
    assert mimir["groups"] == plain["groups"]
    groups_only = tmp_path / "groups.yaml"
    groups_only.write_text(yaml.safe_dump({"groups": mimir["groups"]}))
    check = _promtool("check", "rules", groups_only)
    assert check.returncode == 0, check.stdout + check.stderr

"""The no-Docker stack runs the compose configs with service names rewritten to loopback ports."""

from __future__ import annotations

import io
import json
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from subagent_telemetry.cli import build_parser
from subagent_telemetry.tools._alert_log import AlertLog, format_alert
from subagent_telemetry.tools._stack import (
    StackError,
    StackOptions,
    alertmanager_config,
    find_compose_dir,
    find_tool,
    pick_port,
    prometheus_config,
    rewrite_hosts,
)

REPO = Path(__file__).resolve().parents[1]
COMPOSE_DIR = REPO / "compose"
LOOPBACK = {
    "demo:9464": "127.0.0.1:19464",
    "alertmanager:9093": "127.0.0.1:19093",
    "alert-log:9095": "127.0.0.1:19095",
}


class TestRewriteHosts:
    def test_targets_and_urls_rewritten(self) -> None:
        """service:port is replaced in bare targets and inside URLs, at any depth."""
        node = {"a": ["demo:9464"], "b": {"url": "http://alert-log:9095/alerts"}}
        assert rewrite_hosts(node, LOOPBACK) == {
            "a": ["127.0.0.1:19464"],
            "b": {"url": "http://127.0.0.1:19095/alerts"},
        }

    def test_longer_names_and_ports_left_alone(self) -> None:
        """Only whole service names with that exact port are replaced."""
        node = ["my-demo:9464", "demo:94640", "demo.example:9464", "demo:9465"]
        assert rewrite_hosts(node, LOOPBACK) == node


class TestPrometheusConfig:
    def test_no_compose_host_names_left(self) -> None:
        """The rewritten config reaches the demo and Alertmanager on 127.0.0.1."""
        text = json.dumps(prometheus_config(COMPOSE_DIR, LOOPBACK))
        assert "127.0.0.1:19464" in text
        assert "127.0.0.1:19093" in text
        assert "demo:" not in text
        assert "alertmanager:" not in text

    def test_rule_files_point_into_the_repository_alerts(self) -> None:
        """The mounted rule paths become paths under the repository's alerts/."""
        config = prometheus_config(COMPOSE_DIR, LOOPBACK)
        assert config["rule_files"]
        for path in config["rule_files"]:
            assert Path(path).parent == REPO / "alerts"

    def test_rules_dir_replaces_the_alerts_mount(self, tmp_path: Path) -> None:
        """With rules rendered elsewhere, the same rule files are read from there."""
        default = prometheus_config(COMPOSE_DIR, LOOPBACK)["rule_files"]
        moved = prometheus_config(COMPOSE_DIR, LOOPBACK, rules_dir=tmp_path)["rule_files"]
        assert moved == [str(tmp_path / Path(path).name) for path in default]

    def test_intervals_overridden_only_when_given(self) -> None:
        """Scrape and evaluation intervals keep the compose values unless overridden."""
        kept = prometheus_config(COMPOSE_DIR, LOOPBACK)["global"]
        fast = prometheus_config(COMPOSE_DIR, LOOPBACK, scrape_interval="1s", evaluation_interval="2s")
        assert kept == {"scrape_interval": "15s", "evaluation_interval": "15s"}
        assert fast["global"] == {"scrape_interval": "1s", "evaluation_interval": "2s"}


class TestAlertmanagerConfig:
    def test_webhook_reaches_the_local_alert_log(self) -> None:
        """The default receiver posts to the alert log on 127.0.0.1."""
        config = alertmanager_config(COMPOSE_DIR, LOOPBACK)
        urls = [w["url"] for r in config["receivers"] for w in r.get("webhook_configs", ())]
        assert urls == ["http://127.0.0.1:19095/alerts"]


class TestFinding:
    def test_compose_dir_missing_is_a_clear_error(self, tmp_path: Path) -> None:
        """A folder without docker-compose.yml is refused, naming where it looked."""
        with pytest.raises(StackError, match=str(tmp_path)):
            find_compose_dir(tmp_path)

    def test_tool_missing_is_a_clear_error(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A missing binary names the tools folder and how to install it."""
        monkeypatch.setenv("PATH", str(tmp_path))
        with pytest.raises(StackError, match="make tools"):
            find_tool("prometheus", tmp_path)

    def test_taken_port_replaced_by_a_free_one(self) -> None:
        """A preferred port that is taken yields another, free port."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            chosen = pick_port(port)
        assert chosen != port
        assert chosen > 0


class TestCli:
    def test_stack_up_options_reach_the_stack(self) -> None:
        """`stack up` parses ports, demo settings and intervals."""
        args = build_parser().parse_args(
            ["stack", "up", "--demo-port", "0", "--error-rate", "0.2", "--scrape-interval", "1s"]
        )
        assert (args.demo_port, args.error_rate, args.scrape_interval) == (0, 0.2, "1s")
        assert args.prometheus_port == StackOptions().prometheus_port


@pytest.fixture
def alert_log() -> Iterator[tuple[AlertLog, io.StringIO]]:
    out = io.StringIO()
    log = AlertLog(port=0, out=out)
    yield log, out
    log.close()


class TestAlertLog:
    def test_format(self) -> None:
        """One line: status, name, sorted labels, summary."""
        alert = {
            "status": "firing",
            "labels": {"alertname": "SubagentHighErrorRate", "severity": "critical", "job": "demo"},
            "annotations": {"summary": "Subagents fail often."},
        }
        assert format_alert(alert) == (
            "FIRING SubagentHighErrorRate job=demo severity=critical: Subagents fail often."
        )

    def test_webhook_payload_printed(self, alert_log: tuple[AlertLog, io.StringIO]) -> None:
        """Each alert of an Alertmanager webhook post is printed."""
        log, out = alert_log
        body = json.dumps(
            {"version": "4", "alerts": [{"status": "resolved", "labels": {"alertname": "A"}}]}
        ).encode()
        request = urllib.request.Request(log.url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
        assert out.getvalue() == "alert: RESOLVED A\n"

    def test_bad_payload_refused(self, alert_log: tuple[AlertLog, io.StringIO]) -> None:
        """A body that is not a webhook payload gets 400 and prints nothing."""
        log, out = alert_log
        request = urllib.request.Request(log.url, data=b"not json")
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=5)
        assert caught.value.code == 400
        assert out.getvalue() == ""

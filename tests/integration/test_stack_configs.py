"""The compose stack's Prometheus and Alertmanager configs pass the real promtool and amtool."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from subagent_telemetry import Config
from subagent_telemetry.tools._stack import (
    alertmanager_config,
    dump_yaml,
    prometheus_config,
    render_rules_into,
)
from tests.support.servers import tool

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "compose"
LOOPBACK = {
    "demo:9464": "127.0.0.1:19464",
    "alertmanager:9093": "127.0.0.1:19093",
    "alert-log:9095": "127.0.0.1:19095",
}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False)


def _version(name: str) -> str:
    match = re.search(r"version (\d+\.\d+\.\d+)", _run(tool(name), "--version").stdout)
    assert match, name
    return match.group(1)


def _image_tag(service: str) -> str:
    compose = yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())
    image: str = compose["services"][service]["image"]
    return image.rsplit(":", 1)[1].removeprefix("v")


class TestPrometheusConfig:
    def test_compose_config_syntax(self) -> None:
        """The compose prometheus.yml as written passes `promtool check config --syntax-only`."""
        result = _run(
            tool("promtool"),
            "check",
            "config",
            "--syntax-only",
            str(COMPOSE_DIR / "prometheus" / "prometheus.yml"),
        )
        assert result.returncode == 0, result.stdout + result.stderr

    def test_config_with_mounts_resolved_and_committed_rules(self, tmp_path: Path) -> None:
        """With the bind mounts resolved, the config and the committed rules it loads pass promtool."""
        config = tmp_path / "prometheus.yml"
        config.write_text(dump_yaml(prometheus_config(COMPOSE_DIR, LOOPBACK)))
        result = _run(tool("promtool"), "check", "config", str(config))
        assert result.returncode == 0, result.stdout + result.stderr
        assert re.search(r"SUCCESS: [1-9]\d* rules found", result.stdout), result.stdout

    def test_config_with_rules_rendered_from_a_config(self, tmp_path: Path) -> None:
        """The stack's config with rules rendered from a non-default config passes promtool."""
        rules = render_rules_into(
            Config.model_validate({"alerts": {"rate_window": "2m", "high_error_rate": {"for": "0s"}}}),
            tmp_path / "rules",
        )
        config = tmp_path / "prometheus.yml"
        config.write_text(
            dump_yaml(prometheus_config(COMPOSE_DIR, LOOPBACK, rules_dir=rules, evaluation_interval="1s"))
        )
        result = _run(tool("promtool"), "check", "config", str(config))
        assert result.returncode == 0, result.stdout + result.stderr
        assert str(rules) in result.stdout

    def test_image_is_the_tested_version(self) -> None:
        """The compose image is the Prometheus version these checks run with."""
        assert _image_tag("prometheus") == _version("prometheus")


class TestAlertmanagerConfig:
    def test_compose_config(self) -> None:
        """The compose alertmanager.yml passes `amtool check-config`."""
        result = _run(tool("amtool"), "check-config", str(COMPOSE_DIR / "alertmanager" / "alertmanager.yml"))
        assert result.returncode == 0, result.stdout + result.stderr

    def test_loopback_config(self, tmp_path: Path) -> None:
        """The config the no-Docker stack writes passes `amtool check-config`."""
        config = tmp_path / "alertmanager.yml"
        config.write_text(dump_yaml(alertmanager_config(COMPOSE_DIR, LOOPBACK)))
        result = _run(tool("amtool"), "check-config", str(config))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "http://127.0.0.1:19095/alerts" in config.read_text()

    def test_readme_slack_and_email_example(self, tmp_path: Path) -> None:
        """The receivers example in the README's "Local stack" section passes `amtool check-config`."""
        section = (REPO / "README.md").read_text().split("## Local stack", 1)[1]
        (example,) = [b for b in re.findall(r"```yaml\n(.*?)```", section, re.S) if "slack_configs" in b]
        config = tmp_path / "alertmanager.yml"
        config.write_text(example)
        result = _run(tool("amtool"), "check-config", str(config))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "3 receivers" in result.stdout

    def test_image_is_the_tested_version(self) -> None:
        """The compose image is the Alertmanager version these checks run with."""
        assert _image_tag("alertmanager") == _version("alertmanager")

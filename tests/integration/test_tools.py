"""The tools from scripts/install-tools.sh are the right versions and the start_* helpers manage them."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.servers import (
    ManagedProcess,
    PromQueryError,
    RunningServer,
    ServerStartError,
    prom_query,
    promtool_check_metrics,
    redis_ping,
    start_alertmanager,
    start_prometheus,
    start_pushgateway,
    start_redis,
    start_victoria_metrics,
    tool,
    wait_for,
)

pytestmark = pytest.mark.integration

PROMETHEUS_CONFIG = "global:\n  scrape_interval: 15s\n"
ALERTMANAGER_CONFIG = "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n"


def _version(name: str) -> str:
    result = subprocess.run([tool(name), "--version"], capture_output=True, text=True, timeout=30, check=True)
    output = result.stdout + result.stderr
    match = re.search(r"version (\d+\.\d+\.\d+)", output)
    assert match, f"no version in {name} --version output: {output!r}"
    return match.group(1)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class TestVersions:
    def test_prometheus_is_3x(self) -> None:
        """Prometheus is a 3.x release."""
        assert _version("prometheus").startswith("3.")

    def test_promtool_is_3x(self) -> None:
        """Promtool is a 3.x release."""
        assert _version("promtool").startswith("3.")

    def test_alertmanager_is_0_2x_or_later(self) -> None:
        """Alertmanager is 0.20 or later."""
        major, minor, _ = (int(part) for part in _version("alertmanager").split("."))
        assert (major, minor) >= (0, 20)

    def test_amtool_matches_alertmanager(self) -> None:
        """Amtool has the same version as Alertmanager."""
        assert _version("amtool") == _version("alertmanager")

    def test_redis_server_is_7_or_later(self) -> None:
        """redis-server is 7.x or later."""
        result = subprocess.run(
            [tool("redis-server"), "--version"], capture_output=True, text=True, check=True
        )
        match = re.search(r"v=(\d+)\.", result.stdout)
        assert match, result.stdout
        assert int(match.group(1)) >= 7


STARTERS: dict[str, Callable[[Path], RunningServer]] = {
    "prometheus": lambda tmp: start_prometheus(tmp, PROMETHEUS_CONFIG),
    "alertmanager": lambda tmp: start_alertmanager(tmp, ALERTMANAGER_CONFIG),
    "victoria-metrics": start_victoria_metrics,
    "pushgateway": start_pushgateway,
    "redis": start_redis,
}


@pytest.mark.parametrize("name", sorted(STARTERS))
class TestStartHelpers:
    def test_serves_on_loopback_port(self, name: str, tmp_path: Path) -> None:
        """The server listens on the port and 127.0.0.1 address its URL names."""
        with STARTERS[name](tmp_path) as server:
            assert server.process.running()
            assert f"127.0.0.1:{server.port}" in server.url
            assert wait_for(lambda: _connects(server.port), timeout_seconds=5)

    def test_stop_kills_the_pid(self, name: str, tmp_path: Path) -> None:
        """stop() ends the process: its pid is gone and its port closed."""
        server = STARTERS[name](tmp_path)
        pid = server.process.pid
        server.stop()
        assert not _pid_alive(pid)
        assert not _connects(server.port)


def _connects(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


class TestServers:
    def test_redis_answers_ping(self, tmp_path: Path) -> None:
        """redis-cli gets PONG from a started Redis."""
        with start_redis(tmp_path) as redis:
            result = subprocess.run(
                [tool("redis-cli"), "-p", str(redis.port), "ping"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
            assert result.stdout.strip() == "PONG"
            assert redis_ping(redis.port)

    def test_victoria_metrics_answers_queries(self, tmp_path: Path) -> None:
        """VictoriaMetrics evaluates PromQL through the Prometheus query API."""
        with start_victoria_metrics(tmp_path) as vm:
            [sample] = prom_query(vm.url, "vector(1)")
            assert sample["value"][1] == "1"

    def test_prometheus_answers_queries(self, tmp_path: Path) -> None:
        """prom_query returns the samples of an instant query."""
        with start_prometheus(tmp_path, PROMETHEUS_CONFIG) as prom:
            [sample] = prom_query(prom.url, 'label_replace(vector(2), "a", "b", "", "")')
            assert sample["metric"] == {"a": "b"}
            assert sample["value"][1] == "2"

    def test_prom_query_raises_with_error_text(self, tmp_path: Path) -> None:
        """A bad expression raises PromQueryError carrying Prometheus's reason."""
        with (
            start_prometheus(tmp_path, PROMETHEUS_CONFIG) as prom,
            pytest.raises(PromQueryError, match="bad_data"),
        ):
            prom_query(prom.url, "sum(")

    def test_bad_config_raises_with_log_tail(self, tmp_path: Path) -> None:
        """A server that exits while starting raises ServerStartError with its log."""
        with pytest.raises(ServerStartError, match="exited with code"):
            start_prometheus(tmp_path, "scrape_configs: [{job_name: }]\n")


class TestManagedProcess:
    def test_stop_kills_a_process_ignoring_sigterm(self, tmp_path: Path) -> None:
        """stop() falls back to SIGKILL when SIGTERM is ignored."""
        script = (
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ignoring', flush=True); time.sleep(60)"
        )
        process = ManagedProcess("stubborn", [sys.executable, "-c", script], workdir=tmp_path)
        wait_for(lambda: "ignoring" in process.log_tail(), timeout_seconds=10)
        assert process.stop(timeout_seconds=0.5) == -9
        assert not _pid_alive(process.pid)


class TestPromtool:
    def test_accepts_valid_exposition(self) -> None:
        """promtool check metrics accepts a well-formed counter."""
        text = "# HELP x_total Things.\n# TYPE x_total counter\nx_total 1\n"
        code, output = promtool_check_metrics(text)
        assert code == 0, output

    def test_rejects_invalid_exposition(self) -> None:
        """promtool check metrics rejects text that does not parse."""
        code, _ = promtool_check_metrics("not a metric line {\n")
        assert code != 0

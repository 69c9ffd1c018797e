"""`subagent-telemetry top` in a real terminal (tmux) against a real agent's /metrics and real Prometheus."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from subagent_telemetry import Config, SubagentTelemetry
from tests.support.browser import screenshot_dir, terminal_png
from tests.support.demo import demo_scraped_by_prometheus
from tests.support.servers import (
    RunningServer,
    free_port,
    prom_query,
    wait_for,
)
from tests.support.terminal import TmuxSession

pytestmark = pytest.mark.integration


def _config(port: int = 0) -> Config:
    return Config.model_validate(
        {
            "agent": {"subagent": {"max_executions": 20, "max_total_tokens": 1000, "max_depth": 3}},
            "telemetry": {"log_executions": False, "prometheus": {"port": port}},
        }
    )


def _top(url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "subagent_telemetry.cli", "top", url, "--interval", "0.5", *extra]


def _run_known_workload(tel: SubagentTelemetry) -> None:
    """4 executions at depth 1, each delegating once (depth 2); 2 of the children fail; 150 tokens each."""
    for i in range(4):
        with tel.execution("planner"):
            try:
                with tel.execution("coder") as child:
                    child.record_tokens(input=100, output=50)
                    if i % 2:
                        raise RuntimeError("model call failed")
            except RuntimeError:
                pass


def _whole(screen: str) -> bool:
    """The frame is drawn to its last line, the key help (capture-pane may catch a redraw half-way)."""
    return "q quit" in screen


def _line(screen: str, pattern: str) -> str:
    found = [line for line in screen.splitlines() if re.match(pattern, line)]
    assert found, f"no line matching {pattern!r} in:\n{screen}"
    return found[0]


@pytest.fixture
def agent() -> Iterator[tuple[SubagentTelemetry, str]]:
    tel = SubagentTelemetry(_config(), registry=CollectorRegistry())
    server = tel.serve()
    yield tel, server.url
    tel.shutdown(timeout_seconds=1)


class TestAgentMetrics:
    def test_screen_shows_per_depth_counts_quota_bars_and_error_ratio(
        self, agent: tuple[SubagentTelemetry, str]
    ) -> None:
        """Counts per depth, each quota's used/limit with its share, and the window's error ratio."""
        tel, url = agent
        with TmuxSession(_top(url), width=120, height=40) as term:
            term.wait_for_screen(lambda s: "source ok" in s)
            _run_known_workload(tel)
            screen = term.wait_for_screen(lambda s: "25.0%" in s and _whole(s))
        assert re.search(r"\b1\s+4\s", _line(screen, r"\s*1\s"))
        assert re.search(r"\b2\s+4\s", _line(screen, r"\s*2\s"))
        total = _line(screen, r"\s*all\s").split()
        assert total[:2] == ["all", "8"]
        assert total[-3:] == ["2", "25.0%", "0"]  # errors, error ratio, active
        assert "error ratio  25.0%" in screen
        assert "ABOVE THRESHOLD" in screen  # 25 % > the 5 % alert threshold
        executions = _line(screen, r"\s*executions\s").split()
        assert executions[:3] == ["executions", "8", "20"]
        assert "40.0%" in executions
        assert "━" in _line(screen, r"\s*executions\s")  # the bar
        tokens = _line(screen, r"\s*tokens\s").split()
        assert tokens[:3] == ["tokens", "600", "1,000"]
        assert "60.0%" in tokens

    def test_q_quits(self, agent: tuple[SubagentTelemetry, str]) -> None:
        """Pressing q ends the program and gives the terminal back."""
        _, url = agent
        with TmuxSession(_top(url)) as term:
            term.wait_for_screen(_whole)
            term.send_keys("q")
            assert term.wait_for_exit(timeout_seconds=5)

    def test_dead_source_is_shown_then_recovers(self, tmp_path: Path) -> None:
        """A source that does not answer is shown as down (no traceback), and data appears once it serves."""
        port = free_port()
        with TmuxSession(_top(f"http://127.0.0.1:{port}/metrics")) as term:
            down = term.wait_for_screen(lambda s: "SOURCE DOWN" in s)
            down_ansi = term.screen(ansi=True)
            assert "Traceback" not in down
            assert "retrying every 0.5s" in down
            tel = SubagentTelemetry(_config(port), registry=CollectorRegistry())
            try:
                tel.serve()
                _run_known_workload(tel)
                up = term.wait_for_screen(lambda s: "source ok" in s and _whole(s))
            finally:
                tel.shutdown(timeout_seconds=1)
        assert "SOURCE DOWN" not in up
        assert _line(up, r"\s*all\s").split()[:2] == ["all", "8"]
        if (shots := screenshot_dir()) is not None:
            terminal_png(down_ansi, shots / "top-source-down.png")

    def test_slow_source_is_shown_and_q_still_quits(self) -> None:
        """A source that accepts but never answers is shown as timed out, and q quits at once meanwhile."""
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(16)
            url = f"http://127.0.0.1:{silent.getsockname()[1]}/metrics"
            with TmuxSession(_top(url, "--timeout", "1")) as term:
                screen = term.wait_for_screen(lambda s: "SOURCE DOWN" in s and "timed out" in s)
                assert "Traceback" not in screen
                term.send_keys("q")
                assert term.wait_for_exit(timeout_seconds=3)

    def test_fits_a_small_terminal(self, agent: tuple[SubagentTelemetry, str]) -> None:
        """In an 80x24 terminal the header and the tables fit without cut-off column headings."""
        tel, url = agent
        _run_known_workload(tel)
        with TmuxSession(_top(url), width=80, height=24) as term:
            screen = term.wait_for_screen(lambda s: "source ok" in s and _whole(s))
        assert "Executions by depth" in screen
        assert "alerts: shown when the source is Prometheus" in screen
        assert "…" not in screen
        assert len(screen.splitlines()) <= 24


class TestOnce:
    def test_once_prints_one_frame_and_exits(self, agent: tuple[SubagentTelemetry, str]) -> None:
        """--once prints one frame with the counts and exits 0 (for scripts and CI)."""
        tel, url = agent
        _run_known_workload(tel)
        result = subprocess.run(
            [*_top(url, "--once")], capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 0, result.stderr
        assert _line(result.stdout, r"\s*all\s").split()[:2] == ["all", "8"]
        assert "q quit" not in result.stdout

    def test_once_shows_the_money_budget_as_a_quota_row(self) -> None:
        """With agent.subagent.max_total_cost set, spend appears as the `cost` quota with its limit."""
        config = Config.model_validate(
            {
                "agent": {"subagent": {"max_total_cost": 0.5}},
                "telemetry": {"log_executions": False, "prometheus": {"port": 0}},
            }
        )
        tel = SubagentTelemetry(config, registry=CollectorRegistry())
        try:
            url = tel.serve().url
            result = subprocess.run(
                _top(url, "--once"), capture_output=True, text=True, timeout=30, check=False
            )
        finally:
            tel.shutdown(timeout_seconds=1)
        assert result.returncode == 0, result.stderr
        assert _line(result.stdout, r"\s*cost\s").split()[:4] == ["cost", "0", "0.5", "0.0%"]

    def test_once_lists_the_top_agents_when_the_agent_label_is_on(self) -> None:
        """With telemetry.agent_label enabled, each agent's executions and errors are listed."""
        config = Config.model_validate(
            {
                "agent": {"subagent": {"max_executions": 20}},
                "telemetry": {
                    "log_executions": False,
                    "prometheus": {"port": 0},
                    "agent_label": {"enabled": True},
                },
            }
        )
        tel = SubagentTelemetry(config, registry=CollectorRegistry())
        try:
            url = tel.serve().url
            _run_known_workload(tel)
            result = subprocess.run(
                _top(url, "--once"), capture_output=True, text=True, timeout=30, check=False
            )
        finally:
            tel.shutdown(timeout_seconds=1)
        assert result.returncode == 0, result.stderr
        assert "Top agents" in result.stdout
        assert re.search(r"\bplanner\s+4\s+0\b", result.stdout), result.stdout
        assert re.search(r"\bcoder\s+4\s+2\b", result.stdout), result.stdout

    def test_without_a_terminal_it_prints_plain_frames(self, agent: tuple[SubagentTelemetry, str]) -> None:
        """With stdout not a terminal, frames are printed one after another as plain text (no escapes)."""
        tel, url = agent
        _run_known_workload(tel)
        process = subprocess.Popen(_top(url), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        timer = threading.Timer(30, process.kill)  # Bounds the test if frames never come.
        timer.start()
        lines: list[str] = []
        try:
            assert process.stdout is not None
            while sum("Executions by depth" in line for line in lines) < 2:
                line = process.stdout.readline()
                assert line, "top exited or printed nothing"
                lines.append(line)
        finally:
            timer.cancel()
            process.terminate()
            process.wait(timeout=10)
        assert all("\x1b[" not in line for line in lines)

    def test_once_against_a_dead_source_says_so_and_exits_1(self) -> None:
        """--once on a source that does not answer prints the failure, not a traceback, and exits 1."""
        result = subprocess.run(
            [*_top(f"http://127.0.0.1:{free_port()}/metrics", "--once")],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 1
        assert "SOURCE DOWN" in result.stdout
        assert "Traceback" not in result.stdout + result.stderr


@pytest.fixture(scope="module")
def demo_and_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, RunningServer]]:
    """The real demo agent (a subprocess) scraped every second by a real Prometheus with the rules."""
    with demo_scraped_by_prometheus(tmp_path_factory.mktemp("top-prom")) as stack:
        yield stack.metrics_url, stack.prometheus


class TestPrometheusSource:
    def test_screen_shows_the_demo_fleet_from_prometheus(
        self, demo_and_prometheus: tuple[str, RunningServer]
    ) -> None:
        """Against Prometheus: every depth's count (as Prometheus has it), the quotas and the alerts line."""
        _, prometheus = demo_and_prometheus
        query = 'sum by (depth) (subagent_executions_total{depth="1"})'
        wait_for(lambda: prom_query(prometheus.url, query), timeout_seconds=30)
        before = float(prom_query(prometheus.url, query)[0]["value"][1])
        with TmuxSession(_top(prometheus.url, "--window", "30")) as term:
            screen = term.wait_for_screen(lambda s: "source ok" in s and _whole(s))
            after = float(prom_query(prometheus.url, query)[0]["value"][1])
            shown_ansi = term.screen(ansi=True)
        assert "(Prometheus)" in screen
        assert "max (busiest process)" in _line(screen, r"concurrency")  # in-memory store: per process
        for depth in ("1", "2", "3", "all"):
            _line(screen, rf"\s*{depth}\s+\d")
        shown = float(_line(screen, r"\s*1\s").split()[1].replace(",", ""))
        assert before <= shown <= after
        for resource in ("executions", "tokens", "time_seconds"):
            _line(screen, rf"\s*{resource}\s+\d")
        assert re.search(r"alerts: none firing|FIRING: Subagent", screen)
        if (shots := screenshot_dir()) is not None:
            terminal_png(shown_ansi, shots / "top-prometheus.png")

    def test_a_selector_matching_nothing_is_said(
        self, demo_and_prometheus: tuple[str, RunningServer], tmp_path: Path
    ) -> None:
        """A selector that matches no series is reported as such (exit 1), not shown as empty tables."""
        _, prometheus = demo_and_prometheus
        config = tmp_path / "agent.yaml"
        config.write_text("alerts:\n  selector: 'job=\"nope\"'\n")
        result = subprocess.run(
            _top(prometheus.url, "--once", "--config", str(config)),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 1
        assert 'no subagent metrics match {job="nope"}' in result.stdout

    def test_firing_alerts_are_shown(self, demo_and_prometheus: tuple[str, RunningServer]) -> None:
        """The rendered rules' alerts that Prometheus has firing appear by name (the demo refuses work)."""
        _, prometheus = demo_and_prometheus
        firing = 'ALERTS{alertname="SubagentQuotaRejections", alertstate="firing"}'
        wait_for(lambda: prom_query(prometheus.url, firing), timeout_seconds=60)
        with TmuxSession(_top(prometheus.url)) as term:
            screen = term.wait_for_screen(lambda s: "FIRING:" in s and _whole(s))
        assert "SubagentQuotaRejections" in _line(screen, r"FIRING:")

    def test_screen_from_the_demo_metrics_url(self, demo_and_prometheus: tuple[str, RunningServer]) -> None:
        """Against the demo's own /metrics: rates appear after two reads and every depth has a row."""
        metrics_url, _ = demo_and_prometheus
        with TmuxSession(_top(metrics_url)) as term:
            screen = term.wait_for_screen(
                lambda s: _whole(s) and re.search(r"^\s*all\s+\d+\s+\d+\.\d\d", s, re.M) is not None
            )
            shown_ansi = term.screen(ansi=True)
        assert "(agent /metrics)" in screen
        assert "alerts: shown when the source is Prometheus" in screen
        if (shots := screenshot_dir()) is not None:
            terminal_png(shown_ansi, shots / "top-agent.png")

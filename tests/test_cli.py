"""The command line: clear errors, no tracebacks, a demo that runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from subagent_telemetry.cli import EXIT_CONFIG, EXIT_OK, main


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "subagent_telemetry.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_validate_accepts_a_good_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """validate exits 0 and echoes the effective quotas."""
    path = tmp_path / "agent.yaml"
    path.write_text("agent: {subagent: {max_total_tokens: 50000, max_executions: 20}}\n")
    assert main(["validate", str(path)]) == EXIT_OK
    assert "max_executions=20" in capsys.readouterr().out


def test_validate_reports_one_clear_error_without_traceback(tmp_path: Path) -> None:
    """A bad file exits 2 with the key, value and line on stderr, and no traceback."""
    path = tmp_path / "agent.yaml"
    path.write_text("agent:\n  subagent:\n    max_depth: 42\n")
    result = _cli("validate", str(path))
    assert result.returncode == EXIT_CONFIG
    assert "agent.subagent.max_depth" in result.stderr
    assert "line 3" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_reports_yaml_syntax_errors_without_traceback(tmp_path: Path) -> None:
    """Broken YAML is one line of error, not a parser traceback."""
    path = tmp_path / "agent.yaml"
    path.write_text("agent: {subagent: [\n")
    result = _cli("validate", str(path))
    assert result.returncode == EXIT_CONFIG
    assert "YAML syntax error" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_once_runs_a_batch_and_exits(capsys: pytest.CaptureFixture[str]) -> None:
    """demo --once N runs N top-level executions without serving and prints a summary."""
    assert (
        main(["demo", "--once", "5", "--no-serve", "--seed", "3", "--preset", "performance-optimized"]) == 0
    )
    out = capsys.readouterr().out
    assert "started=" in out
    assert "completed=" in out


def test_demo_rejects_an_error_rate_above_one() -> None:
    """--error-rate is a ratio."""
    result = _cli("demo", "--error-rate", "5", "--no-serve")
    assert result.returncode == 2
    assert "not between 0 and 1" in result.stderr


def test_demo_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """SIGTERM (docker stop) ends the demo with exit 0 and its final summary, not a traceback."""
    import signal
    import time

    from tests.support.servers import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "subagent_telemetry.cli", "demo", "--port", str(port), "--seed", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "stopped" in out
    assert "Traceback" not in err

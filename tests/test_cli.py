"""The command line: clear errors, no tracebacks, a demo that runs."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from subagent_telemetry.cli import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, build_parser, main


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
    assert "executions=" in out
    assert "completions=" in out


def test_demo_summary_counts_what_the_metrics_count() -> None:
    """The summary's executions/completions/errors/refused equal the exported counters."""
    import io

    from prometheus_client import CollectorRegistry

    from subagent_telemetry import Config, SubagentTelemetry
    from subagent_telemetry.tools._demo import DemoOptions, run_demo

    registry = CollectorRegistry()
    tel = SubagentTelemetry(Config.preset("cost-optimized"), registry=registry)
    out = io.StringIO()
    stats = run_demo(tel, DemoOptions(seed=7, once=12, error_rate=0.3, time_scale=0.0, out=out))

    def total(name: str) -> float:
        return sum(
            s.value for m in registry.collect() for s in m.samples if s.name == name and "le" not in s.labels
        )

    assert stats.executions == total("subagent_executions_total") > 0
    assert stats.completions == total("subagent_completions_total")
    assert stats.errors == total("subagent_errors_total")
    # Refused executions never ran, so they are the executions without a duration observation.
    assert stats.refused == total("subagent_executions_total") - total("subagent_duration_seconds_count") > 0
    assert stats.executions == stats.completions + stats.errors
    assert f"executions={stats.executions} completions={stats.completions}" in out.getvalue()


def test_version_prints_the_package_version() -> None:
    """--version answers with the installed distribution's version."""
    from importlib.metadata import version

    result = _cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"subagent-telemetry {version('subagent-telemetry')}"


def test_validate_takes_the_file_as_config_option_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`validate --config FILE` is the same as `validate FILE`, like every other subcommand."""
    path = tmp_path / "agent.yaml"
    path.write_text("agent: {subagent: {max_executions: 7}}\n")
    assert main(["validate", "--config", str(path)]) == EXIT_OK
    assert "max_executions=7" in capsys.readouterr().out


def test_validate_without_a_file_is_a_clear_error() -> None:
    """No file at all exits 2 and says how to give one."""
    result = _cli("validate")
    assert result.returncode == EXIT_CONFIG
    assert "validate --config" in result.stderr
    assert "Traceback" not in result.stderr


def _parsers() -> list[argparse.ArgumentParser]:
    found = []
    todo = [build_parser()]
    while todo:
        parser = todo.pop()
        found.append(parser)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())
    return found


def test_every_help_shows_the_defaults() -> None:
    """Every option with a default value says it in --help."""
    for parser in _parsers():
        text = parser.format_help()
        for action in parser._actions:
            if action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
                continue
            assert action.help is not None
            helped = parser._get_formatter()._expand_help(action)  # what --help prints for it
            assert "default" in helped, (parser.prog, action.option_strings)
        assert "usage:" in text


def test_render_writes_into_deploy_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`render` without --out writes deploy/ (the README's directory)."""
    monkeypatch.chdir(tmp_path)
    assert main(["render", "--format", "rules"]) == EXIT_OK
    assert (tmp_path / "deploy" / "alerts" / "rules.yaml").is_file()


def test_render_format_writes_only_that_format(tmp_path: Path) -> None:
    """--format kubernetes writes the monitor and the dashboard ConfigMaps and nothing else."""
    assert main(["render", "--format", "kubernetes", "--out", str(tmp_path)]) == EXIT_OK
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["kubernetes/grafana-dashboards.yaml", "kubernetes/monitor.yaml"]


def test_render_namespace_and_labels_override_the_config(tmp_path: Path) -> None:
    """--namespace and --label reach the PrometheusRule and the monitor."""
    import yaml

    args = ["render", "--format", "prometheus-rule", "--format", "kubernetes", "--out", str(tmp_path)]
    assert main([*args, "--namespace", "obs", "--label", "release=prom"]) == EXIT_OK
    rule = yaml.safe_load((tmp_path / "alerts" / "prometheus-rule.yaml").read_text())
    monitor = yaml.safe_load((tmp_path / "kubernetes" / "monitor.yaml").read_text())
    for doc in (rule, monitor):
        assert doc["metadata"]["namespace"] == "obs"
        assert doc["metadata"]["labels"]["release"] == "prom"


def test_render_refuses_a_bad_label_override_without_traceback(tmp_path: Path) -> None:
    """An invalid label value is one error naming the key, like a bad config file."""
    result = _cli("render", "--format", "kubernetes", "--out", str(tmp_path), "--label", "release=not valid!")
    assert result.returncode == EXIT_CONFIG
    assert "kubernetes.monitor.labels" in result.stderr or "prometheus_rule.labels" in result.stderr
    assert "Traceback" not in result.stderr


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


class TestValidateBudgets:
    def test_absent_budgets_print_unlimited_and_warn(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A file with no execution, token or time budget is valid, says unlimited, and warns."""
        path = tmp_path / "agent.yaml"
        path.write_text("agent: {subagent: {max_depth: 2}}\n")
        assert main(["validate", str(path)]) == EXIT_OK
        out, err = capsys.readouterr()
        assert "max_executions=unlimited, max_total_tokens=unlimited, max_total_time=unlimited" in out
        assert "None" not in out
        assert "warning:" in err
        assert "agent.subagent.preset: balanced" in err

    def test_one_budget_set_prints_no_warning(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Setting any one budget silences the warning; the others still print unlimited."""
        path = tmp_path / "agent.yaml"
        path.write_text("agent: {subagent: {max_total_tokens: 5000}}\n")
        assert main(["validate", str(path)]) == EXIT_OK
        out, err = capsys.readouterr()
        assert "max_total_tokens=5000" in out
        assert "max_executions=unlimited" in out
        assert err == ""

    def test_a_preset_file_prints_the_preset_and_its_budgets(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """preset: balanced prints the preset and its budgets, no warning."""
        path = tmp_path / "agent.yaml"
        path.write_text("agent: {subagent: {preset: balanced, max_executions: 7}}\n")
        assert main(["validate", str(path)]) == EXIT_OK
        out, err = capsys.readouterr()
        assert "preset=balanced" in out
        assert "max_executions=7, max_total_tokens=100000, max_total_time=600," in out
        assert err == ""


class TestBadInputExitsTwo:
    @pytest.mark.parametrize(
        "data",
        [b"\x7fELF\x02\x01\x01\x00" * 8, b"agent: {subagent: {max_depth: \xe9}}\n"],
        ids=["binary", "latin-1"],
    )
    def test_validate_refuses_binary_and_non_utf8_files(self, tmp_path: Path, data: bytes) -> None:
        """validate prints one error line and exits 2 for a file that is not UTF-8 text."""
        path = tmp_path / "agent.yaml"
        path.write_bytes(data)
        result = _cli("validate", str(path))
        assert result.returncode == EXIT_CONFIG
        assert result.stderr.startswith("error: ")
        assert "Traceback" not in result.stderr

    def test_validate_refuses_an_oversized_file_quickly(self, tmp_path: Path) -> None:
        """A 50 MB file is refused by its size, in well under a second of work."""
        path = tmp_path / "agent.yaml"
        path.write_bytes(b"# " + b"x" * 50_000_000 + b"\n")
        result = _cli("validate", str(path))
        assert result.returncode == EXIT_CONFIG
        assert "larger than" in result.stderr
        assert "Traceback" not in result.stderr

    def test_render_check_reports_a_non_utf8_committed_file_as_drift(self, tmp_path: Path) -> None:
        """render --check compares bytes: a committed file that is not UTF-8 is drift, not a crash."""
        assert main(["render", "--out", str(tmp_path)]) == EXIT_OK
        (tmp_path / "alerts" / "rules.yaml").write_bytes(b"\xff\xfe garbage")
        result = _cli("render", "--check", "--out", str(tmp_path))
        assert result.returncode == EXIT_FAILED
        assert "drift: " in result.stderr
        assert "Traceback" not in result.stderr

    @pytest.mark.parametrize("check", [[], ["--check"]], ids=["write", "check"])
    def test_render_out_pointing_at_a_file_is_an_error(self, tmp_path: Path, check: list[str]) -> None:
        """render --out naming a file prints error: and exits 2."""
        target = tmp_path / "file.txt"
        target.write_text("not a directory\n")
        result = _cli("render", *check, "--out", str(target))
        assert result.returncode == EXIT_CONFIG
        assert result.stderr.startswith("error: ")
        assert "not a directory" in result.stderr
        assert "Traceback" not in result.stderr

    def test_render_into_an_unwritable_place_is_an_error(self, tmp_path: Path) -> None:
        """A directory that cannot be created (a file in its path) is error: and exit 2."""
        (tmp_path / "file.txt").write_text("x\n")
        result = _cli("render", "--out", str(tmp_path / "file.txt" / "sub"))
        assert result.returncode == EXIT_CONFIG
        assert result.stderr.startswith("error: ")
        assert "Traceback" not in result.stderr


#: Run the CLI with these top-level modules made unimportable, as if the extra were not installed.
_HIDE_MODULES = """
import sys
class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {hidden!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _Blocker())
from subagent_telemetry.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    ("hidden", "config", "extra"),
    [
        ("opentelemetry", "telemetry: {otlp: {enabled: true, endpoint: 'http://127.0.0.1:1'}}", "otel"),
        ("redis", "quota: {store: 'redis://127.0.0.1:1/0'}", "redis"),
    ],
    ids=["otel", "redis"],
)
def test_a_missing_extra_is_one_error_naming_the_pip_command(
    tmp_path: Path, hidden: str, config: str, extra: str
) -> None:
    """With the extra not installed, the demo exits 2 with the pip install command, no traceback."""
    path = tmp_path / "agent.yaml"
    path.write_text(config + "\n")
    script = _HIDE_MODULES.format(hidden={hidden})
    result = subprocess.run(
        [sys.executable, "-c", script, "demo", "--once", "1", "--no-serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert f"pip install 'subagent-telemetry[{extra}]'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("hidden", "config", "extra"),
    [
        ("opentelemetry", "telemetry: {otlp: {enabled: true}}", "otel"),
        ("redis", "quota: {store: 'redis://127.0.0.1:1/0'}", "redis"),
    ],
    ids=["otel", "redis"],
)
def test_validate_warns_when_a_needed_extra_is_missing(
    tmp_path: Path, hidden: str, config: str, extra: str
) -> None:
    """validate accepts the file but warns that this machine lacks the extra it needs."""
    path = tmp_path / "agent.yaml"
    path.write_text(config + "\nagent: {subagent: {max_executions: 5}}\n")
    script = _HIDE_MODULES.format(hidden={hidden})
    result = subprocess.run(
        [sys.executable, "-c", script, "validate", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == EXIT_OK, result.stderr
    assert "warning: " in result.stderr
    assert f"pip install 'subagent-telemetry[{extra}]'" in result.stderr


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["top", "http://127.0.0.1:9/metrics", "--interval", "nan"], "--interval"),
        (["top", "http://127.0.0.1:9/metrics", "--interval", "0"], "--interval"),
        (["top", "http://127.0.0.1:9/metrics", "--timeout", "-1"], "--timeout"),
        (["top", "http://127.0.0.1:9/metrics", "--window", "inf"], "--window"),
        (["tune", "http://127.0.0.1:9", "--end", "nan"], "--end"),
        (["tune", "http://127.0.0.1:9", "--token-budget", "0"], "--token-budget"),
        (["report", "http://127.0.0.1:9", "--start", "inf"], "--start"),
        (["report", "http://127.0.0.1:9", "--end", "soon"], "--end"),
        (["demo", "--no-serve", "--rate", "0"], "--rate"),
        (["demo", "--no-serve", "--rate", "nan"], "--rate"),
        (["demo", "--no-serve", "--duration", "nan"], "--duration"),
        (["demo", "--port", "99999"], "--port"),
        (["demo", "--no-serve", "--once", "-5"], "--once"),
        (["stack", "up", "--rate", "-1"], "--rate"),
    ],
)
def test_numeric_options_refuse_non_finite_or_out_of_range_values_up_front(
    args: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Times, durations, rates and ports are checked by the parser: one line naming the option and the
    value (top --interval nan and demo --rate 0 ended in tracebacks, demo --duration nan never stopped)."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: {args[-1]}" in err or f"argument {option}: '{args[-1]}'" in err
    assert "Traceback" not in err

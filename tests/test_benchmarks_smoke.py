"""The benchmark scripts run and report sane figures (tiny sizes; no timing assertions)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from benchmarks import bench_core, run
from benchmarks.bench_core import Figure
from prometheus_client import CollectorRegistry


def _by_name(figures: list[Figure]) -> dict[str, Figure]:
    return {f.name: f for f in figures}


def _sane(figures: list[Figure]) -> None:
    for figure in figures:
        assert math.isfinite(figure.value), figure
        assert (figure.met is None) == (figure.target == ""), figure


class TestWorkloads:
    def test_library_and_bare_workloads_record_the_same_observations(self) -> None:
        """One library execution and one bare execution produce the same counts and histogram sums."""
        registry = CollectorRegistry()
        bench_core.library_execution(
            bench_core.SubagentTelemetry(bench_core.bench_config(), registry=registry)
        )()
        bare_registry = CollectorRegistry()
        metrics = bench_core.BareMetrics(bare_registry)
        bench_core.bare_bound(metrics)()
        bench_core.bare_labels(metrics)()
        for name, labels in [
            ("subagent_executions_total", {"depth": "1"}),
            ("subagent_completions_total", {"depth": "1", "status": "complete"}),
            ("subagent_turns_used_sum", {"depth": "1"}),
            ("subagent_tokens_consumed_sum", {"depth": "1"}),
            ("subagent_active_count", {"depth": "1"}),
        ]:
            bare = bare_registry.get_sample_value(name, labels)
            assert bare is not None
            assert registry.get_sample_value(name, labels) == bare / 2, name


class TestCoreBenchmarks:
    def test_execution_reports_times_and_both_ratios(self) -> None:
        """The execution benchmark reports four timings and two targeted ratios."""
        figures = bench_core.bench_execution(ops=50, repeats=2)
        _sane(figures)
        assert [f.met is not None for f in figures].count(True) == 2
        assert all(f.value > 0 for f in figures)

    def test_check_and_reserve_reports_a_median_with_its_target(self) -> None:
        """The admission benchmark reports a positive median against the 1 µs target."""
        figures = bench_core.bench_check_and_reserve(ops=100, repeats=2)
        _sane(figures)
        assert figures[0].target == "≤ 1"
        assert figures[0].value > 0

    def test_race_admits_exactly_the_budget(self) -> None:
        """64 racing threads admit exactly the budget: over-admission is reported as 0 and met."""
        figures = _by_name(bench_core.bench_race(threads=64, budget=500))
        over = figures["race: 64 threads, over-admission"]
        assert (over.value, over.met) == (0, True)

    def test_import_compares_against_prometheus_client(self) -> None:
        """The import benchmark times fresh interpreters and reports the ratio to prometheus_client."""
        figures = bench_core.bench_import(repeats=1)
        _sane(figures)
        assert figures[-1].name == "import: ratio vs prometheus_client"
        assert figures[-1].value > 0

    def test_import_offenders_lists_packages_with_times(self) -> None:
        """``-X importtime`` is parsed into (package, ms) pairs, largest first, including ours."""
        offenders = bench_core.import_offenders(top=50)
        times = [ms for _, ms in offenders]
        assert times == sorted(times, reverse=True)
        assert "subagent_telemetry" in dict(offenders)

    def test_rss_runs_in_a_subprocess(self) -> None:
        """The memory benchmark reads VmRSS before and after in a fresh interpreter."""
        figures = bench_core.bench_rss(executions=500, warmup=50)
        _sane(figures)
        assert figures[0].value > 1  # An interpreter with the package loaded is well over 1 MiB.

    def test_demo_exposition_counts_series_and_times_scrapes(self) -> None:
        """The demo benchmark scrapes a running demo and counts its subagent_* series."""
        figures = _by_name(bench_core.bench_demo(run_seconds=0.5, scrapes=2))
        assert figures["demo: series in /metrics (subagent_*)"].value > 0
        assert figures["demo: scrape time (median)"].value > 0


class TestRunner:
    def test_discovers_every_bench_module(self) -> None:
        """The runner finds bench_core (and any other bench_*.py) by file name."""
        assert "bench_core" in run.discover()

    def test_quick_run_writes_the_json_report(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """``run.py --quick --only core`` exits 0 and writes core.json with the machine facts."""
        monkeypatch.setattr(run, "RESULTS", tmp_path)
        assert run.main(["--quick", "--only", "core"]) == 0
        report = json.loads((run.RESULTS / "core.json").read_text())
        assert report["area"] == "core"
        assert report["machine"]["cores"] >= 1
        assert report["figures"]

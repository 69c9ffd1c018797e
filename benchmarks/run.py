"""Run every benchmark area and report: ``make bench`` (= ``.venv/bin/python benchmarks/run.py``).

Convention for an area module — a file ``benchmarks/bench_<area>.py``, found automatically:

* it defines ``AREA = "<area>"`` (defaults to the file name without ``bench_``);
* it defines ``run(quick: bool = False) -> dict`` returning
  ``{"area": str, "figures": [figure, ...], "details": {...}}`` where each figure is
  ``{"name": str, "value": float, "unit": str, "target": str, "met": bool | None}``
  (``target`` empty and ``met`` None for figures without a target; ``bench_core.Figure`` builds them);
* ``quick=True`` shrinks every size so the whole area runs in seconds (the smoke test uses it);
* it measures its baselines in the same run and reports medians of several repeats;
* it raises (e.g. ``AssertionError``) only when a correctness check fails, never for a missed target;
* it may print progress to stderr, never to stdout.

``run.py`` adds the machine facts, prints one table, and writes ``benchmarks/results/<area>.json``
(git-ignored: figures belong to the machine that produced them; docs/benchmarks.md holds the reference
run). Options: ``--only core,otel`` runs some areas; ``--quick``; ``--strict`` exits 1 when a target
is missed (a failed correctness check always exits 1).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def machine_facts() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    from importlib.metadata import version

    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "prometheus_client": version("prometheus-client"),
        "commit": commit,
    }


def discover() -> list[str]:
    return sorted(path.stem for path in HERE.glob("bench_*.py"))


def format_value(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"


def print_table(report: dict[str, Any]) -> None:
    print(f"\n== {report['area']} ==")
    for fig in report["figures"]:
        met = {True: "met", False: "NOT MET", None: ""}[fig["met"]]
        target = f"target {fig['target']}" if fig["target"] else ""
        value = f"{format_value(fig['value'])} {fig['unit']}"
        print(f"  {fig['name']:<52} {value:>20}  {target:<14} {met}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--only", help="comma-separated areas (default: every bench_*.py)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves the scripts run")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is not met")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(HERE))
    modules = discover()
    if args.only:
        wanted = {f"bench_{area.strip()}" for area in args.only.split(",")}
        modules = [m for m in modules if m in wanted]
    facts = machine_facts()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in facts.items()))
    RESULTS.mkdir(exist_ok=True)
    failed, missed = [], []
    for name in modules:
        module = importlib.import_module(name)
        area = getattr(module, "AREA", name.removeprefix("bench_"))
        try:
            report = module.run(quick=args.quick)
        except Exception as exc:  # A correctness check failed: report it, run the other areas.
            print(f"\n== {area} == FAILED: {type(exc).__name__}: {exc}")
            failed.append(area)
            continue
        report = {**report, "machine": facts, "quick": args.quick, "command": " ".join(sys.argv)}
        print_table(report)
        missed += [f"{area}: {f['name']}" for f in report["figures"] if f["met"] is False]
        out = RESULTS / f"{area}.json"
        out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        print(f"  -> {out}")
    if missed:
        print("\ntargets not met:\n  " + "\n  ".join(missed))
    if failed:
        print("\nfailed areas: " + ", ".join(failed))
        return 1
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())

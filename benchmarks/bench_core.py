"""Core benchmarks: the Prometheus hot path, quota admission, import time, memory, demo exposition.

Every figure is a median of several repeats measured in this run, and every ratio compares against bare
prometheus_client measured in the same run, so the figures hold on the machine that produced them.
Each ``bench_*`` function takes its sizes as arguments (the smoke test passes tiny ones) and returns
``Figure``s; ``run()`` is the entry point ``benchmarks/run.py`` calls.
"""

from __future__ import annotations

import gc
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from subagent_telemetry import (
    Config,
    ExecutionLimitReached,
    QuotaLimits,
    QuotaTracker,
    SubagentTelemetry,
)
from subagent_telemetry import _catalog as cat

AREA = "core"

#: Far above anything a benchmark reaches: limits are set (so their checks run) but never hit.
GENEROUS = {"max_executions": 10**12, "max_total_tokens": 10**15, "max_total_time": 10.0**9}
TURNS = 3
INPUT_TOKENS, OUTPUT_TOKENS = 1200, 300


@dataclass
class Figure:
    """One reported number; ``met`` is None when the figure has no target."""

    name: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- timing helpers ----------------------------------------------------------------------------------


def per_op_ns(func: Callable[[], object], ops: int) -> float:
    """Nanoseconds per call of ``func`` over one batch of ``ops`` calls (GC paused, as timeit does)."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for _ in range(ops):
            func()
        return (time.perf_counter_ns() - start) / ops
    finally:
        if gc_was_enabled:
            gc.enable()


def interleaved_medians(funcs: dict[str, Callable[[], object]], ops: int, repeats: int) -> dict[str, float]:
    """Median ns/op of each function; repeats alternate between them so they share machine noise."""
    for func in funcs.values():  # Warm-up: caches, label children, branch predictors.
        per_op_ns(func, max(ops // 10, 1))
    samples: dict[str, list[float]] = {name: [] for name in funcs}
    for _ in range(repeats):
        for name, func in funcs.items():
            samples[name].append(per_op_ns(func, ops))
    return {name: statistics.median(values) for name, values in samples.items()}


# -- one execution: the library vs bare prometheus_client ---------------------------------------------


def bench_config(**subagent: Any) -> Config:
    """Prometheus only, no execution logging, generous limits unless overridden."""
    return Config.model_validate(
        {
            "agent": {"subagent": {**GENEROUS, **subagent}},
            "telemetry": {"log_executions": False, "otlp": {"enabled": False}},
        }
    )


def library_execution(tel: SubagentTelemetry) -> Callable[[], None]:
    """Admission + ``TURNS`` turns + one token record + the outcome, through the public API."""

    def one() -> None:
        with tel.execution("bench") as run:
            for _ in range(TURNS):
                run.record_turn()
            run.record_tokens(input=INPUT_TOKENS, output=OUTPUT_TOKENS)

    return one


class BareMetrics:
    """The same metrics (names, labels, buckets) created directly with prometheus_client."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def histogram(spec: cat.MetricSpec) -> Histogram:
            return Histogram(spec.base_name, spec.help, spec.labels, buckets=spec.buckets, registry=registry)

        self.executions = Counter(cat.EXECUTIONS.base_name, "", cat.EXECUTIONS.labels, registry=registry)
        self.active = Gauge(cat.ACTIVE.base_name, "", cat.ACTIVE.labels, registry=registry)
        self.completions = Counter(cat.COMPLETIONS.base_name, "", cat.COMPLETIONS.labels, registry=registry)
        self.duration = histogram(cat.DURATION)
        self.turns = histogram(cat.TURNS)
        self.tokens = histogram(cat.TOKENS)


def bare_bound(m: BareMetrics) -> Callable[[], None]:
    """The floor: the same observations on label children bound once, up front."""
    executions, active = m.executions.labels("1"), m.active.labels("1")
    duration, completions = m.duration.labels("1", "complete"), m.completions.labels("1", "complete")
    turns_h, tokens_h = m.turns.labels("1"), m.tokens.labels("1")
    clock = time.monotonic

    def one() -> None:
        executions.inc()
        active.inc()
        started = clock()
        turns = 0
        for _ in range(TURNS):
            turns += 1
        tokens = INPUT_TOKENS + OUTPUT_TOKENS
        elapsed = clock() - started
        active.dec()
        turns_h.observe(turns)
        tokens_h.observe(tokens)
        duration.observe(elapsed)
        completions.inc()

    return one


def bare_labels(m: BareMetrics) -> Callable[[], None]:
    """Hand-written instrumentation: ``.labels(...)`` on every call."""
    clock = time.monotonic

    def one() -> None:
        depth = "1"
        m.executions.labels(depth).inc()
        m.active.labels(depth).inc()
        started = clock()
        turns = 0
        for _ in range(TURNS):
            turns += 1
        tokens = INPUT_TOKENS + OUTPUT_TOKENS
        elapsed = clock() - started
        m.active.labels(depth).dec()
        m.turns.labels(depth).observe(turns)
        m.tokens.labels(depth).observe(tokens)
        m.duration.labels(depth, "complete").observe(elapsed)
        m.completions.labels(depth, "complete").inc()

    return one


def bench_execution(ops: int = 20_000, repeats: int = 9) -> list[Figure]:
    limited = SubagentTelemetry(bench_config(), registry=CollectorRegistry())
    unlimited_cfg = bench_config(max_executions=None, max_total_tokens=None, max_total_time=None)
    unlimited = SubagentTelemetry(unlimited_cfg, registry=CollectorRegistry())
    bare = BareMetrics(CollectorRegistry())
    ns = interleaved_medians(
        {
            "library": library_execution(limited),
            "library_unlimited": library_execution(unlimited),
            "bare_bound": bare_bound(bare),
            "bare_labels": bare_labels(bare),
        },
        ops,
        repeats,
    )
    vs_bound = ns["library"] / ns["bare_bound"]
    vs_labels = ns["library"] / ns["bare_labels"]
    return [
        Figure("execution: tel.execution() (generous limits)", ns["library"] / 1000, "µs"),
        Figure("execution: tel.execution() (no limits)", ns["library_unlimited"] / 1000, "µs"),
        Figure("execution: bare, pre-bound children (floor)", ns["bare_bound"] / 1000, "µs"),
        Figure("execution: bare, .labels() per call", ns["bare_labels"] / 1000, "µs"),
        Figure("execution: ratio vs pre-bound floor", vs_bound, "x", "≤ 1.3", vs_bound <= 1.3),
        Figure("execution: ratio vs .labels() per call", vs_labels, "x", "≤ 0.4", vs_labels <= 0.4),
    ]


# -- quota admission ---------------------------------------------------------------------------------


def bench_check_and_reserve(ops: int = 100_000, repeats: int = 9) -> list[Figure]:
    limited = QuotaTracker(QuotaLimits(**GENEROUS))
    warned = QuotaTracker(QuotaLimits(**GENEROUS), warning_ratio=0.8)
    unlimited = QuotaTracker(QuotaLimits())
    ns = interleaved_medians(
        {
            "limited": limited.check_and_reserve,
            "warned": warned.check_and_reserve,
            "unlimited": unlimited.check_and_reserve,
        },
        ops,
        repeats,
    )
    median_us = ns["limited"] / 1000
    return [
        Figure("check_and_reserve (3 limits set)", median_us, "µs", "≤ 1", median_us <= 1.0),
        Figure("check_and_reserve (3 limits + warning ratio)", ns["warned"] / 1000, "µs"),
        Figure("check_and_reserve (unlimited)", ns["unlimited"] / 1000, "µs"),
    ]


def bench_race(threads: int = 64, budget: int = 200_000) -> list[Figure]:
    """``threads`` threads race for ``budget`` executions; admitted must equal the budget exactly."""
    tracker = QuotaTracker(QuotaLimits(max_executions=budget))
    admitted = [0] * threads
    barrier = threading.Barrier(threads + 1)

    def worker(index: int) -> None:
        barrier.wait()
        count = 0
        try:
            while True:
                tracker.check_and_reserve()
                count += 1
        except ExecutionLimitReached:
            admitted[index] = count

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in workers:
        thread.join()
    seconds = time.perf_counter() - start
    total = sum(admitted)
    over = total - budget
    if over != 0 or tracker.get_usage().executions != budget:
        msg = f"over-admission: {threads} threads admitted {total} for a budget of {budget}"
        raise AssertionError(msg)
    return [
        Figure(f"race: {threads} threads, throughput", total / seconds / 1e6, "M admissions/s"),
        Figure(f"race: {threads} threads, over-admission", over, "executions", "= 0", over == 0),
    ]


# -- import time -------------------------------------------------------------------------------------


def _time_subprocess(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def bench_import(repeats: int = 30) -> list[Figure]:
    """Wall time of fresh interpreters importing each package (interleaved, median)."""
    commands = {
        "baseline": [sys.executable, "-c", "pass"],
        "prometheus_client": [sys.executable, "-c", "import prometheus_client"],
        "subagent_telemetry": [sys.executable, "-c", "import subagent_telemetry"],
    }
    for args in commands.values():  # Warm the OS page cache and .pyc files.
        _time_subprocess(args)
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, args in commands.items():
            samples[name].append(_time_subprocess(args))
    ms = {name: statistics.median(values) * 1000 for name, values in samples.items()}
    ratio = ms["subagent_telemetry"] / ms["prometheus_client"]
    return [
        Figure("import: python -c pass", ms["baseline"], "ms"),
        Figure("import: prometheus_client", ms["prometheus_client"], "ms"),
        Figure("import: subagent_telemetry", ms["subagent_telemetry"], "ms"),
        Figure("import: ratio vs prometheus_client", ratio, "x", "≤ 1.2", ratio <= 1.2),
    ]


def import_offenders(top: int = 12) -> list[tuple[str, float]]:
    """Packages by import time (ms, self time summed per top-level package) under ``-X importtime``."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import subagent_telemetry"],
        check=True,
        capture_output=True,
        text=True,
    )
    by_package: dict[str, float] = {}
    for line in result.stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if not line.startswith("import time:") or len(fields) != 3 or not fields[0].strip().isdigit():
            continue
        package = fields[2].strip().split(".")[0]
        by_package[package] = by_package.get(package, 0.0) + int(fields[0]) / 1000
    ranked = sorted(by_package.items(), key=lambda item: -item[1])[:top]
    return [(name, round(ms, 1)) for name, ms in ranked]


# -- memory ------------------------------------------------------------------------------------------

_RSS_SCRIPT = """
import gc, sys
sys.path[:0] = {path!r}
from prometheus_client import CollectorRegistry
from subagent_telemetry import SubagentTelemetry
from bench_core import bench_config, library_execution

def rss_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

one = library_execution(SubagentTelemetry(bench_config(), registry=CollectorRegistry()))
for _ in range({warmup}):
    one()
gc.collect()
before = rss_kib()
for _ in range({executions}):
    one()
gc.collect()
print(before, rss_kib())
"""


def bench_rss(executions: int = 1_000_000, warmup: int = 20_000) -> list[Figure]:
    """RSS growth over ``executions`` executions, measured in a fresh interpreter after a warm-up."""
    path = [str(Path(__file__).resolve().parent)]
    script = _RSS_SCRIPT.format(path=path, warmup=warmup, executions=executions)
    output = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    before_kib, after_kib = (int(v) for v in output.stdout.split())
    growth_mb = (after_kib - before_kib) / 1024
    return [
        Figure("rss: before (after warm-up)", before_kib / 1024, "MiB"),
        Figure(f"rss: growth after {executions:,} executions", growth_mb, "MiB", "< 5", growth_mb < 5),
    ]


# -- the demo's exposition at steady state -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bytes(response.read())


def bench_demo(run_seconds: float = 20.0, scrapes: int = 50) -> list[Figure]:
    """Run ``subagent-telemetry demo`` for ``run_seconds``, then scrape /metrics ``scrapes`` times."""
    port = _free_port()
    cli = Path(sys.executable).with_name("subagent-telemetry")
    args = [str(cli), "demo", "--port", str(port), "--seed", "1", "--duration", str(run_seconds + 600)]
    demo = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                _scrape(url)
                break
            except OSError:
                if demo.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        time.sleep(run_seconds)
        times_ms, body = [], b""
        for _ in range(scrapes):
            start = time.perf_counter()
            body = _scrape(url)
            times_ms.append((time.perf_counter() - start) * 1000)
    finally:
        demo.terminate()
        demo.wait(timeout=10)
    lines = body.decode().splitlines()
    series = [line for line in lines if line and not line.startswith("#")]
    ours = [line for line in series if line.startswith("subagent_")]
    return [
        Figure("demo: series in /metrics (all)", len(series), "series"),
        Figure("demo: series in /metrics (subagent_*)", len(ours), "series"),
        Figure("demo: /metrics size", len(body) / 1024, "KiB"),
        Figure("demo: scrape time (median)", statistics.median(times_ms), "ms"),
    ]


# -- entry point -------------------------------------------------------------------------------------


def run(quick: bool = False) -> dict[str, Any]:
    """All core figures; ``quick`` shrinks every size so the whole run takes a few seconds."""
    figures: list[Figure] = []
    details: dict[str, Any] = {
        "workload": f"admission + {TURNS} record_turn() + 1 record_tokens() + outcome, depth 1",
    }
    print("core: one execution vs bare prometheus_client ...", file=sys.stderr, flush=True)
    figures += bench_execution(ops=200 if quick else 20_000, repeats=3 if quick else 9)
    print("core: check_and_reserve ...", file=sys.stderr, flush=True)
    figures += bench_check_and_reserve(ops=1_000 if quick else 100_000, repeats=3 if quick else 9)
    figures += bench_race(threads=64, budget=2_000 if quick else 200_000)
    print("core: import time ...", file=sys.stderr, flush=True)
    import_figures = bench_import(repeats=3 if quick else 30)
    figures += import_figures
    details["import_offenders_ms"] = import_offenders()
    print("core: RSS over many executions ...", file=sys.stderr, flush=True)
    figures += bench_rss(executions=2_000 if quick else 1_000_000, warmup=200 if quick else 20_000)
    print("core: demo exposition ...", file=sys.stderr, flush=True)
    figures += bench_demo(run_seconds=1.0 if quick else 20.0, scrapes=3 if quick else 50)
    return {"area": AREA, "figures": [f.as_dict() for f in figures], "details": details}


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, ensure_ascii=False))

"""Redis quota store: reserve round trip vs a bare redis-py INCR, admission throughput, server CPU.

Starts its own redis-server (``$SUBAGENT_TELEMETRY_TOOLS/bin`` or PATH) on a free loopback port, no
persistence. Run alone: ``.venv/bin/python benchmarks/run.py --only redis``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from subagent_telemetry import Config, QuotaExceeded, QuotaLimits
from subagent_telemetry.quota._redis_store import RedisQuotaStore, connect

try:  # As benchmarks.bench_redis (tests) or as bench_redis (run.py puts benchmarks/ on sys.path).
    from benchmarks.bench_core import Figure
except ImportError:
    from bench_core import Figure  # type: ignore[no-redef]

AREA = "redis"
REPO = Path(__file__).resolve().parents[1]


def _redis_server() -> str:
    tools = Path(os.environ.get("SUBAGENT_TELEMETRY_TOOLS", str(REPO / ".tools"))) / "bin" / "redis-server"
    found = str(tools) if tools.is_file() else shutil.which("redis-server")
    if not found:
        msg = "redis-server not found; run: bash scripts/install-tools.sh"
        raise RuntimeError(msg)
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Server:
    def __init__(self) -> None:
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        self.process = subprocess.Popen(
            [_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        self.url = f"redis://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def _config(url: str, session: str, max_executions: int | None = None) -> Config:
    return Config.model_validate(
        {
            "agent": {"subagent": {"max_executions": max_executions, "max_concurrency": 1000}},
            "quota": {"store": url, "session": session},
        }
    )


def _median_us(fn: Any, ops: int, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(ops):
            fn()
        runs.append((time.perf_counter() - start) / ops * 1e6)
    return statistics.median(runs)


def bench_round_trip(url: str, ops: int, repeats: int) -> tuple[list[Figure], dict[str, Any]]:
    client = redis.Redis.from_url(url)
    store = RedisQuotaStore.from_config(_config(url, "rt"), client=connect(url))
    limits = QuotaLimits()
    client.incr("bench:warm")
    store.release(store.acquire(limits))
    # Interleave the two so both see the same machine state.
    incr, reserve, cycle = [], [], []
    for _ in range(repeats):
        incr.append(_median_us(lambda: client.incr("bench:incr"), ops, 1))
        reserve.append(_median_us(lambda: store.reserve(limits), ops, 1))
        cycle.append(_median_us(lambda: store.release(store.acquire(limits)), ops, 1))
    incr_us, reserve_us, cycle_us = (statistics.median(x) for x in (incr, reserve, cycle))
    ratio = reserve_us / incr_us
    return [
        Figure("round trip: bare redis-py incr()", incr_us, "µs"),
        Figure("round trip: reserve script (acquire, lease)", reserve_us, "µs"),
        Figure("round trip: reserve / INCR", ratio, "x", "≤ 1.5", ratio <= 1.5),
        Figure("acquire + release (2 scripts)", cycle_us, "µs"),
    ], {"incr_us": incr_us, "reserve_us": reserve_us}


def _admit_until_refused(store: RedisQuotaStore, limits: QuotaLimits) -> int:
    admitted = 0
    while True:
        try:
            store.release(store.acquire(limits))
        except QuotaExceeded:
            return admitted
        admitted += 1


async def _async_admit(store: RedisQuotaStore, limits: QuotaLimits, tasks: int) -> int:
    async def one() -> int:
        admitted = 0
        while True:
            try:
                await store.release_async(await store.acquire_async(limits))
            except QuotaExceeded:
                return admitted
            admitted += 1

    return sum(await asyncio.gather(*(one() for _ in range(tasks))))


def _process_worker(url: str, session: str, budget: int, go: Any, out: Any) -> None:
    store = RedisQuotaStore.from_config(_config(url, session, budget))
    go.wait()
    out.put(_admit_until_refused(store, QuotaLimits(max_executions=budget)))


def bench_throughput(url: str, budget: int, processes: int) -> list[Figure]:
    limits = QuotaLimits(max_executions=budget)
    figures = []
    store = RedisQuotaStore.from_config(_config(url, "tp1", budget))
    start = time.perf_counter()
    admitted = _admit_until_refused(store, limits)
    figures.append(Figure("admissions/s: 1 client (sync)", admitted / (time.perf_counter() - start), "/s"))
    assert admitted == budget, admitted

    store = RedisQuotaStore.from_config(_config(url, "tp16", budget))
    start = time.perf_counter()
    admitted = asyncio.run(_async_admit(store, limits, 16))
    figures.append(Figure("admissions/s: 16 asyncio tasks", admitted / (time.perf_counter() - start), "/s"))
    assert admitted == budget, admitted

    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    workers = [
        ctx.Process(target=_process_worker, args=(url, "tpN", budget, go, out)) for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    time.sleep(1.5)  # Imports and connections happen before the clock starts.
    start = time.perf_counter()
    go.set()
    admitted = sum(out.get(timeout=120) for _ in workers)
    seconds = time.perf_counter() - start
    for worker in workers:
        worker.join()
    figures.append(Figure(f"admissions/s: {processes} processes", admitted / seconds, "/s"))
    assert admitted == budget, admitted  # The invariant, whatever the interleaving.
    return figures


def bench_server_cpu(url: str, ops: int) -> list[Figure]:
    client = redis.Redis.from_url(url)
    store = RedisQuotaStore.from_config(_config(url, "cpu"))
    limits = QuotaLimits()
    store.reserve(limits)
    client.config_resetstat()
    for _ in range(ops):
        store.reserve(limits)
    stats = client.info("commandstats")
    evalsha = stats.get("cmdstat_evalsha", {})
    per_call = float(evalsha.get("usec_per_call", 0.0))
    client.config_resetstat()
    for _ in range(ops):
        client.incr("bench:cpu")
    stats = client.info("commandstats").get("cmdstat_incrby", {})  # redis-py sends incr() as INCRBY.
    incr = float(stats.get("usec_per_call", 0.0))
    return [
        Figure("server CPU per reserve (EVALSHA usec_per_call)", per_call, "µs"),
        Figure("server CPU per INCR (INCRBY usec_per_call)", incr, "µs"),
    ]


def run(quick: bool = False) -> dict[str, Any]:
    server = _Server()
    try:
        ops, repeats = (200, 3) if quick else (5000, 7)
        figures, details = bench_round_trip(server.url, ops, repeats)
        figures += bench_throughput(server.url, 300 if quick else 5000, 2 if quick else 8)
        figures += bench_server_cpu(server.url, ops)
        version = redis.Redis.from_url(server.url).info("server")["redis_version"]
        details.update({"redis_server": version, "redis_py": redis.__version__})
    finally:
        server.stop()
    return {"area": AREA, "figures": [f.as_dict() for f in figures], "details": details}


if __name__ == "__main__":
    for figure in run(quick="--quick" in sys.argv)["figures"]:
        print(f"{figure['name']:55} {figure['value']:12.2f} {figure['unit']} {figure['target']}")

"""Redis quota store: reserve round trip vs a bare redis-py INCR, admission throughput, server CPU, and
the event loop's lag with 1,000 concurrent async executions behind a proxy adding 2 ms per round trip.

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
from prometheus_client import CollectorRegistry

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


def _loop_lag(url: str, session: str, executions: int, blocking: bool) -> tuple[float, float]:
    """(p99 loop lag ms, seconds) while ``executions`` async executions run at once, each recording
    tokens once. ``blocking``: record_tokens takes the synchronous round trip (the code before the
    fix), else it settles in a task of the loop."""
    from subagent_telemetry import SubagentTelemetry
    from subagent_telemetry.quota import _redis_store

    config = Config.model_validate(
        {
            "agent": {"subagent": {"max_concurrency": executions}},
            "telemetry": {"log_executions": False},
            "quota": {"store": url, "session": session, "estimated_tokens": 10},
        }
    )
    tel = SubagentTelemetry(config, registry=CollectorRegistry())
    found = _redis_store._running_loop
    if blocking:
        _redis_store._running_loop = lambda: None  # type: ignore[assignment]
    lags: list[float] = []

    async def ticker(stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            start = loop.time()
            await asyncio.sleep(0.001)
            lags.append((loop.time() - start - 0.001) * 1000)

    async def one(go: asyncio.Event) -> None:
        await go.wait()
        async with tel.execution("lag") as run:
            for _ in range(3):  # An agent's model responses, with work in between.
                await asyncio.sleep(0.01)
                run.record_tokens(output=10)

    async def burst() -> float:
        go = asyncio.Event()
        tasks = [asyncio.ensure_future(one(go)) for _ in range(executions)]
        await asyncio.sleep(0.01)
        start = time.perf_counter()
        go.set()
        await asyncio.gather(*tasks)
        return time.perf_counter() - start

    async def main() -> float:
        await burst()  # Warm-up: the connection pool grows to its working size.
        stop = asyncio.Event()
        tick = asyncio.ensure_future(ticker(stop))
        seconds = await burst()
        stop.set()
        await tick
        return seconds

    try:
        seconds = asyncio.run(main())
    finally:
        _redis_store._running_loop = found
    if url == "memory":
        lags.sort()
        return lags[min(len(lags) - 1, int(len(lags) * 0.99))], seconds
    meta = redis.Redis.from_url(url).hgetall(f"subagent:{{{session}}}:meta")
    assert int(meta[b"tokens"]) == 2 * 3 * 10 * executions, meta  # Warm-up and measured rounds.
    assert int(meta[b"reserved"]) == 0, meta
    lags.sort()
    return lags[min(len(lags) - 1, int(len(lags) * 0.99))], seconds


def bench_loop_lag(port: int, executions: int) -> list[Figure]:
    """Loop lag p99 behind a loopback proxy that holds every reply 2 ms (tests/support/tcp_proxy.py)."""
    sys.path.insert(0, str(REPO))
    from tests.support.tcp_proxy import TcpProxy

    proxy = TcpProxy(port, delay_seconds=0.002)
    try:
        url = f"redis://127.0.0.1:{proxy.port}"
        floor, floor_s = _loop_lag("memory", "lag-memory", executions, blocking=False)
        before, before_s = _loop_lag(url, "lag-before", executions, blocking=True)
        after, after_s = _loop_lag(url, "lag-after", executions, blocking=False)
    finally:
        proxy.close()
    label = f"{executions} async executions"
    return [
        Figure(f"loop lag p99, in-memory store ({label})", floor, "ms"),
        Figure(f"loop lag p99, Redis +2 ms/round trip, blocking record_tokens ({label})", before, "ms"),
        Figure(f"loop lag p99, Redis +2 ms/round trip, record_tokens in a task ({label})", after, "ms"),
        Figure("loop lag p99: blocking / in a task", before / after, "x", "≥ 2", before / after >= 2),
        Figure(f"wall time ({label}): in-memory store", floor_s, "s"),
        Figure(f"wall time ({label}): Redis, blocking record_tokens", before_s, "s"),
        Figure(f"wall time ({label}): Redis, record_tokens in a task", after_s, "s"),
    ]


def run(quick: bool = False) -> dict[str, Any]:
    server = _Server()
    try:
        ops, repeats = (200, 3) if quick else (5000, 7)
        figures, details = bench_round_trip(server.url, ops, repeats)
        figures += bench_throughput(server.url, 300 if quick else 5000, 2 if quick else 8)
        figures += bench_server_cpu(server.url, ops)
        figures += bench_loop_lag(server.port, 100 if quick else 1000)
        version = redis.Redis.from_url(server.url).info("server")["redis_version"]
        details.update({"redis_server": version, "redis_py": redis.__version__})
    finally:
        server.stop()
    return {"area": AREA, "figures": [f.as_dict() for f in figures], "details": details}


if __name__ == "__main__":
    for figure in run(quick="--quick" in sys.argv)["figures"]:
        print(f"{figure['name']:55} {figure['value']:12.2f} {figure['unit']} {figure['target']}")

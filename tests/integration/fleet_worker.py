"""A fleet worker process for tests/integration/test_fleet.py: python -m tests.integration.fleet_worker.

Argument: one JSON object {mode, config, go_file, tasks, ...}. Prints one JSON line with its results.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from subagent_telemetry import ConcurrencyLimitReached, Config, QuotaExceeded, SubagentTelemetry


def _wait_for_go(go_file: str) -> None:
    while not Path(go_file).exists():
        time.sleep(0.002)


async def _race(tel: SubagentTelemetry, spec: dict[str, Any]) -> dict[str, Any]:
    """Each task admits executions until the budget refuses; returns how many were admitted."""
    import redis.asyncio

    probe = redis.asyncio.Redis.from_url(spec["probe_url"]) if spec.get("probe_url") else None
    max_seen = 0
    tokens = int(spec.get("tokens", 0))
    hold = float(spec.get("hold_seconds", 0.0))
    per_task = spec.get("per_task")

    async def task() -> int:
        nonlocal max_seen
        admitted = 0
        while per_task is None or admitted < per_task:
            try:
                async with tel.execution("race") as run:
                    admitted += 1
                    if probe is not None:
                        now = await probe.incr("probe:active")
                        max_seen = max(max_seen, now)
                        await asyncio.sleep(hold)
                        await probe.decr("probe:active")
                    if tokens:
                        run.record_tokens(output=tokens)
            except ConcurrencyLimitReached:
                continue
            except QuotaExceeded:
                break
        return admitted

    _wait_for_go(spec["go_file"])
    counts = await asyncio.gather(*(task() for _ in range(int(spec["tasks"]))))
    return {"admitted": sum(counts), "max_seen": max_seen}


def main() -> None:
    spec = json.loads(sys.argv[1])
    config = Config.model_validate(spec["config"])
    registry = None if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else CollectorRegistry()
    tel = SubagentTelemetry(config, registry=registry)
    mode = spec["mode"]
    if mode == "race":
        result = asyncio.run(_race(tel, spec))
    elif mode == "hold":
        # Finish `finished` executions, then hold `held` open and wait to be killed.
        for _ in range(int(spec.get("finished", 0))):
            with tel.execution("held") as run:
                run.record_tokens(output=int(spec.get("tokens", 0)))
        held = [tel.start("held") for _ in range(int(spec["held"]))]
        print(json.dumps({"ready": True, "held": len(held)}), flush=True)
        time.sleep(120)
        return
    elif mode == "batch":
        from subagent_telemetry.fleet import push_on_exit

        if spec.get("own_sigterm_exit") is not None:  # The program's own handler, installed first.
            code = int(spec["own_sigterm_exit"])
            signal.signal(signal.SIGTERM, lambda *_: os._exit(code))
        timeout = float(spec.get("timeout_seconds", 10.0))
        with push_on_exit(tel, spec["gateway"], spec["job"], spec["grouping_key"], timeout_seconds=timeout):
            for _ in range(int(spec["executions"])):
                with tel.execution("batch"):
                    pass
            if spec.get("fail"):
                raise SystemExit(1)
            if spec.get("wait_for_sigterm"):
                if spec.get("hold_metrics_lock"):  # SIGTERM arrives while recording holds the lock.
                    (backend,) = [b for b in tel._recorder.backends if hasattr(b, "_cells")]
                    backend._lock.acquire()
                print(json.dumps({"ready": True}), flush=True)
                time.sleep(60)
        result = {"pushed": True}
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

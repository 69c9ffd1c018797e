"""A fleet worker spending money on one Redis budget: python -m tests.integration.cost_worker SPEC.

SPEC: JSON {url, session, limit, estimate, executions, seed, go_file}. Each execution is admitted with a
lease, records responses of random cost until the budget stops it, and gives its lease back. Prints one
JSON line: every cost charged (nano-units) and, per execution stopped by the budget, its last response.
"""

from __future__ import annotations

import json
import random
import sys
import time
from decimal import Decimal
from pathlib import Path

import redis

from subagent_telemetry import CostLimitExceeded, QuotaLimits, QuotaTracker
from subagent_telemetry.quota._redis_store import RedisQuotaStore


def main() -> None:
    spec = json.loads(sys.argv[1])
    store = RedisQuotaStore(
        redis.Redis.from_url(spec["url"]),
        session=spec["session"],
        max_concurrency=None,
        estimated_cost_nanos=int(spec["estimate"]),
    )
    tracker = QuotaTracker(QuotaLimits(max_total_cost=Decimal(spec["limit"])), store=store)
    rng = random.Random(spec["seed"])
    charged: list[int] = []
    last: list[int] = []
    while not Path(spec["go_file"]).exists():
        time.sleep(0.002)
    for _ in range(int(spec["executions"])):
        try:
            lease = tracker.acquire(0.0)
        except CostLimitExceeded:
            break
        try:
            for _ in range(int(spec["responses"])):
                cost = rng.randrange(1, 10**7)
                charged.append(cost)
                try:
                    tracker.record_execution(1, lease, cost_nanos=cost)
                except CostLimitExceeded:
                    last.append(cost)
                    break
        finally:
            tracker.release(lease)
    print(json.dumps({"charged": charged, "last": last}))


if __name__ == "__main__":
    main()

"""The money budget on a shared Redis store: exact integer totals, estimates, retries, a fleet race."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from subagent_telemetry import CostLimitExceeded, QuotaLimits, QuotaTracker
from subagent_telemetry.fleet import QuotaLimitsMismatchError
from tests.support.servers import RunningServer, start_redis

redis = pytest.importorskip("redis")
from subagent_telemetry.quota._redis_store import SETTLE_LUA, RedisQuotaStore  # noqa: E402

pytestmark = pytest.mark.integration
NANO = 10**9
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with start_redis(tmp_path_factory.mktemp("cost-redis")) as running:
        yield running


def _tracker(
    server: RunningServer, session: str, limit: str | None = "1", estimate_nanos: int = 0
) -> QuotaTracker:
    store = RedisQuotaStore(
        redis.Redis.from_url(server.url),
        session=session,
        max_concurrency=None,
        estimated_cost_nanos=estimate_nanos,
        lease_seconds=0.3,
    )
    cost = None if limit is None else Decimal(limit)
    return QuotaTracker(QuotaLimits(max_total_cost=cost), store=store)


def _meta(server: RunningServer, session: str) -> dict[str, str]:
    raw = redis.Redis.from_url(server.url).hgetall(f"subagent:{{{session}}}:meta")
    return {k.decode(): v.decode() for k, v in raw.items()}


class TestSettlement:
    def test_spend_is_an_exact_integer_in_the_store(self, server: RunningServer) -> None:
        """Ten responses of 0.1 are exactly 1 000 000 000 nano-units in Redis."""
        tracker = _tracker(server, "exact", limit=None)
        lease = tracker.acquire(0.0)
        for _ in range(10):
            tracker.record_execution(5, lease, cost_nanos=NANO // 10)
        tracker.release(lease)
        assert _meta(server, "exact")["cost"] == str(NANO)
        assert tracker.get_usage().cost_nanos == NANO

    def test_passing_the_limit_raises_and_the_next_admission_is_refused(self, server: RunningServer) -> None:
        """The response past the limit is counted and raises; the spent budget refuses admission."""
        tracker = _tracker(server, "refuse", limit="1")
        lease = tracker.acquire(0.0)
        tracker.record_execution(0, lease, cost_nanos=NANO)
        with pytest.raises(CostLimitExceeded, match=r"1.000000007/1 USD"):
            tracker.record_execution(0, lease, cost_nanos=7)
        tracker.release(lease)
        with pytest.raises(CostLimitExceeded):
            tracker.acquire(0.0)

    def test_admission_reserves_the_estimate(self, server: RunningServer) -> None:
        """With $0.6 estimated per execution, a second concurrent admission under $1 is refused."""
        tracker = _tracker(server, "estimate", limit="1", estimate_nanos=600_000_000)
        first = tracker.acquire(0.0)
        with pytest.raises(CostLimitExceeded):
            tracker.acquire(0.0)
        tracker.record_execution(0, first, cost_nanos=100_000_000)
        assert _meta(server, "estimate")["cost_reserved"] == str(500_000_000)
        tracker.release(first)
        assert _meta(server, "estimate")["cost_reserved"] == "0"
        tracker.release(tracker.acquire(0.0))

    def test_an_expired_lease_gives_its_estimate_back(self, server: RunningServer) -> None:
        """A worker killed mid-execution holds its estimate only until its lease expires."""
        tracker = _tracker(server, "expire", limit="1", estimate_nanos=900_000_000)
        tracker.acquire(0.0)  # Never released: the process "died".
        time.sleep(0.4)
        tracker.release(tracker.acquire(0.0))
        assert _meta(server, "expire")["cost_reserved"] == "0"

    def test_a_retried_settle_charges_once(self, server: RunningServer) -> None:
        """The same request id run twice (a retry after a lost reply) adds the money once."""
        client = redis.Redis.from_url(server.url)
        script = client.register_script(SETTLE_LUA)
        keys = [
            f"subagent:{{retry-cost}}:{k}" for k in ("meta", "leases", "reply:cur", "reply:old", "expired")
        ]
        args = ["s1", "", "0 0 60000 3600000 60000", "12345"]
        assert script(keys=keys, args=args) == script(keys=keys, args=args)
        assert _meta(server, "retry-cost")["cost"] == "12345"

    def test_another_money_limit_for_a_pinned_session_is_refused(self, server: RunningServer) -> None:
        """Processes of one fleet must agree on max_total_cost, like on the other limits."""
        _tracker(server, "pin-cost", limit="5").acquire(0.0)
        with pytest.raises(QuotaLimitsMismatchError, match="max_total_cost"):
            _tracker(server, "pin-cost", limit="6").acquire(0.0)


class TestFleetRace:
    def test_8_processes_overshoot_at_most_one_response_per_execution(
        self, server: RunningServer, tmp_path: Path
    ) -> None:
        """8 processes spending one $2 budget: the total passes the limit by at most each stopped
        execution's last response, and equals the sum of everything charged to the nano-unit."""
        go = tmp_path / "go"
        spec = {"url": server.url, "session": "race", "limit": "2", "estimate": 0, "go_file": str(go)}
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.integration.cost_worker",
                    json.dumps({**spec, "seed": seed, "executions": 50, "responses": 200}),
                ],
                cwd=REPO_ROOT,
                env=dict(os.environ),
                stdout=subprocess.PIPE,
                text=True,
            )
            for seed in range(8)
        ]
        time.sleep(1.0)
        go.touch()
        charged: list[int] = []
        last: list[int] = []
        for worker in workers:
            out, _ = worker.communicate(timeout=120)
            assert worker.returncode == 0, out
            result = json.loads(out.strip().splitlines()[-1])
            charged += result["charged"]
            last += result["last"]
        spent = int(_meta(server, "race")["cost"])
        assert spent == sum(charged)
        assert 2 * NANO < spent <= 2 * NANO + sum(last)

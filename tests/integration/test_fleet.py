"""A fleet of real worker processes sharing one budget on a real redis-server; multiprocess scrapes and
Pushgateway batch runs against the real binaries."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from subagent_telemetry import Config, ExecutionLimitReached, SubagentTelemetry
from subagent_telemetry.fleet import mark_process_dead, multiprocess_registry
from tests.support.servers import (
    REPO_ROOT,
    RunningCluster,
    RunningServer,
    start_pushgateway,
    start_redis,
    start_redis_cluster,
    wait_for,
)

pytestmark = pytest.mark.integration

redis = pytest.importorskip("redis")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with start_redis(tmp_path_factory.mktemp("fleet")) as running:
        yield running


def _config(url: str, session: str, quota: dict[str, Any] | None = None, **subagent: Any) -> dict[str, Any]:
    return {
        "agent": {"subagent": {"max_concurrency": 1000, **subagent}},
        "telemetry": {"log_executions": False},
        "quota": {"store": url, "session": session, **(quota or {})},
    }


def _spawn(spec: dict[str, Any], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.fleet_worker", json.dumps(spec)],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        text=True,
    )


def _race(
    tmp_path: Path,
    config: dict[str, Any],
    processes: int = 8,
    during: Callable[[], None] | None = None,
    **spec: Any,
) -> list[dict[str, Any]]:
    """Start `processes` workers of 8 asyncio tasks each, release them at once (then run `during`),
    collect their results."""
    go = tmp_path / "go"
    workers = [
        _spawn({"mode": "race", "config": config, "go_file": str(go), "tasks": 8, **spec})
        for _ in range(processes)
    ]
    time.sleep(1.0)  # Let every interpreter import and connect before the start signal.
    go.touch()
    if during is not None:
        during()
    results = []
    for worker in workers:
        out, _ = worker.communicate(timeout=60)
        assert worker.returncode == 0, out
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def _meta(server: RunningServer, session: str) -> dict[str, int]:
    client = redis.Redis.from_url(server.url)
    raw = client.hgetall(f"subagent:{{{session}}}:meta")
    return {k.decode(): int(v) for k, v in raw.items() if k != b"limits"}


class TestRaces:
    def test_exactly_the_last_thousand_executions_are_admitted(
        self, server: RunningServer, tmp_path: Path
    ) -> None:
        """8 processes x 8 asyncio tasks racing for 1,000 executions admit exactly 1,000."""
        results = _race(tmp_path, _config(server.url, "race-exec", max_executions=1000))
        assert sum(r["admitted"] for r in results) == 1000
        assert _meta(server, "race-exec")["executions"] == 1000

    def test_exactly_the_token_budget_is_admitted(self, server: RunningServer, tmp_path: Path) -> None:
        """With 10-token estimates on a 10,000-token budget, exactly 1,000 run and 10,000 are counted."""
        config = _config(server.url, "race-tok", {"estimated_tokens": 10}, max_total_tokens=10_000)
        results = _race(tmp_path, config, tokens=10)
        assert sum(r["admitted"] for r in results) == 1000
        meta = _meta(server, "race-tok")
        assert (meta["tokens"], meta["reserved"]) == (10_000, 0)

    def test_fleet_wide_concurrency_is_never_exceeded(self, server: RunningServer, tmp_path: Path) -> None:
        """64 tasks over 8 processes never run more than max_concurrency=5 executions at once."""
        config = _config(server.url, "race-conc", max_concurrency=5)
        results = _race(tmp_path, config, probe_url=server.url, hold_seconds=0.01, per_task=4, processes=8)
        assert sum(r["admitted"] for r in results) == 8 * 8 * 4
        assert max(r["max_seen"] for r in results) == 5


class TestKilledWorker:
    def test_a_killed_workers_leases_expire_and_give_back_slot_and_estimate(
        self, server: RunningServer
    ) -> None:
        """SIGKILL with 3 open reservations: after lease_seconds the slots and estimates come back."""
        config = _config(
            server.url,
            "killed",
            {"estimated_tokens": 100, "lease_seconds": 0.5},
            max_concurrency=3,
            max_total_tokens=1000,
        )
        worker = _spawn({"mode": "hold", "config": config, "held": 3, "finished": 1, "tokens": 50})
        assert worker.stdout is not None
        assert json.loads(worker.stdout.readline())["ready"]
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        assert _meta(server, "killed")["reserved"] == 300
        tel = SubagentTelemetry(Config.model_validate(config), registry=CollectorRegistry())
        time.sleep(0.6)
        with tel.execution("after"):  # All 3 fleet slots were held: admitted only after expiry.
            meta = _meta(server, "killed")
            assert (meta["reserved"], meta["expired_leases"]) == (100, 3)
        meta = _meta(server, "killed")
        assert (meta["executions"], meta["tokens"], meta["reserved"]) == (5, 50, 0)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with start_redis_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


def _cluster_client(cluster: RunningCluster) -> Any:
    from redis.cluster import RedisCluster

    return RedisCluster.from_url(cluster.url.replace("redis+cluster://", "redis://"))


def _cluster_meta(cluster: RunningCluster, session: str) -> dict[str, int]:
    raw = _cluster_client(cluster).hgetall(f"subagent:{{{session}}}:meta")
    return {k.decode(): int(v) for k, v in raw.items() if k not in (b"limits", b"cost_limit")}


def _fail_over(cluster: RunningCluster, session: str) -> None:
    """CLUSTER FAILOVER on the replica of the master holding the session's slot; waits until done."""
    client = _cluster_client(cluster)
    master = client.get_node_from_key(f"subagent:{{{session}}}:meta")
    shard = next(s for s in client.cluster_shards() if any(n[b"port"] == master.port for n in s["nodes"]))
    replica = next(n[b"port"] for n in shard["nodes"] if n[b"role"] == b"replica")
    redis.Redis(port=replica).execute_command("CLUSTER", "FAILOVER")
    wait_for(lambda: _role(replica) == "master" and _role(master.port) == "slave", 20.0, 0.05)
    wait_for(cluster.ready, 20.0, 0.1)


def _role(port: int) -> str:
    return str(redis.Redis(port=port).info("replication")["role"])


class TestCluster:
    def test_the_fleet_race_admits_exactly_the_budget_on_a_cluster(
        self, cluster: RunningCluster, tmp_path: Path
    ) -> None:
        """4 processes x 8 asyncio tasks on a 3-master Redis Cluster admit exactly 500 executions."""
        config = _config(cluster.url, "cluster-race", {"estimated_tokens": 10}, max_executions=500)
        results = _race(tmp_path, config, processes=4, tokens=10)
        assert sum(r["admitted"] for r in results) == 500
        meta = _cluster_meta(cluster, "cluster-race")
        assert (meta["executions"], meta["tokens"], meta["reserved"]) == (500, 5000, 0)

    def test_a_failover_in_the_middle_of_the_race_loses_and_doubles_nothing(
        self, cluster: RunningCluster, tmp_path: Path
    ) -> None:
        """CLUSTER FAILOVER while 4 processes race: the store counts exactly what the workers admitted."""
        session = "cluster-race-failover"
        config = _config(cluster.url, session, {"estimated_tokens": 10}, max_executions=3000)

        at_failover: list[int] = []

        def fail_over() -> None:
            wait_for(lambda: _cluster_meta(cluster, session).get("executions", 0) >= 300, 30.0, 0.01)
            _fail_over(cluster, session)
            at_failover.append(_cluster_meta(cluster, session)["executions"])

        results = _race(tmp_path, config, processes=4, during=fail_over, tokens=10)
        admitted = sum(r["admitted"] for r in results)
        meta = _cluster_meta(cluster, session)
        assert (meta["executions"], meta["tokens"], meta["reserved"]) == (admitted, 10 * admitted, 0)
        assert _cluster_client(cluster).zcard(f"subagent:{{{session}}}:leases") == 0
        assert 0 < at_failover[0] < admitted  # The failover happened while the race ran.

    def test_a_manual_failover_keeps_every_count_and_lease(self, cluster: RunningCluster) -> None:
        """CLUSTER FAILOVER on the session's replica: counts, open leases and the budget carry on."""
        session = "cluster-failover"
        config = _config(cluster.url, session, {"estimated_tokens": 5}, max_executions=10, max_concurrency=5)
        tel = SubagentTelemetry(Config.model_validate(config), registry=CollectorRegistry())
        for _ in range(3):
            with tel.execution("before") as run:
                run.record_tokens(output=1)
        held = [tel.start("held") for _ in range(2)]
        _fail_over(cluster, session)
        meta = _cluster_meta(cluster, session)
        assert (meta["executions"], meta["tokens"], meta["reserved"]) == (5, 3, 10)
        assert _cluster_client(cluster).zcard(f"subagent:{{{session}}}:leases") == 2
        for handle in held:
            handle.record_completion(tokens=2)
        for _ in range(5):
            with tel.execution("after"):
                pass
        with pytest.raises(ExecutionLimitReached, match="10/10"):
            tel.execution("over").__enter__()
        meta = _cluster_meta(cluster, session)
        assert (meta["executions"], meta["tokens"], meta["reserved"]) == (10, 7, 0)
        assert _cluster_client(cluster).zcard(f"subagent:{{{session}}}:leases") == 0


def _families(text: bytes) -> dict[str, list[Any]]:
    families: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text.decode()):
        families.setdefault(family.name, []).extend(family.samples)
    return families


class TestMultiprocess:
    def test_one_scrape_sums_workers_and_exports_the_budget_once(
        self, server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Three workers: counters sum, active is live, quota gauges appear once; a dead worker drops out."""
        folder = tmp_path / "multiproc"
        folder.mkdir()
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
        config = _config(server.url, "multiproc", max_executions=100)
        workers = [
            _spawn(
                {"mode": "hold", "config": config, "held": 1, "finished": 2},
                env={"PROMETHEUS_MULTIPROC_DIR": str(folder)},
            )
            for _ in range(3)
        ]
        for worker in workers:
            assert worker.stdout is not None
            assert json.loads(worker.stdout.readline())["ready"]
        tel = SubagentTelemetry(Config.model_validate(config), registry=CollectorRegistry())
        try:
            scrape = _families(generate_latest(multiprocess_registry(tel)))
            executions = [s for s in scrape["subagent_executions"] if s.name.endswith("_total")]
            assert sum(s.value for s in executions) == 9
            assert sum(s.value for s in scrape["subagent_active_count"]) == 3
            used = [s for s in scrape["subagent_quota_used"] if s.labels["resource"] == "executions"]
            assert [(s.labels["session"], s.value) for s in used] == [("multiproc", 9)]

            os.kill(workers[0].pid, signal.SIGKILL)
            workers[0].wait()
            mark_process_dead(workers[0].pid)
            scrape = _families(generate_latest(multiprocess_registry(tel)))
            assert sum(s.value for s in scrape["subagent_active_count"]) == 2
        finally:
            for worker in workers:
                worker.kill()
                worker.wait()


class TestPushgateway:
    def test_three_batch_runs_land_under_one_grouping_key(self, tmp_path: Path) -> None:
        """Three runs push to one group; the failed last run keeps the earlier last-success time."""
        gateway = start_pushgateway(tmp_path)
        try:
            stamps = []
            for run, fail in enumerate((False, False, True)):
                spec = {
                    "mode": "batch",
                    "config": {"telemetry": {"log_executions": False}},
                    "gateway": gateway.url,
                    "job": "nightly-eval",
                    "grouping_key": {"pipeline": "evals"},
                    "executions": run + 1,
                    "fail": fail,
                }
                worker = _spawn(spec)
                worker.communicate(timeout=60)
                assert worker.returncode == (1 if fail else 0)
                stamps.append(time.time())
            with urllib.request.urlopen(f"{gateway.url}/api/v1/metrics", timeout=5) as response:
                groups = json.load(response)["data"]
            assert [g["labels"] for g in groups] == [{"job": "nightly-eval", "pipeline": "evals"}]
            group = groups[0]

            def value(name: str) -> float:
                return float(group[name]["metrics"][0]["value"])

            assert stamps[0] < value("subagent_batch_last_success_timestamp_seconds") <= stamps[1]
            assert stamps[1] < value("subagent_batch_last_run_timestamp_seconds") <= stamps[2]
            executions = group["subagent_executions_total"]["metrics"]
            assert sum(float(m["value"]) for m in executions) == 3  # The last run's own count.
        finally:
            gateway.stop()

    def test_a_run_leaves_no_series_of_the_previous_run(self, tmp_path: Path) -> None:
        """Run 2 without the agent label, an error or a quota limit leaves none of run 1's series."""
        from subagent_telemetry.fleet import BatchPush

        gateway = start_pushgateway(tmp_path)
        try:
            first = SubagentTelemetry(
                Config.model_validate(
                    {
                        "agent": {"subagent": {"max_executions": 50}},
                        "telemetry": {"log_executions": False, "agent_label": {"enabled": True}},
                    }
                ),
                registry=CollectorRegistry(),
            )
            with first.execution("researcher"):
                pass
            with pytest.raises(RuntimeError), first.execution("researcher"):
                raise RuntimeError
            assert BatchPush(first, gateway.url, "nightly-eval").push()
            second = SubagentTelemetry(
                Config.model_validate({"telemetry": {"log_executions": False}}), registry=CollectorRegistry()
            )
            with second.execution("researcher"):
                pass
            assert BatchPush(second, gateway.url, "nightly-eval").push()

            group = _gateway_group(gateway)
            samples = [
                m for family in group.values() if isinstance(family, dict) for m in family.get("metrics", [])
            ]
            assert [m["labels"] for m in samples if "agent" in m["labels"]] == []
            assert "subagent_quota_limit" not in group
            errors = group["subagent_errors_total"]["metrics"]
            assert sum(float(m["value"]) for m in errors) == 0
        finally:
            gateway.stop()

    def test_sigterm_pushes_the_run_as_failed_and_ends_the_process(self, tmp_path: Path) -> None:
        """A batch run killed by SIGTERM pushes its numbers (no new last success) and dies of SIGTERM."""
        gateway = start_pushgateway(tmp_path)
        try:
            sent = time.time()
            assert _terminated_batch(gateway, executions=2) == -signal.SIGTERM
            group = _gateway_group(gateway)
            assert sent <= float(group["subagent_batch_last_run_timestamp_seconds"]["metrics"][0]["value"])
            assert "subagent_batch_last_success_timestamp_seconds" not in group
            executions = group["subagent_executions_total"]["metrics"]
            assert sum(float(m["value"]) for m in executions) == 2
        finally:
            gateway.stop()

    def test_sigterm_push_chains_the_programs_own_handler(self, tmp_path: Path) -> None:
        """A SIGTERM handler the program installed still runs after the push."""
        gateway = start_pushgateway(tmp_path)
        try:
            assert _terminated_batch(gateway, executions=1, own_sigterm_exit=7) == 7
            group = _gateway_group(gateway)
            assert "subagent_batch_last_run_timestamp_seconds" in group
        finally:
            gateway.stop()

    def test_sigterm_while_recording_holds_a_metrics_lock_still_ends_the_process(
        self, tmp_path: Path
    ) -> None:
        """The SIGTERM push cannot deadlock on a lock the interrupted code holds: it gives up in time."""
        gateway = start_pushgateway(tmp_path)
        try:
            started = time.monotonic()
            status = _terminated_batch(gateway, executions=1, timeout_seconds=1.0, hold_metrics_lock=True)
            assert status == -signal.SIGTERM
            assert time.monotonic() - started < 15
        finally:
            gateway.stop()


def _terminated_batch(gateway: RunningServer, **spec: Any) -> int:
    """Run a batch worker until it is ready, send it SIGTERM, return its exit status."""
    worker = _spawn(
        {
            "mode": "batch",
            "config": {"telemetry": {"log_executions": False}},
            "gateway": gateway.url,
            "job": "nightly-eval",
            "grouping_key": {},
            "wait_for_sigterm": True,
            **spec,
        }
    )
    assert worker.stdout is not None
    assert json.loads(worker.stdout.readline()) == {"ready": True}
    worker.send_signal(signal.SIGTERM)
    try:
        return worker.wait(timeout=30)
    finally:
        worker.kill()  # No-op once it exited; a hung worker does not outlive the test.
        worker.wait()


def _gateway_group(gateway: RunningServer) -> dict[str, Any]:
    """The one group on the gateway (its metric families by name)."""
    with urllib.request.urlopen(f"{gateway.url}/api/v1/metrics", timeout=5) as response:
        groups = json.load(response)["data"]
    assert len(groups) == 1
    group: dict[str, Any] = groups[0]
    return group

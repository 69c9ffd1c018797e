"""RedisQuotaStore: the scripts' contract on a real redis-server, failure policies, failover."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from subagent_telemetry import (
    ConcurrencyLimitReached,
    Config,
    ExecutionLimitReached,
    QuotaExceeded,
    QuotaLimits,
    SubagentTelemetry,
    TimeLimitExceeded,
    cli,
)
from subagent_telemetry.fleet import QuotaLimitsMismatchError, QuotaStoreUnavailable
from subagent_telemetry.quota._store_policy import FailurePolicy
from tests.support.servers import (
    ManagedProcess,
    RunningServer,
    free_port,
    redis_ping,
    start_redis,
    tool,
    wait_for,
)
from tests.support.tcp_proxy import TcpProxy

redis = pytest.importorskip("redis")
from subagent_telemetry.quota._redis_store import (  # noqa: E402 - after the importorskip of the extra
    RESERVE_LUA,
    RedisQuotaStore,
    pin,
    store_name,
)

integration = pytest.mark.integration


def _config(url: str, session: str, quota: dict[str, Any] | None = None, **subagent: Any) -> Config:
    return Config.model_validate(
        {
            "agent": {"subagent": {"max_concurrency": 50, **subagent}},
            "telemetry": {"log_executions": False},
            "quota": {"store": url, "session": session, **(quota or {})},
        }
    )


def _tel(config: Config, store: RedisQuotaStore | None = None) -> SubagentTelemetry:
    return SubagentTelemetry(config, registry=CollectorRegistry(), store=store)


def _meta(url: str, session: str) -> dict[str, int]:
    raw = redis.Redis.from_url(url).hgetall(f"subagent:{{{session}}}:meta")
    return {k.decode(): int(v) for k, v in raw.items() if k != b"limits"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with start_redis(tmp_path_factory.mktemp("redis-store")) as running:
        yield running


class TestWithoutAServer:
    def test_limits_pin_as_one_string(self) -> None:
        """Pinned limits read executions|tokens|time_ms|concurrency, empty when unlimited."""
        assert pin(QuotaLimits(5, None, 1.5), 3) == "5||1500|3"

    def test_store_name_drops_credentials(self) -> None:
        """Messages name the store without its password."""
        assert store_name("redis://user:secret@cache:6380/2") == "redis://cache:6380/2"

    def test_unavailable_error_names_store_and_policy(self) -> None:
        """QuotaStoreUnavailable is a QuotaExceeded naming the store and quota.failure_policy."""
        error = QuotaStoreUnavailable("redis://cache:6379", "deny", "connection refused")
        assert isinstance(error, QuotaExceeded)
        assert "redis://cache:6379" in str(error)
        assert "quota.failure_policy=deny" in str(error)

    def test_local_allowance_admits_its_size_then_refuses(self) -> None:
        """local_allowance admits allowance_executions locally, then raises, counting each decision."""
        decisions: list[tuple[str, str]] = []
        policy = FailurePolicy("local_allowance", "redis://x", allowance_executions=2, allowance_tokens=100)
        policy.on_decision = lambda p, d: decisions.append((p, d))
        policy.admit("down")
        policy.admit("down")
        with pytest.raises(QuotaStoreUnavailable):
            policy.admit("down")
        assert [d for _, d in decisions] == ["admitted", "admitted", "denied"]

    def test_local_allowance_stops_when_its_tokens_are_used(self) -> None:
        """Tokens used while degraded count against the local token allowance."""
        policy = FailurePolicy("local_allowance", "redis://x", allowance_executions=5, allowance_tokens=100)
        policy.add_tokens(100)
        with pytest.raises(QuotaStoreUnavailable):
            policy.admit("down")

    def test_braces_in_the_session_are_refused(self) -> None:
        """A session name cannot break the hash tag that keeps its keys in one Cluster slot."""
        with pytest.raises(QuotaLimitsMismatchError, match="braces"):
            RedisQuotaStore(redis.Redis(), session="a{b}", max_concurrency=1)


@integration
class TestScripts:
    def test_a_retry_with_the_same_request_id_is_applied_once(self, server: RunningServer) -> None:
        """Running reserve twice with one request id counts one execution and returns the same reply."""
        client = redis.Redis.from_url(server.url)
        script = client.register_script(RESERVE_LUA)
        keys = [f"subagent:{{retry}}:{k}" for k in ("meta", "leases", "reply:cur", "reply:old", "expired")]
        args = ["r1", "10|||5 60000 0 1 3600000 60000"]
        assert script(keys=keys, args=args) == script(keys=keys, args=args)
        assert _meta(server.url, "retry")["executions"] == 1

    def test_bad_arguments_are_refused_before_any_write(self, server: RunningServer) -> None:
        """A malformed call raises and leaves no key behind."""
        client = redis.Redis.from_url(server.url)
        script = client.register_script(RESERVE_LUA)
        keys = [f"subagent:{{bad}}:{k}" for k in ("meta", "leases", "reply:cur", "reply:old", "expired")]
        with pytest.raises(redis.ResponseError, match="estimated_tokens"):
            script(keys=keys, args=["r1", "10|||5 60000 -1 1 3600000 60000"])
        assert client.keys("subagent:{bad}*") == []

    def test_keys_share_one_hash_tag_and_outlive_the_time_budget(self, server: RunningServer) -> None:
        """Every key of a session carries {session} and a TTL >= max_total_time + grace."""
        tel = _tel(_config(server.url, "ttl", {"estimated_tokens": 5}, max_total_time=600))
        with tel.execution("a"):
            keys = redis.Redis.from_url(server.url).keys("*{ttl}*")
            ttls = [redis.Redis.from_url(server.url).pttl(k) for k in keys if b"reply" not in k]
        assert len(ttls) == 2
        assert min(ttls) > (600 + 3600) * 1000 - 5_000

    def test_other_limits_for_a_pinned_session_are_refused(self, server: RunningServer) -> None:
        """A process whose session got pinned to other limits after it started gets a clear error."""
        other = _tel(_config(server.url, "pinned", max_executions=20))
        with _tel(_config(server.url, "pinned", max_executions=10)).execution("a"):
            pass
        with pytest.raises(QuotaLimitsMismatchError, match=r"pinned to limits 10\|\|\|50"):
            other.execution("b").__enter__()

    def test_a_worker_with_other_limits_fails_at_startup(self, server: RunningServer) -> None:
        """SubagentTelemetry checks the pinned limits at construction, before serving anything."""
        with _tel(_config(server.url, "pinned-start", max_executions=10)).execution("a"):
            pass
        with pytest.raises(QuotaLimitsMismatchError, match=r"pinned to limits 10\|\|\|50 .* has 20\|\|\|50"):
            _tel(_config(server.url, "pinned-start", max_executions=20))

    def test_an_unreachable_store_does_not_stop_startup(self) -> None:
        """The startup check only logs when the store is down; the failure policy decides at admission."""
        config = _config(f"redis://127.0.0.1:{free_port()}", "down-at-start", {"failure_policy": "allow"})
        with _tel(config).execution("a"):
            pass

    @pytest.mark.parametrize("policy", ["allow", "deny"])
    def test_an_unreachable_cluster_does_not_stop_startup(self, policy: str) -> None:
        """A cluster with no node answering at startup is an outage like any other: the process starts
        and the failure policy decides (RedisCluster's RedisClusterException used to escape the
        constructor, then any call)."""
        config = _config(
            f"redis+cluster://127.0.0.1:{free_port()}", "cluster-down", {"failure_policy": policy}
        )
        tel = _tel(config)
        if policy == "allow":
            with tel.execution("a") as run:
                run.record_tokens(1, 1)
        else:
            with pytest.raises(QuotaStoreUnavailable), tel.execution("a"):
                pass

    def test_a_server_that_is_not_redis_is_an_outage_not_a_crash(self) -> None:
        """quota.store pointing at an HTTP server (a wrong port): redis-py's InvalidResponse is an outage
        the failure policy decides on, never an exception escaping SubagentTelemetry() or an execution."""
        import socketserver

        class Http(socketserver.BaseRequestHandler):
            def handle(self) -> None:  # Answers like an HTTP server, and keeps the connection open.
                with contextlib.suppress(OSError):
                    self.request.recv(4096)
                    self.request.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                    self.request.recv(4096)

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Http)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"redis://127.0.0.1:{server.server_address[1]}/0"
            tel = _tel(_config(url, "not-redis", {"failure_policy": "deny"}))
            with pytest.raises(QuotaStoreUnavailable), tel.execution("a"):
                pass
        finally:
            server.shutdown()
            server.server_close()

    def test_validate_store_checks_a_config_against_the_live_store(
        self, server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`validate --store` passes for the pinned limits and fails (exit 2, error: …) for others."""
        with _tel(_config(server.url, "pinned-cli", max_executions=10)).execution("a"):
            pass
        same, other = tmp_path / "same.yaml", tmp_path / "other.yaml"
        body = (
            "agent:\n  subagent: {{max_executions: {n}, max_concurrency: 50}}\n"
            "quota: {{store: '{url}', session: pinned-cli}}\n"
        )
        same.write_text(body.format(n=10, url=server.url))
        other.write_text(body.format(n=20, url=server.url))
        assert cli.main(["validate", "--store", str(same)]) == 0
        assert "accepts limits 10|||50" in capsys.readouterr().out
        assert cli.main(["validate", "--store", str(other)]) == 2
        assert "error: quota session 'pinned-cli'" in capsys.readouterr().err

    def test_the_budget_refuses_with_the_documented_exception(self, server: RunningServer) -> None:
        """The fleet's execution budget raises ExecutionLimitReached with the store's figures."""
        tel = _tel(_config(server.url, "refuse", max_executions=2))
        for _ in range(2):
            with tel.execution("a"):
                pass
        with pytest.raises(ExecutionLimitReached, match="2/2"):
            tel.execution("a").__enter__()

    def test_the_time_budget_runs_on_the_servers_clock(self, server: RunningServer) -> None:
        """max_total_time counts from the session's first admission as the server measures it."""
        tel = _tel(_config(server.url, "clock", max_total_time=0.3))
        with tel.execution("a"):
            pass
        wait_for(lambda: tel.tracker.get_usage().elapsed_seconds >= 0.3, 2.0, 0.05)
        with pytest.raises(TimeLimitExceeded):
            tel.execution("b").__enter__()

    def test_an_idle_sessions_first_execution_has_the_whole_time_budget(self, server: RunningServer) -> None:
        """The time budget starts at the first admission: idling past it first refuses nothing."""
        tel = _tel(_config(server.url, "idle-start", max_total_time=0.3))
        time.sleep(0.4)
        with tel.execution("a"):
            pass
        assert tel.tracker.get_usage().elapsed_seconds < 0.3

    def test_scripts_reload_after_script_flush(self, server: RunningServer) -> None:
        """EVALSHA falls back to loading the script again (NOSCRIPT-safe)."""
        tel = _tel(_config(server.url, "flush"))
        with tel.execution("a"):
            pass
        redis.Redis.from_url(server.url).script_flush()
        with tel.execution("b"):
            pass
        assert _meta(server.url, "flush")["executions"] == 2

    def test_async_executions_release_their_fleet_slot(self, server: RunningServer) -> None:
        """async with admits on the asyncio client and gives the slot and estimate back at exit."""
        tel = _tel(_config(server.url, "async", {"estimated_tokens": 30}, max_concurrency=1))

        async def run() -> None:
            for _ in range(3):
                async with tel.execution("a") as execution:
                    execution.record_tokens(output=10)

        asyncio.run(run())
        meta = _meta(server.url, "async")
        assert (meta["executions"], meta["tokens"], meta["reserved"]) == (3, 30, 0)

    def test_two_hundred_event_loops_leave_no_connections_open(self, server: RunningServer) -> None:
        """200 asyncio.run() calls with an async execution each leave no connection or fd behind."""
        tel = _tel(_config(server.url, "loops"))
        client = redis.Redis.from_url(server.url)

        async def one() -> None:
            async with tel.execution("a") as run:
                run.record_tokens(output=1)

        asyncio.run(one())
        clients, fds = len(client.client_list()), len(os.listdir("/proc/self/fd"))
        for _ in range(200):
            asyncio.run(one())
        wait_for(lambda: len(client.client_list()) <= clients, 5.0, 0.05)
        assert len(os.listdir("/proc/self/fd")) <= fds
        assert _meta(server.url, "loops")["tokens"] == 201

    @pytest.mark.parametrize("value", [float("nan"), float("inf"), 1.5, True, -7, 2**63, 10**30])
    def test_bad_token_counts_never_reach_redis(self, server: RunningServer, value: object) -> None:
        """A count that is not a whole number in range is dropped before the store: no ResponseError,
        the fleet total unchanged, the budget still enforced."""
        session = f"bad-tokens-{abs(hash(repr(value)))}"
        tel = _tel(_config(server.url, session, max_total_tokens=100))
        with tel.execution("a") as run:
            run.record_tokens(input=value)  # type: ignore[arg-type]
            run.record_response(total=value)  # type: ignore[arg-type]
            run.record_tokens(input=40, output=2)
        assert _meta(server.url, session)["tokens"] == 42
        with pytest.raises(QuotaExceeded), tel.execution("b") as run:
            run.record_tokens(input=100)
        with pytest.raises(QuotaExceeded):
            tel.start("refused")

    def test_astart_does_not_block_the_event_loop_on_the_store(self, server: RunningServer) -> None:
        """While Redis is paused, tel.astart awaits the asyncio client: other tasks keep running."""
        tel = _tel(_config(server.url, "astart"))

        async def run() -> tuple[int, int]:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.01)

            (await tel.astart("warm-up")).record_completion()  # Connection and script are ready.
            task = asyncio.create_task(ticker())
            await asyncio.sleep(0)
            redis.Redis.from_url(server.url).client_pause(400)
            ticks = 0
            handle = await tel.astart("paused")
            during = ticks
            handle.record_completion()
            task.cancel()
            return during, handle.depth

        ticks_while_admitting, depth = asyncio.run(run())
        assert ticks_while_admitting >= 10
        assert depth == 1
        assert _meta(server.url, "astart")["executions"] == 2

    def test_a_slot_held_by_another_process_makes_admission_wait_then_refuse(
        self, server: RunningServer
    ) -> None:
        """With the fleet's only slot held elsewhere, admission polls up to concurrency_timeout."""
        config = _config(server.url, "fleet-full", max_concurrency=1, concurrency_timeout=0.2)
        other, mine = _tel(config), _tel(config)
        with other.execution("holder"):
            started = time.monotonic()
            with pytest.raises(QuotaExceeded, match="fleet-wide"):
                mine.execution("waiter").__enter__()
            assert time.monotonic() - started >= 0.2
        with mine.execution("now-free"):
            pass

    def test_a_nested_execution_refused_fleet_wide_is_told_it_never_waits(
        self, server: RunningServer
    ) -> None:
        """A child refused by the fleet's limit gets the nested advice, not concurrency_timeout."""
        config = _config(server.url, "fleet-nested", max_concurrency=2, concurrency_timeout=0.2)
        other, mine = _tel(config), _tel(config)
        with other.execution("holder"), mine.execution("parent"):
            with pytest.raises(ConcurrencyLimitReached, match="fleet-wide") as info, mine.execution("child"):
                pass
            assert info.value.nested
            assert "or agent.subagent.concurrency_timeout" not in str(info.value)

    def test_a_lost_reply_then_retry_counts_once(self, server: RunningServer) -> None:
        """The reply of a reserve is dropped after the script ran; redis-py's retry gets the same one."""
        proxy = TcpProxy(server.port)
        try:
            url = f"redis://127.0.0.1:{proxy.port}"
            tel = _tel(_config(url, "lost"))
            with tel.execution("warm-up"):
                pass
            proxy.drop_next_reply()
            with tel.execution("retried"):
                pass
            assert proxy.dropped == 1
            meta = _meta(server.url, "lost")
            assert meta["executions"] == 2
            assert redis.Redis.from_url(server.url).zcard("subagent:{lost}:leases") == 0
        finally:
            proxy.close()


def _redis_at(port: int, folder: Path, *extra: str) -> ManagedProcess:
    """A redis-server on a fixed port with an append-only file, so a restart keeps the budget."""
    process = ManagedProcess(
        "redis",
        [tool("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "yes", "--appendfsync", "always", "--dir", str(folder), *extra],
        workdir=folder,
    )  # fmt: skip
    process.wait_ready(probe=lambda: redis_ping(port))
    return process


@integration
class TestRedisStopped:
    @pytest.fixture
    def outage(self, tmp_path: Path) -> tuple[int, Path]:
        """A fixed port and data folder, so the test can stop Redis and start it again."""
        return free_port(), tmp_path / "aof"

    def _store(self, port: int, session: str, policy: str) -> tuple[SubagentTelemetry, CollectorRegistry]:
        config = _config(
            f"redis://127.0.0.1:{port}",
            session,
            {"failure_policy": policy, "local_allowance_executions": 2, "local_allowance_tokens": 1000},
            max_executions=100,
        )
        store = RedisQuotaStore.from_config(config)
        store.policy._retry_after = 0.05
        registry = CollectorRegistry()
        return SubagentTelemetry(config, registry=registry, store=store), registry

    def test_deny_refuses_with_the_documented_exception(self, outage: tuple[int, Path]) -> None:
        """deny: admission raises QuotaStoreUnavailable and counts a denied decision."""
        port, folder = outage
        server = _redis_at(port, folder)
        tel, registry = self._store(port, "deny", "deny")
        with tel.execution("a"):
            pass
        server.stop()
        with pytest.raises(QuotaStoreUnavailable, match="deny"):
            tel.execution("b").__enter__()
        labels = {"policy": "deny", "decision": "denied"}
        assert registry.get_sample_value("subagent_quota_store_degraded_decisions_total", labels) == 1

    @pytest.mark.parametrize(("policy", "admitted"), [("allow", 4), ("local_allowance", 2)])
    def test_degraded_admissions_are_replayed_once(
        self, outage: tuple[int, Path], policy: str, admitted: int
    ) -> None:
        """allow / local_allowance admit locally; when Redis returns each is counted exactly once."""
        port, folder = outage
        server = _redis_at(port, folder)
        tel, registry = self._store(port, policy, policy)
        with tel.execution("before") as run:
            run.record_tokens(output=7)
        server.stop()
        local = 0
        for _ in range(4):
            try:
                with tel.execution("during") as run:
                    run.record_tokens(output=10)
                local += 1
            except QuotaStoreUnavailable:
                pass
        assert local == admitted
        server = _redis_at(port, folder)
        try:
            time.sleep(0.1)  # Past the store's retry_after: the next call goes to Redis and replays.
            with tel.execution("after"):
                pass
            meta = _meta(f"redis://127.0.0.1:{port}", policy)
            assert (meta["executions"], meta["tokens"]) == (2 + admitted, 7 + 10 * admitted)
            labels = {"policy": policy, "decision": "admitted"}
            assert (
                registry.get_sample_value("subagent_quota_store_degraded_decisions_total", labels) == admitted
            )
        finally:
            server.stop()


@integration
class TestFailover:
    def test_a_promoted_replica_carries_the_budget_on(self, tmp_path: Path) -> None:
        """Primary dies, the replica is promoted (REPLICAOF NO ONE): counts and pinned limits carry on."""
        with start_redis(tmp_path, ("--repl-diskless-sync-delay", "0")) as primary:
            replica = start_redis(tmp_path, ("--replicaof", "127.0.0.1", str(primary.port)))
            proxy = TcpProxy(primary.port)
            link = lambda: redis.Redis.from_url(replica.url).info("replication")["master_link_status"] == "up"  # noqa: E731
            try:
                wait_for(link, 10.0, 0.05)
                tel = _tel(_config(f"redis://127.0.0.1:{proxy.port}", "failover", max_executions=5))
                for _ in range(3):
                    with tel.execution("a"):
                        pass
                assert redis.Redis.from_url(primary.url).wait(1, 2000) == 1
                primary.stop()
                redis.Redis.from_url(replica.url).replicaof("NO", "ONE")
                proxy.retarget(replica.port)
                for _ in range(2):
                    with tel.execution("b"):
                        pass
                with pytest.raises(ExecutionLimitReached, match="5/5"):
                    tel.execution("c").__enter__()
            finally:
                proxy.close()
                replica.stop()


def _proxied_store(
    proxy: TcpProxy, session: str, quota: dict[str, Any] | None = None, **kwargs: Any
) -> tuple[SubagentTelemetry, RedisQuotaStore]:
    """A telemetry whose store goes through ``proxy`` and retries the store 50 ms after a failure."""
    config = _config(f"redis://127.0.0.1:{proxy.port}", session, quota)
    store = RedisQuotaStore.from_config(config)
    for name, value in kwargs.items():
        setattr(store, name, value)
    store.policy._retry_after = 0.05
    return _tel(config, store), store


def _evalsha_calls(url: str) -> int:
    """EVALSHA calls the server ran (not those refused with NOSCRIPT, then loaded and sent again)."""
    stats = redis.Redis.from_url(url).info("commandstats").get("cmdstat_evalsha", {})
    return (
        int(stats.get("calls", 0)) - int(stats.get("rejected_calls", 0)) - int(stats.get("failed_calls", 0))
    )


def _leases(url: str, session: str) -> int:
    return int(redis.Redis.from_url(url).zcard(f"subagent:{{{session}}}:leases"))


@integration
class TestKeyTtl:
    def test_the_ttl_follows_the_time_budget_after_tokens_are_recorded(self, server: RunningServer) -> None:
        """max_total_time 300 s: after admission and settle the keys live 300 s + lease + 1 h, not 7 days."""
        tel = _tel(_config(server.url, "ttl-300", {"lease_seconds": 60}, max_total_time=300))
        client = redis.Redis.from_url(server.url)
        expected_ms = (300 + 60 + 3600) * 1000
        with tel.execution("a") as run:
            run.record_tokens(output=5)
            ttls = [client.pttl(f"subagent:{{ttl-300}}:{key}") for key in ("meta", "leases")]
        ttls.append(client.pttl("subagent:{ttl-300}:meta"))
        assert all(expected_ms - 5_000 < ttl <= expected_ms for ttl in ttls), ttls

    def test_without_a_time_budget_the_keys_live_seven_days_and_a_lease_past_the_last_write(
        self, server: RunningServer
    ) -> None:
        """No time budget: the keys' TTL is 7 days + lease + 1 h, as docs/fleet.md says."""
        tel = _tel(_config(server.url, "ttl-idle", {"lease_seconds": 60}))
        with tel.execution("a") as run:
            run.record_tokens(output=5)
        expected_ms = (7 * 24 * 3600 + 60 + 3600) * 1000
        assert (
            expected_ms - 5_000
            < redis.Redis.from_url(server.url).pttl("subagent:{ttl-idle}:meta")
            <= expected_ms
        )


@integration
class TestExactlyOnce:
    @pytest.fixture
    def proxy(self, server: RunningServer) -> Iterator[TcpProxy]:
        proxy = TcpProxy(server.port)
        yield proxy
        proxy.close()

    def test_a_lost_admission_replayed_after_its_lease_expired_counts_once(
        self, server: RunningServer, proxy: TcpProxy
    ) -> None:
        """allow: a lost admission runs locally; replayed after its lease expired, it counts once."""
        quota = {"failure_policy": "allow", "lease_seconds": 0.2}
        tel, _ = _proxied_store(proxy, "lost-late", quota)
        other = _tel(_config(server.url, "lost-late", quota))
        with tel.execution("warm-up"):
            pass
        proxy.drop_next_reply(then_down=True)
        with tel.execution("reply-lost"):  # Counted by the store, then admitted locally as well.
            pass
        time.sleep(0.3)
        with other.execution("expires-the-lease"):
            pass
        proxy.set_down(False)
        time.sleep(0.1)
        with tel.execution("after"):
            pass
        meta = _meta(server.url, "lost-late")
        assert (meta["executions"], meta["reserved"]) == (4, 0)
        assert _leases(server.url, "lost-late") == 0

    def test_under_deny_a_refused_admission_whose_reply_was_lost_is_not_counted(
        self, server: RunningServer, proxy: TcpProxy
    ) -> None:
        """deny: the store counted an admission the process refused; the replay gives it back, even late."""
        quota = {"failure_policy": "deny", "lease_seconds": 0.2}
        tel, _ = _proxied_store(proxy, "deny-late", quota)
        other = _tel(_config(server.url, "deny-late", quota))
        with tel.execution("warm-up"):
            pass
        proxy.drop_next_reply(then_down=True)
        with pytest.raises(QuotaStoreUnavailable):
            tel.execution("refused").__enter__()
        time.sleep(0.3)
        with other.execution("expires-the-lease"):
            pass
        proxy.set_down(False)
        time.sleep(0.1)
        with tel.execution("after"):
            pass
        assert _meta(server.url, "deny-late")["executions"] == 3

    def test_a_replay_whose_reply_is_lost_counts_once_after_its_request_id_is_forgotten(
        self, server: RunningServer, proxy: TcpProxy
    ) -> None:
        """The backlog's replay is applied once however late it is retried (request ids kept 0.2 s here)."""
        quota = {"failure_policy": "allow"}
        tel, _ = _proxied_store(proxy, "replay-lost", quota, _reply_ttl_ms=200)
        other_store = RedisQuotaStore.from_config(_config(server.url, "replay-lost", quota))
        other_store._reply_ttl_ms = 200
        other = _tel(_config(server.url, "replay-lost", quota), other_store)
        with tel.execution("warm-up"):
            pass
        proxy.set_down(True)
        for _ in range(3):
            with tel.execution("local") as run:
                run.record_tokens(output=10)
        proxy.set_down(False)
        time.sleep(0.1)
        proxy.drop_next_reply(containing=b"ok|", then_down=True)  # The replay's reply.
        with tel.execution("replays"):
            pass
        for _ in range(3):  # Two generations of replies rotate away meanwhile.
            time.sleep(0.25)
            with other.execution("rotates"):
                pass
        proxy.set_down(False)
        time.sleep(0.1)
        with tel.execution("after"):
            pass
        meta = _meta(server.url, "replay-lost")
        # warm-up + 3 local + replays (admitted locally, its reserve never sent) + 3 rotates + after
        assert (meta["executions"], meta["tokens"], meta["reserved"]) == (9, 30, 0)


@integration
class TestOutage:
    @pytest.fixture
    def outage(self, tmp_path: Path) -> tuple[int, Path]:
        return free_port(), tmp_path / "aof"

    def test_the_backlog_stays_bounded_and_replays_in_one_round_trip(self, outage: tuple[int, Path]) -> None:
        """2,000 executions during an outage keep two sums, not 6,000 operations; 1-2 calls replay them."""
        port, folder = outage
        server = _redis_at(port, folder)
        url = f"redis://127.0.0.1:{port}"
        config = _config(url, "bounded", {"failure_policy": "allow"})
        store = RedisQuotaStore.from_config(config)
        store.policy._retry_after = 0.05
        tel = _tel(config, store)
        with tel.execution("before"):
            pass
        server.stop()
        for _ in range(2000):
            with tel.execution("during") as run:
                run.record_tokens(output=2)
        # Items: at most one per probe of the store (one per retry_after), whatever the executions.
        assert store.policy.backlog_items < 50
        server = _redis_at(port, folder)
        try:
            time.sleep(0.1)
            before = _evalsha_calls(url)
            with tel.execution("after"):
                pass
            # At most two replays (the batch a failed probe took, then the rest), the reserve, the release.
            assert _evalsha_calls(url) - before <= 4
            meta = _meta(url, "bounded")
            assert (meta["executions"], meta["tokens"], meta["reserved"]) == (2002, 4000, 0)
        finally:
            server.stop()

    def test_the_first_admission_after_recovery_is_fast(self, outage: tuple[int, Path]) -> None:
        """Once Redis is back, an admission reaches it within about a second and none blocks for long."""
        port, folder = outage
        server = _redis_at(port, folder)
        url = f"redis://127.0.0.1:{port}"
        config = _config(url, "fast-back", {"failure_policy": "allow"})
        store = RedisQuotaStore.from_config(config)  # The default 1 s retry_after.
        tel = _tel(config, store)
        with tel.execution("before"):
            pass
        server.stop()
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            with tel.execution("during") as run:
                run.record_tokens(output=1)
        server = _redis_at(port, folder)
        try:
            back, slowest, local = time.monotonic(), 0.0, 0
            while not store.policy.idle:
                started = time.monotonic()
                with tel.execution("after") as run:
                    run.record_tokens(output=1)
                slowest = max(slowest, time.monotonic() - started)
                local += 1
                assert time.monotonic() - back < 2.0  # retry_after (1 s) plus a loaded machine
            assert slowest < 0.5
            meta = _meta(url, "fast-back")
            assert meta["executions"] == meta["tokens"] + 1  # Every execution recorded 1 token but "before".
        finally:
            server.stop()

    def test_a_paused_server_is_probed_by_one_caller_and_counts_exactly(self, server: RunningServer) -> None:
        """SIGSTOP: admissions go on locally (one thread at a time probes); after SIGCONT counts are exact."""
        url = f"{server.url}/0?socket_timeout=0.2&socket_connect_timeout=0.2"
        config = _config(url, "paused", {"failure_policy": "allow", "estimated_tokens": 5})
        store = RedisQuotaStore.from_config(config)
        store.policy._retry_after = 0.1
        tel = _tel(config, store)
        with tel.execution("before"):
            pass
        done: list[float] = []

        def worker() -> None:
            for _ in range(40):
                started = time.monotonic()
                with tel.execution("during") as run:
                    run.record_tokens(output=1)
                done.append(time.monotonic() - started)
                time.sleep(0.01)

        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            threads = [threading.Thread(target=worker) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        time.sleep(0.2)
        with tel.execution("after"):
            pass
        assert sorted(done)[len(done) // 2] < 0.05  # Most decisions are local and fast.
        meta = _meta(server.url, "paused")
        assert (meta["executions"], meta["tokens"], meta["reserved"]) == (322, 320, 0)
        assert _leases(server.url, "paused") == 0


def _recorded(registry: CollectorRegistry) -> tuple[float, float]:
    """(executions started, executions still active) as the process recorded them."""
    started = registry.get_sample_value("subagent_executions_total", {"depth": "1"}) or 0.0
    active = registry.get_sample_value("subagent_active_count", {"depth": "1"}) or 0.0
    return started, active


@integration
class TestCancellation:
    """A task cancelled while its admission or exit awaits a slow Redis leaves both sides consistent."""

    @pytest.fixture
    def slow(self, server: RunningServer) -> Iterator[TcpProxy]:
        proxy = TcpProxy(server.port, delay_seconds=0.1)  # Every reply arrives 100 ms late.
        yield proxy
        proxy.close()

    def _setup(
        self, proxy: TcpProxy, session: str, max_concurrency: int = 50
    ) -> tuple[SubagentTelemetry, CollectorRegistry]:
        url = f"redis://127.0.0.1:{proxy.port}"
        config = _config(url, session, {"estimated_tokens": 7}, max_concurrency=max_concurrency)
        registry = CollectorRegistry()
        return SubagentTelemetry(config, registry=registry), registry

    def test_more_concurrent_admissions_than_connections_wait_instead_of_failing(
        self, server: RunningServer, slow: TcpProxy
    ) -> None:
        """300 async executions in flight at once share the loop's 64 connections; none is refused."""
        tel, registry = self._setup(slow, "many-at-once", max_concurrency=1000)

        async def agent() -> None:
            async with tel.execution("a") as run:
                run.record_tokens(output=1)

        async def run() -> None:
            await asyncio.gather(*(agent() for _ in range(300)))

        asyncio.run(run())
        meta = _meta(server.url, "many-at-once")
        assert (meta["executions"], meta["tokens"], meta["reserved"]) == (300, 300, 0)
        assert _recorded(registry) == (300, 0)

    def test_a_cancelled_admission_is_not_counted_and_holds_no_lease(
        self, server: RunningServer, slow: TcpProxy
    ) -> None:
        """Cancelled while reserve's reply is on its way: Redis gives the execution and lease back."""
        tel, registry = self._setup(slow, "cancel-admit")

        async def run() -> None:
            async with tel.execution("a"):
                pass  # Reached once, by the warm-up.
            task = asyncio.ensure_future(tel.execution("a").__aenter__())
            await asyncio.sleep(0.05)  # The reserve ran on the server; its reply is delayed.
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(1.5)  # The void replays in the background (a new connection: ~8 round trips).

        asyncio.run(run())
        meta = _meta(server.url, "cancel-admit")
        assert (meta["executions"], meta["reserved"]) == (1, 0)
        assert _leases(server.url, "cancel-admit") == 0
        assert _recorded(registry) == (1, 0)
        assert tel._slots.in_use == 0

    def test_a_cancelled_exit_records_the_outcome_frees_the_slot_and_releases_the_lease(
        self, server: RunningServer, slow: TcpProxy
    ) -> None:
        """Cancelled while the release is on its way: outcome recorded, local slot and lease given back."""
        tel, registry = self._setup(slow, "cancel-exit")

        async def run() -> None:
            admitted = asyncio.Event()

            async def agent() -> None:
                async with tel.execution("a"):
                    admitted.set()

            task = asyncio.ensure_future(agent())
            await admitted.wait()
            await asyncio.sleep(0.03)  # In __aexit__, awaiting the release.
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(1.0)

        asyncio.run(run())
        assert _recorded(registry) == (1, 0)
        assert tel._slots.in_use == 0
        assert _leases(server.url, "cancel-exit") == 0
        assert _meta(server.url, "cancel-exit")["reserved"] == 0

    def test_cancellation_at_any_moment_keeps_the_fleet_and_the_process_in_agreement(
        self, server: RunningServer, slow: TcpProxy
    ) -> None:
        """Cancelled 0-900 ms into admission, body or exit: Redis counts what the process recorded."""
        tel, registry = self._setup(slow, "cancel-any")

        async def agent() -> None:
            async with tel.execution("a") as run:
                run.record_tokens(output=1)
                await asyncio.sleep(0.05)

        async def run() -> None:
            await agent()  # Connected: later admissions take one delayed round trip (until a cancel).
            for step in range(0, 91, 6):
                task = asyncio.ensure_future(agent())
                await asyncio.sleep(step / 100)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await asyncio.sleep(2.0)

        asyncio.run(run())
        started, active = _recorded(registry)
        meta = _meta(server.url, "cancel-any")
        assert (meta["executions"], meta["reserved"], active) == (started, 0, 0)
        assert 1 < started < 17  # Some cancellations hit admission, others the body or the exit.
        assert _leases(server.url, "cancel-any") == 0
        assert tel._slots.in_use == 0

"""``RedisQuotaStore``: one session budget shared by a fleet of processes, on Redis or Redis Cluster.

Every state change is one Lua script (``lua/reserve.lua``, ``lua/settle.lua``) run with EVALSHA and
loaded again on NOSCRIPT (as redis-py's ``register_script`` does, minus its per-call overhead), so a
restarted or promoted server is fine:

- time is the server's (``TIME``), never a host's clock;
- every call carries a fresh request id; the script stores its reply under that id (a field of a
  replies hash, two generations rotated every ``reply_ttl_seconds``), so a retry after a lost reply
  (redis-py retries timeouts and dropped connections) returns the first answer, applied once;
- an admission holds a lease (an entry of a sorted set scored by its expiry) with its token estimate;
  a lease never released (a killed worker) expires and gives back its slot and its unused estimate;
- the limits are pinned in the store on first use; other limits for the same session are refused;
- all keys of a session share the hash tag ``{<session>}`` (one Cluster slot) and a sliding TTL of
  ``max_total_time`` + lease + one hour (seven days + lease + one hour without a time budget), fixed
  by the session's first admission;
- what was decided while the store was unreachable is replayed in one round trip (``lua/replay.lua``,
  see ``_store_policy``).

Asyncio: ``acquire_async``/``release_async`` run the same scripts on a ``redis.asyncio`` client (one
per event loop, closed with its loop), so admission stays one atomic script and the loop never blocks
on the network; ``record_tokens()`` inside a running loop settles in a task of that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import threading
import urllib.parse
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from decimal import Decimal
from importlib import resources
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.exceptions import (
    ClusterDownError,
    InvalidResponse,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
)
from redis.retry import Retry

from .._errors import (
    ConcurrencyLimitReached,
    ConfigError,
    CostLimitExceeded,
    ExecutionLimitReached,
    TimeLimitExceeded,
    TokenLimitExceeded,
)
from ._store_errors import QuotaLimitsMismatchError, QuotaStoreUnavailable
from ._store_policy import Batch, FailurePolicy
from ._tracker import NANO, QuotaLimits, QuotaUsage, Reservation

if TYPE_CHECKING:
    from .._config import Config

_log = logging.getLogger("subagent_telemetry")

#: Errors that mean "the store is unreachable" (after redis-py's own retries): the failure policy decides.
#: ``ReadOnlyError``: a demoted primary still answering after a failover.
#: ``RedisClusterException``: no node of a cluster answers ("Redis Cluster cannot be connected").
#: ``InvalidResponse``: something that is not Redis answers at that address (shown in the warning).
UNAVAILABLE: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    ClusterDownError,
    ReadOnlyError,
    RedisClusterException,
    InvalidResponse,
)
#: Sessions whose budget sees no write for this long expire when max_total_time is unlimited.
IDLE_TTL_SECONDS = 7 * 24 * 3600
TTL_GRACE_SECONDS = 3600
#: Connections of one event loop's client (``?max_connections=`` in the URL overrides it); more
#: concurrent commands wait up to ASYNC_POOL_WAIT_SECONDS for one.
ASYNC_MAX_CONNECTIONS = 64
ASYNC_POOL_WAIT_SECONDS = 20.0
_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_LOCAL_PREFIX = "local:"


def _lua(name: str) -> str:
    folder = resources.files(__package__) / "lua"
    return (folder / "_common.lua").read_text() + "\n" + (folder / f"{name}.lua").read_text()


RESERVE_LUA = _lua("reserve")
SETTLE_LUA = _lua("settle")
REPLAY_LUA = _lua("replay")
USAGE_LUA = _lua("usage")


class _Script:
    """A script called by its SHA1 with pre-encoded keys (``Script.__call__`` re-encodes per call)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest().encode()

    def run(self, client: Any, keys: Sequence[bytes], *args: bytes) -> bytes | str:
        try:
            reply: bytes | str = client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:  # A restarted, flushed or newly promoted server: load it, once.
            client.script_load(self.text)
            reply = client.evalsha(self.sha, len(keys), *keys, *args)
        return reply

    async def run_async(self, client: Any, keys: Sequence[bytes], *args: bytes) -> bytes | str:
        try:
            reply: bytes | str = await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.text)
            reply = await client.evalsha(self.sha, len(keys), *keys, *args)
        return reply


_RESERVE = _Script(RESERVE_LUA)
_SETTLE = _Script(SETTLE_LUA)
_REPLAY = _Script(REPLAY_LUA)
_USAGE = _Script(USAGE_LUA)


def _new_id() -> str:
    return os.urandom(12).hex()


def store_name(url: str) -> str:
    """The store's address for messages and logs: scheme, host, port and database, never credentials."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or parts.path or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path if parts.hostname else ''}"


def _client_kwargs(url: str) -> dict[str, Any]:
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    kwargs: dict[str, Any] = {}
    if "socket_timeout" not in query:
        kwargs["socket_timeout"] = 1.0
    if "socket_connect_timeout" not in query:
        kwargs["socket_connect_timeout"] = 1.0
    return kwargs


def connect(url: str) -> Any:
    """A sync client for ``redis://``, ``rediss://``, ``unix://`` or ``redis+cluster://`` URLs.

    Timeouts and dropped connections are retried twice (same request id, so applied once).
    """
    scheme = urllib.parse.urlsplit(url).scheme
    kwargs = _client_kwargs(url)
    retry = Retry(ExponentialBackoff(cap=0.05, base=0.005), 2)
    if scheme in _CLUSTER_SCHEMES:
        plain = _CLUSTER_SCHEMES[scheme] + url[len(scheme) :]
        lazy = _LazyCluster(lambda: RedisCluster.from_url(plain, retry=retry, **kwargs))
        with contextlib.suppress(*UNAVAILABLE):
            lazy.connect()  # Mapped now when reachable; else at first use, by the failure policy.
        return lazy
    errors = [redis.ConnectionError, redis.TimeoutError]
    return redis.Redis.from_url(url, retry=retry, retry_on_error=errors, **kwargs)


class _LazyCluster:
    """A sync cluster client made on first use. ``RedisCluster`` maps the cluster in its constructor,
    so a cluster unreachable when the process starts would stop it there instead of letting
    ``quota.failure_policy`` decide, as every later outage does; until a node answers, each use raises
    ``redis.ConnectionError`` (an outage) and the next one tries again."""

    def __init__(self, make: Callable[[], RedisCluster]) -> None:
        self._make = make
        self._client: RedisCluster | None = None
        self._lock = threading.Lock()

    def connect(self) -> RedisCluster:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    try:
                        self._client = self._make()
                    except RedisClusterException as error:
                        raise redis.ConnectionError(str(error)) from error
                client = self._client
        return client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.connect(), name)


def connect_async(url: str) -> Any:
    """The ``redis.asyncio`` twin of :func:`connect` (one per event loop: see :class:`LoopClients`)."""
    from redis.asyncio.retry import Retry as AsyncRetry  # noqa: PLC0415 - only on the asyncio path

    scheme = urllib.parse.urlsplit(url).scheme
    kwargs = _client_kwargs(url)
    retry = AsyncRetry(ExponentialBackoff(cap=0.05, base=0.005), 2)
    if scheme in _CLUSTER_SCHEMES:
        plain = _CLUSTER_SCHEMES[scheme] + url[len(scheme) :]
        return AsyncRedisCluster.from_url(plain, retry=retry, **kwargs)
    errors = [redis.ConnectionError, redis.TimeoutError]
    # Blocking: past ASYNC_MAX_CONNECTIONS commands in flight, a task waits for a connection instead
    # of failing with MaxConnectionsError (the default pool's 100), which would read as an outage.
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url,
        max_connections=ASYNC_MAX_CONNECTIONS,
        timeout=ASYNC_POOL_WAIT_SECONDS,
        retry=retry,
        retry_on_error=errors,
        **kwargs,
    )
    return redis.asyncio.Redis.from_pool(pool)


class LoopClients:
    """One ``redis.asyncio`` client per running event loop, closed with its loop.

    A client belongs to the loop that made it (its connections are that loop's transports). Each one
    is watched by an async generator started in its loop: ``asyncio.run()`` (and every runner that
    calls ``loop.shutdown_asyncgens()``) closes that generator before closing the loop, and the
    generator closes the client. Clients of loops closed without that step are dropped (their sockets
    closed by the garbage collector) when the next loop asks for one.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        #: loop -> (client, its watcher, done once the client is ready for concurrent use)
        self._clients: dict[
            asyncio.AbstractEventLoop, tuple[Any, AsyncIterator[None], asyncio.Future[None]]
        ] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._clients)

    async def get(self) -> Any:
        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is not None:
            if not entry[2].done():  # Another task of this loop is initializing it.
                await asyncio.shield(entry[2])
            return entry[0]
        with self._lock:
            for other in [other for other in self._clients if other.is_closed()]:
                del self._clients[other]
            client = connect_async(self._url)
            watcher = self._watch(loop, client)
            ready: asyncio.Future[None] = loop.create_future()
            self._clients[loop] = (client, watcher, ready)
        await anext(watcher)  # Started in this loop: the loop now finalizes it at shutdown.
        try:
            # A cluster client maps its slots first: tasks racing through its lazy initialization
            # reinitialize it under each other and break each other's connections (redis-py).
            if isinstance(client, AsyncRedisCluster):
                await client.initialize()
        except BaseException:
            with self._lock:
                if self._clients.get(loop, (None,))[0] is client:
                    del self._clients[loop]
            raise
        finally:
            ready.set_result(None)
        return client

    async def _watch(self, loop: asyncio.AbstractEventLoop, client: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            with self._lock:
                if self._clients.get(loop, (None,))[0] is client:
                    del self._clients[loop]
            try:
                await client.aclose()
            except Exception:
                _log.debug("subagent_telemetry: closing a redis.asyncio client failed", exc_info=True)


#: Every store of this process: a forked child starts their backlogs afresh (the parent replays its own).
_STORES: weakref.WeakSet[RedisQuotaStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_STORES):
        store._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class RedisQuotaStore:
    """The ``LeasingQuotaStore`` of a fleet. Thread-safe; asyncio-friendly via the ``*_async`` methods."""

    leases = True

    def __init__(
        self,
        client: Any,
        *,
        session: str,
        max_concurrency: int | None,
        lease_seconds: float = 300.0,
        estimated_tokens: int = 0,
        estimated_cost_nanos: int = 0,
        failure_policy: str = "deny",
        local_allowance_executions: int = 0,
        local_allowance_tokens: int = 0,
        name: str = "redis",
        async_url: str | None = None,
        reply_ttl_seconds: float = 300.0,
        retry_after_seconds: float = 1.0,
    ) -> None:
        if "{" in session or "}" in session:
            msg = f"quota.session {session!r} may not contain braces (they delimit the Redis hash tag)"
            raise QuotaLimitsMismatchError(msg)
        if max_concurrency is not None and max_concurrency < 1:
            msg = f"max_concurrency must be >= 1 or None, got {max_concurrency!r}"
            raise ValueError(msg)
        self.session = session
        self.name = name
        self._client = client
        self._max_concurrency = max_concurrency
        self._lease_ms = max(int(lease_seconds * 1000), 1)
        self._estimate = estimated_tokens
        self._cost_estimate = estimated_cost_nanos
        self._reply_ttl_ms = max(int(reply_ttl_seconds * 1000), 1)
        prefix = f"subagent:{{{session}}}:"
        names = ("meta", "leases", "reply:cur", "reply:old", "expired")
        self._keys = tuple(f"{prefix}{name}".encode() for name in names)
        self.policy = FailurePolicy(
            failure_policy,
            name,
            allowance_executions=local_allowance_executions,
            allowance_tokens=local_allowance_tokens,
            retry_after_seconds=retry_after_seconds,
        )
        self.loop_clients = LoopClients(async_url) if async_url is not None else None
        self._last = QuotaUsage(0, 0, 0.0)
        self._pinned: tuple[QuotaLimits | None, str, int, tuple[bytes, bytes]] = (None, "", 0, (b"", b""))
        #: Reserve's money argument per take_lease, for the limits object of ``_pinned``.
        self._cost_args: tuple[bytes, bytes] = (b" 0", b" 0")
        self._flushing = threading.Lock()
        #: Token settles running as tasks (record_tokens in a running loop), by lease id.
        self._settling: dict[str, set[asyncio.Task[None]]] = {}
        #: Replays started after a cancelled admission (kept referenced until done).
        self._background: set[asyncio.Task[None]] = set()
        _STORES.add(self)

    @classmethod
    def from_config(cls, config: Config, client: Any = None) -> RedisQuotaStore:
        """The store named by ``quota.store`` (a redis URL), with the session's limits and policy."""
        quota = config.quota
        return cls(
            client if client is not None else connect(quota.store),
            session=quota.session,
            max_concurrency=config.subagent.max_concurrency,
            lease_seconds=quota.lease_seconds,
            estimated_tokens=quota.estimated_tokens,
            estimated_cost_nanos=int(quota.estimated_cost * NANO),
            failure_policy=quota.failure_policy,
            local_allowance_executions=quota.local_allowance_executions,
            local_allowance_tokens=quota.local_allowance_tokens,
            name=store_name(quota.store),
            async_url=quota.store if client is None else None,
        )

    # -- QuotaStore ----------------------------------------------------------------------------------

    def reserve(self, limits: QuotaLimits) -> QuotaUsage:
        """Count one execution (no lease, no slot): the plain ``QuotaStore`` contract."""
        return self._admit_sync(limits, take_lease=False).usage

    def add_tokens(self, tokens: int, limits: QuotaLimits, cost_nanos: int = 0) -> QuotaUsage:
        return self._settle_sync("", tokens, cost_nanos, release=False)

    def usage(self) -> QuotaUsage:
        """The fleet's usage; the last known one (logged) while the store is unreachable."""
        try:
            reply = _USAGE.run(self._client, self._keys[:2])
        except UNAVAILABLE as error:
            _log.debug("subagent_telemetry: quota usage read failed: %s", error)
            return self._last
        return self._remember(reply)

    def reset(self) -> None:
        """Start a new session for the whole fleet: the budget, its leases and its pinned limits go."""
        try:
            self._client.delete(*self._keys)  # Its replies too: a new session starts clean.
        except UNAVAILABLE as error:
            raise QuotaStoreUnavailable(self.name, self.policy.policy, str(error)) from None
        dropped = self.policy.drop_backlog()
        if dropped:
            _log.warning("subagent_telemetry: reset dropped %d operations not yet replayed", dropped)
        self._last = QuotaUsage(0, 0, 0.0, 0)

    def check_limits(self, limits: QuotaLimits) -> None:
        """Raise ``QuotaLimitsMismatchError`` when the session is pinned to other limits (reads only).

        A fleet worker calls it at startup, so a worker with other limits fails before it serves.
        Raises ``QuotaStoreUnavailable`` when the store cannot be reached.
        """
        try:
            pinned = self._client.hget(self._keys[0], "limits")
        except UNAVAILABLE as error:
            raise QuotaStoreUnavailable(self.name, self.policy.policy, str(error)) from None
        if pinned is not None:
            pinned = pinned.decode() if isinstance(pinned, bytes) else str(pinned)
            if pinned != pin(limits, self._max_concurrency):
                raise self._mismatch(pinned, limits)

    def close(self) -> None:
        """Close the sync client's connections (the asyncio clients close with their loops)."""
        try:
            self._client.close()
        except Exception:
            _log.debug("subagent_telemetry: closing the redis client failed", exc_info=True)

    # -- LeasingQuotaStore ---------------------------------------------------------------------------

    def acquire(self, limits: QuotaLimits) -> Reservation:
        return self._admit_sync(limits, take_lease=True)

    async def acquire_async(self, limits: QuotaLimits) -> Reservation:
        if self.loop_clients is None:
            return await asyncio.to_thread(self._admit_sync, limits, True)
        side = await self.loop_clients.get()
        request_id = _new_id()
        if self.policy.skipping():
            return self._degraded_admit(request_id, "unreachable moments ago", True)
        try:
            if not self.policy.idle:
                await self._flush_async(side)
            static = self._static(limits, True)
            reply = await _RESERVE.run_async(
                side, self._keys, request_id.encode(), static, self._cost_args[True]
            )
        except UNAVAILABLE as error:
            return self._on_admit_error(request_id, error, True)
        except asyncio.CancelledError:
            # The script may have run (or run later): void it, so the fleet never counts an execution
            # this process does not record, and give its lease back now rather than at expiry.
            self.policy.add_item(f"v {request_id}")
            self._flush_soon(side)
            raise
        return self._admitted(request_id, reply, limits)

    def add_lease_tokens(
        self, reservation: Reservation, tokens: int, limits: QuotaLimits, cost_nanos: int = 0
    ) -> QuotaUsage:
        lease = reservation.lease_id
        if lease.startswith(_LOCAL_PREFIX):
            lease = ""  # Admitted while degraded: no lease in the store, only the tokens to add.
        elif self.loop_clients is not None and (tokens or cost_nanos):
            loop = _running_loop()
            if loop is not None:  # Inside async code: never block the loop on a round trip.
                return self._settle_in_task(loop, lease, tokens, cost_nanos)
        return self._settle_sync(lease, tokens, cost_nanos, release=False)

    def release(self, reservation: Reservation) -> None:
        if reservation.lease_id.startswith(_LOCAL_PREFIX):
            return
        try:
            self._settle_sync(reservation.lease_id, 0, 0, release=True)
        except Exception:
            _log.warning("subagent_telemetry: releasing a quota lease failed", exc_info=True)

    async def release_async(self, reservation: Reservation) -> None:
        lease = reservation.lease_id
        if lease.startswith(_LOCAL_PREFIX):
            return
        if self.loop_clients is None:
            await asyncio.to_thread(self.release, reservation)
            return
        try:
            await self._settled(lease)
            await self._settle_async(lease, 0, 0, release=True)
        except Exception:
            _log.warning("subagent_telemetry: releasing a quota lease failed", exc_info=True)

    # -- the sync path -------------------------------------------------------------------------------

    def _admit_sync(self, limits: QuotaLimits, take_lease: bool) -> Reservation:
        request_id = _new_id()
        if self.policy.skipping():
            return self._degraded_admit(request_id, "unreachable moments ago", take_lease)
        try:
            if not self.policy.idle:
                self._flush()
            static = self._static(limits, take_lease)
            reply = _RESERVE.run(
                self._client, self._keys, request_id.encode(), static, self._cost_args[take_lease]
            )
        except UNAVAILABLE as error:
            return self._on_admit_error(request_id, error, take_lease)
        return self._admitted(request_id, reply, limits)

    def _settle_sync(self, lease: str, tokens: int, cost: int, *, release: bool) -> QuotaUsage:
        if self.policy.skipping():
            return self._settle_degraded(lease, tokens, cost, release=release, sent="")
        request_id = _new_id()
        try:
            if not self.policy.idle:
                self._flush()
            reply = _SETTLE.run(
                self._client, self._keys, *self._settle_args(request_id, lease, tokens, cost, release)
            )
        except UNAVAILABLE as error:
            self.policy.failed(error)
            return self._settle_degraded(lease, tokens, cost, release=release, sent=request_id)
        return self._remember(reply)

    def _flush(self) -> None:
        """Replay the backlog (one round trip per batch; one thread at a time, the others go on)."""
        if not self._flushing.acquire(blocking=False):
            return
        try:
            while (batch := self.policy.next_batch()) is not None:
                reply = _REPLAY.run(self._client, self._keys, *self._replay_args(batch))
                self.policy.replayed(batch)
                self._remember(reply)
            self.policy.recovered()
        finally:
            self._flushing.release()

    # -- the asyncio path ----------------------------------------------------------------------------

    async def _flush_async(self, side: Any) -> None:
        if not self._flushing.acquire(blocking=False):
            return
        try:
            while (batch := self.policy.next_batch()) is not None:
                reply = await _REPLAY.run_async(side, self._keys, *self._replay_args(batch))
                self.policy.replayed(batch)
                self._remember(reply)
            self.policy.recovered()
        finally:
            self._flushing.release()

    def _flush_soon(self, side: Any) -> None:
        """Replay the backlog in a task of the running loop (after a cancelled call)."""
        task = asyncio.get_running_loop().create_task(self._flush_logged(side))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _flush_logged(self, side: Any) -> None:
        try:
            await self._flush_async(side)
        except UNAVAILABLE as error:
            self.policy.failed(error)
        except Exception:
            _log.warning("subagent_telemetry: replaying the quota backlog failed", exc_info=True)

    async def _settle_async(self, lease: str, tokens: int, cost: int, *, release: bool) -> None:
        assert self.loop_clients is not None
        if self.policy.skipping():
            self._settle_degraded(lease, tokens, cost, release=release, sent="")
            return
        side = await self.loop_clients.get()
        request_id = _new_id()
        try:
            if not self.policy.idle:
                await self._flush_async(side)
            reply = await _SETTLE.run_async(
                side, self._keys, *self._settle_args(request_id, lease, tokens, cost, release)
            )
        except UNAVAILABLE as error:
            self.policy.failed(error)
            self._settle_degraded(lease, tokens, cost, release=release, sent=request_id)
        except asyncio.CancelledError:
            # Sent or not, it is settled by the replay (a release is idempotent, tokens go by request id).
            self._settle_degraded(lease, tokens, cost, release=release, sent=request_id)
            raise
        else:
            self._remember(reply)

    def _settle_in_task(
        self, loop: asyncio.AbstractEventLoop, lease: str, tokens: int, cost: int
    ) -> QuotaUsage:
        """Settle tokens in a task of the running loop; the usage returned counts them already."""
        task = loop.create_task(self._settle_logged(lease, tokens, cost))
        tasks = self._settling.setdefault(lease, set())
        tasks.add(task)
        task.add_done_callback(lambda done: self._settled_one(lease, done))
        last = self._last
        usage = QuotaUsage(
            last.executions, last.total_tokens + tokens, last.elapsed_seconds, last.cost_nanos + cost
        )
        self._last = usage
        return usage

    async def _settle_logged(self, lease: str, tokens: int, cost: int) -> None:
        try:
            await self._settle_async(lease, tokens, cost, release=False)
        except Exception:
            _log.warning("subagent_telemetry: recording tokens in the quota store failed", exc_info=True)

    def _settled_one(self, lease: str, task: asyncio.Task[None]) -> None:
        tasks = self._settling.get(lease)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._settling[lease]

    async def _settled(self, lease: str) -> None:
        """Wait for the lease's token settles still running (before its release)."""
        tasks = self._settling.get(lease)
        if tasks:
            await asyncio.wait(list(tasks))

    # -- shared helpers ------------------------------------------------------------------------------

    def _forked(self) -> None:
        self._flushing = threading.Lock()
        self._settling = {}
        self._background = set()
        self.policy.forked()

    def _ttl_ms(self, limits: QuotaLimits) -> int:
        budget = limits.max_total_time
        base = budget if budget is not None else IDLE_TTL_SECONDS
        return int((base + TTL_GRACE_SECONDS) * 1000) + self._lease_ms

    def _static(self, limits: QuotaLimits, take_lease: bool) -> bytes:
        """Reserve's second argument: the pinned limits and settings, encoded once per limits object."""
        cached = self._pinned
        if cached[0] is not limits:  # Limits rarely change: format them once, not per admission.
            pinned, ttl_ms = pin(limits, self._max_concurrency), self._ttl_ms(limits)
            common = f"{self._lease_ms} {self._estimate}"
            tail = f"{ttl_ms} {self._reply_ttl_ms}"
            static = (f"{pinned} {common} 0 {tail}".encode(), f"{pinned} {common} 1 {tail}".encode())
            cost_limit = "" if limits.cost_limit_nanos is None else str(limits.cost_limit_nanos)
            self._cost_args = (f"{cost_limit} 0".encode(), f"{cost_limit} {self._cost_estimate}".encode())
            cached = self._pinned = (limits, pinned, ttl_ms, static)
        return cached[3][take_lease]

    def _fallback_ttl_ms(self) -> int:
        """The keys' TTL for a settle or replay before any reserve fixed the session's (rare)."""
        return self._pinned[2] or self._ttl_ms(QuotaLimits())

    def _settle_args(
        self, request_id: str, lease: str, tokens: int, cost: int, release: bool
    ) -> tuple[bytes, bytes, bytes, bytes]:
        numbers = f"{tokens} {int(release)} {self._lease_ms} {self._fallback_ttl_ms()} {self._reply_ttl_ms}"
        return request_id.encode(), lease.encode(), numbers.encode(), str(cost).encode()

    def _replay_args(self, batch: Batch) -> list[bytes]:
        head = (
            f"{self.policy.client_id} {batch.seq} {batch.executions} {batch.tokens} {batch.cost} "
            f"{self._lease_ms} {self._fallback_ttl_ms()} {self._reply_ttl_ms}"
        )
        return [
            f"replay-{self.policy.client_id}-{batch.seq}".encode(),
            head.encode(),
            *(i.encode() for i in batch.items),
        ]

    def _remember(self, reply: bytes | str) -> QuotaUsage:
        parts = _split(reply)
        usage = QuotaUsage(int(parts[1]), int(parts[2]), int(parts[4]) / 1000, _cost(parts))
        self._last = usage
        return usage

    def _mismatch(self, pinned: str, limits: QuotaLimits) -> QuotaLimitsMismatchError:
        mine = pin(limits, self._max_concurrency)
        msg = (
            f"quota session {self.session!r} in {self.name} is pinned to limits {pinned} "
            f"(executions|tokens|time_ms|concurrency) but this process has {mine}; give every process "
            "of the fleet the same agent.subagent limits, or use another quota.session"
        )
        return QuotaLimitsMismatchError(msg)

    def _admitted(self, request_id: str, reply: bytes | str, limits: QuotaLimits) -> Reservation:
        parts = _split(reply)
        code = parts[0]
        if code == b"limits":
            raise self._mismatch(parts[6].decode(), limits)
        if code == b"cost_limits":
            pinned = parts[6].decode()
            mine = "0" if limits.cost_limit_nanos is None else str(limits.cost_limit_nanos)
            msg = (
                f"quota session {self.session!r} in {self.name} is pinned to a money limit of {pinned} "
                f"nano-units (0 = none) but this process has {mine}; give every process of the fleet the "
                "same agent.subagent.max_total_cost, or use another quota.session"
            )
            raise QuotaLimitsMismatchError(msg)
        usage = QuotaUsage(int(parts[1]), int(parts[2]), int(parts[4]) / 1000, _cost(parts))
        self._last = usage
        if code == b"ok":
            return Reservation(request_id, usage)
        committed = usage.total_tokens + int(parts[3])
        if code == b"executions":
            raise ExecutionLimitReached(usage.executions, limits.max_executions or 0)
        if code == b"tokens":
            raise TokenLimitExceeded(committed, limits.max_total_tokens or 0)
        if code == b"time":
            raise TimeLimitExceeded(usage.elapsed_seconds, limits.max_total_time or 0.0)
        if code == b"cost":
            committed_cost = usage.cost_nanos + int(parts[6].split(b"|")[1])
            used = Decimal(committed_cost).scaleb(-9).normalize()
            raise CostLimitExceeded(used, limits.max_total_cost or Decimal(0), currency=limits.currency)
        raise ConcurrencyLimitReached(int(parts[5]), self._max_concurrency or 0, "(fleet-wide)")

    def _on_admit_error(self, request_id: str, error: Exception, take_lease: bool) -> Reservation:
        self.policy.failed(error)
        # The script may have run with its reply lost: the replay gives that execution (and lease) back.
        self.policy.add_item(f"v {request_id}")
        return self._degraded_admit(request_id, f"{type(error).__name__}: {error}", take_lease)

    def _degraded_admit(self, request_id: str, reason: str, take_lease: bool) -> Reservation:
        self.policy.admit(reason)  # Raises QuotaStoreUnavailable when the policy refuses.
        self.policy.add_executions(1)
        last = self._last
        usage = QuotaUsage(last.executions + 1, last.total_tokens, last.elapsed_seconds, last.cost_nanos)
        self._last = usage
        return Reservation(_LOCAL_PREFIX + request_id, usage)

    def _settle_degraded(self, lease: str, tokens: int, cost: int, *, release: bool, sent: str) -> QuotaUsage:
        """Keep a settle for the replay. ``sent``: its request id when it may have reached the store."""
        if tokens or cost:
            if sent:
                if not self.policy.add_item(f"t {sent} {lease} {tokens} {cost}"):
                    self.policy.add_tokens(tokens, cost)  # Backlog full: counted (maybe twice), never lost.
            else:
                self.policy.add_tokens(tokens, cost)
        if release and lease:
            self.policy.add_item(f"r {lease}")
        last = self._last
        usage = QuotaUsage(
            last.executions, last.total_tokens + tokens, last.elapsed_seconds, last.cost_nanos + cost
        )
        self._last = usage
        return usage


def check_store(config: Config) -> str:
    """``validate --store``: the live store accepts this config's limits; a line saying so.

    Raises ``ConfigError``: ``QuotaLimitsMismatchError`` when the session is pinned to other limits, or
    when the store cannot be reached (named without credentials).
    """
    if not config.quota.shared:
        return "quota.store is memory: no shared store to check"
    store = RedisQuotaStore.from_config(config)
    limits = QuotaLimits.from_config(config.subagent)
    try:
        store.check_limits(limits)
    except QuotaStoreUnavailable as error:
        msg = f"quota.store: cannot check the pinned limits: {store.name} is unreachable ({error.reason})"
        raise ConfigError(msg) from None
    finally:
        store.close()
    pinned = pin(limits, config.subagent.max_concurrency)
    return f"{store.name}: quota session {config.quota.session!r} accepts limits {pinned}"


def _cost(parts: list[bytes]) -> int:
    """Money spent (nano-units) from a split reply; 0 from a script without money fields."""
    return int(parts[6].split(b"|", 1)[0]) if len(parts) > 6 else 0


def _split(reply: bytes | str) -> list[bytes]:
    """A script's reply ``code|executions|tokens|reserved|elapsed_ms|active[|pinned]``, as bytes."""
    if isinstance(reply, str):  # A client made with decode_responses=True.
        reply = reply.encode()
    return reply.split(b"|", 6)


def pin(limits: QuotaLimits, max_concurrency: int | None) -> str:
    """The limits as pinned in the store: ``executions|tokens|time_ms|concurrency``, empty = unlimited."""
    time_ms = None if limits.max_total_time is None else round(limits.max_total_time * 1000)
    values = (limits.max_executions, limits.max_total_tokens, time_ms, max_concurrency)
    return "|".join("" if v is None else str(v) for v in values)

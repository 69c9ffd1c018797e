"""Session budgets: ``QuotaLimits``, ``QuotaTracker`` and the store seam behind it.

The tracker knows nothing of metrics. Every check-and-update is one atomic step in the store, so
threads, asyncio tasks (and, with a shared store, processes) racing for the last slots never over-admit.
"""

from __future__ import annotations

import asyncio
import operator
import os
import random
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, NamedTuple, Protocol

from .._errors import (
    ConcurrencyLimitReached,
    CostLimitExceeded,
    ExecutionLimitReached,
    TimeLimitExceeded,
    TokenLimitExceeded,
)
from .._vocab import Resource

if TYPE_CHECKING:
    from .._config import SubagentConfig

Clock = Callable[[], float]
#: Called once per resource when its utilization first reaches the warning ratio: (resource, used, limit).
WarningHook = Callable[[Resource, float, float], None]


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    """Session budgets; ``None`` means unlimited. ``max_total_cost`` is an exact amount of
    ``currency``; the stores count it in integer nano-units (``cost_limit_nanos``)."""

    max_executions: int | None = None
    max_total_tokens: int | None = None
    max_total_time: float | None = None
    max_total_cost: Decimal | None = None
    currency: str = "USD"
    #: ``max_total_cost`` in nano-units of the currency (derived; ``None`` when unlimited).
    cost_limit_nanos: int | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("max_executions", "max_total_tokens", "max_total_time", "max_total_cost"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                msg = f"QuotaLimits.{name} must be > 0 or None (unlimited), got {value!r}"
                raise ValueError(msg)
        cost = self.max_total_cost
        if cost is not None:
            nanos = Decimal(cost) * NANO
            if nanos != nanos.to_integral_value() or nanos >= 2**53:
                msg = f"QuotaLimits.max_total_cost must have at most 9 decimals and be < 9e6, got {cost!r}"
                raise ValueError(msg)
            object.__setattr__(self, "cost_limit_nanos", int(nanos))

    @classmethod
    def from_config(cls, config: SubagentConfig, currency: str = "USD") -> QuotaLimits:
        return cls(
            config.max_executions,
            config.max_total_tokens,
            config.max_total_time,
            config.max_total_cost,
            currency,
        )

    def limit_of(self, resource: Resource) -> float | None:
        """The limit of a budgeted resource; ``None`` when it is unlimited."""
        if resource is Resource.EXECUTIONS:
            return self.max_executions
        if resource is Resource.TOKENS:
            return self.max_total_tokens
        if resource is Resource.TIME_SECONDS:
            return self.max_total_time
        if resource is Resource.COST and self.max_total_cost is not None:
            return float(self.max_total_cost)
        return None


#: Nano-units per unit of the currency: the integer unit of money in every store.
NANO = 10**9


class QuotaUsage(NamedTuple):
    """What a session has used so far (a tuple: built on every admission, so it must be cheap).
    ``cost_nanos``: money spent, in nano-units of the currency."""

    executions: int
    total_tokens: int
    elapsed_seconds: float
    cost_nanos: int = 0

    def used_of(self, resource: Resource) -> float:
        """How much of a budgeted resource this usage has spent."""
        if resource is Resource.EXECUTIONS:
            return self.executions
        if resource is Resource.TOKENS:
            return self.total_tokens
        if resource is Resource.COST:
            return self.cost_nanos / NANO
        return self.elapsed_seconds


#: The largest token count one call may add: far above any model response, and small enough that every
#: store's 64-bit counters and the float histogram sums stay exact (docs/api.md, "Token counts").
MAX_TOKENS_PER_CALL = 10**12


def token_count(value: object) -> int | None:
    """``value`` as a token count, or ``None`` when it is not one.

    A count is a whole number from 0 to ``MAX_TOKENS_PER_CALL``: an ``int``, anything with
    ``__index__`` (numpy integers), or a float with an integral value (``100.0``). ``bool``, NaN,
    infinities, fractions, negatives, larger numbers and non-numbers are not counts.
    """
    if type(value) is int:
        return value if 0 <= value <= MAX_TOKENS_PER_CALL else None
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not value.is_integer():  # Also False for NaN and the infinities.
            return None
        count = int(value)
    else:
        try:
            count = operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            return None
    return count if 0 <= count <= MAX_TOKENS_PER_CALL else None


def _nanos(value: object) -> int:
    """``value`` as nano-units of money; ``ValueError`` for NaN, fractions, bools, negatives, non-numbers
    (a NaN would turn the session's spend into NaN and disable the money budget)."""
    count = None
    if not isinstance(value, (bool, float)):
        try:
            count = operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            count = None
    if count is None or count < 0:
        msg = f"cost_nanos must be a whole number of nano-units >= 0, got {value!r}"
        raise ValueError(msg)
    return count


#: Builds a QuotaUsage without the Python-level ``__new__`` NamedTuple generates (hot path).
_usage = tuple.__new__


class QuotaStore(Protocol):
    """Where a session's counters live. Each method is one atomic check-and-update."""

    def reserve(self, limits: QuotaLimits) -> QuotaUsage:
        """Check every limit and count one execution; raise the matching ``QuotaExceeded`` instead."""
        ...

    def add_tokens(self, tokens: int, limits: QuotaLimits, cost_nanos: int = 0) -> QuotaUsage:
        """Add tokens and money (keeping honest totals) and return the usage after the addition."""
        ...

    def usage(self) -> QuotaUsage:
        """A consistent snapshot."""
        ...

    def reset(self) -> None:
        """Start a new session: zero the counters; its clock starts at its first admission."""
        ...


@dataclass(frozen=True, slots=True)
class Reservation:
    """An admitted execution's hold on a leasing store: its lease id and the usage at admission."""

    lease_id: str
    usage: QuotaUsage


class LeasingQuotaStore(QuotaStore, Protocol):
    """A store shared by processes (Redis). Admission also takes a leased fleet-wide concurrency slot
    and the token estimate; ``release`` gives back the slot and the unused estimate. A lease that is
    never released (process killed) expires on its own. ``leases`` is ``True`` (the marker the tracker
    checks, so the in-memory path pays nothing)."""

    leases: bool

    def acquire(self, limits: QuotaLimits) -> Reservation:
        """Like ``reserve`` plus a concurrency slot; ``ConcurrencyLimitReached`` when the fleet is full."""
        ...

    async def acquire_async(self, limits: QuotaLimits) -> Reservation:
        """``acquire`` without blocking the event loop."""
        ...

    def add_lease_tokens(
        self, reservation: Reservation, tokens: int, limits: QuotaLimits, cost_nanos: int = 0
    ) -> QuotaUsage:
        """``add_tokens`` that also settles the reservation's estimates and renews its lease."""
        ...

    def release(self, reservation: Reservation) -> None:
        """Give back the slot and the unused estimate. Never raises."""
        ...

    async def release_async(self, reservation: Reservation) -> None:
        """``release`` without blocking the event loop. Never raises."""
        ...


#: Polling a fleet-wide slot: first pause, longest pause (seconds). Jittered so waiters do not align.
_SLOT_POLL_SECONDS = (0.005, 0.1)


class InMemoryQuotaStore:
    """The default store: one process, guarded by one lock held for a few comparisons.

    The time budget runs from the session's first admission (as on the Redis store), not from
    construction: a server that idles before its first execution has its whole budget left.
    """

    __slots__ = ("__weakref__", "_clock", "_cost", "_executions", "_lock", "_started", "_tokens")

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        _IN_MEMORY_STORES.add(self)
        self._executions = 0
        self._tokens = 0
        self._cost = 0
        self._started: float | None = None  # Set by the first admission.

    def reserve(self, limits: QuotaLimits) -> QuotaUsage:
        """Count one execution unless a budget is spent (atomic); the usage after it."""
        max_time = limits.max_total_time
        started = self._started
        if started is None:
            started = self._start()
        # Read after the start was set: never before it.
        elapsed = self._clock() - started if max_time is not None else 0.0
        with self._lock:
            executions = self._executions
            if limits.max_executions is not None and executions >= limits.max_executions:
                raise ExecutionLimitReached(executions, limits.max_executions)
            if limits.max_total_tokens is not None and self._tokens >= limits.max_total_tokens:
                raise TokenLimitExceeded(self._tokens, limits.max_total_tokens)
            if max_time is not None and elapsed >= max_time:
                raise TimeLimitExceeded(elapsed, max_time)
            cost_limit = limits.cost_limit_nanos
            if cost_limit is not None and self._cost >= cost_limit:
                raise _cost_refusal(self._cost, limits)
            self._executions = executions + 1
            return _usage(QuotaUsage, (executions + 1, self._tokens, elapsed, self._cost))

    def _start(self) -> float:
        """The session's first admission starts its clock (once, whichever thread gets here first)."""
        with self._lock:
            if self._started is None:
                self._started = self._clock()
            return self._started

    def add_tokens(self, tokens: int, limits: QuotaLimits, cost_nanos: int = 0) -> QuotaUsage:
        """Add tokens (and their cost) to the session's totals; the usage after it."""
        started = self._started  # _elapsed() inlined: this runs on every record_tokens.
        elapsed = 0.0 if started is None else max(self._clock() - started, 0.0)
        with self._lock:
            self._tokens += tokens
            self._cost += cost_nanos
            return _usage(QuotaUsage, (self._executions, self._tokens, elapsed, self._cost))

    def usage(self) -> QuotaUsage:
        """The session's usage now."""
        with self._lock:
            return QuotaUsage(self._executions, self._tokens, self._elapsed(), self._cost)

    def _elapsed(self) -> float:
        return 0.0 if self._started is None else max(self._clock() - self._started, 0.0)

    def reset(self) -> None:
        """Start a new session: zero usage, the clock restarted."""
        with self._lock:
            self._executions = 0
            self._tokens = 0
            self._cost = 0
            self._started = None


#: Every in-memory store of this process: a forked child gets fresh locks (another thread may have held
#: one at the fork, and nobody in the child would release it). The counts carry over.
_IN_MEMORY_STORES: weakref.WeakSet[InMemoryQuotaStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_IN_MEMORY_STORES):
        store._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _cost_refusal(used_nanos: int, limits: QuotaLimits) -> CostLimitExceeded:
    used = Decimal(used_nanos).scaleb(-9).normalize()
    return CostLimitExceeded(used, limits.max_total_cost or Decimal(0), currency=limits.currency)


_INF = float("inf")
_NO_WARNINGS = (_INF, _INF, _INF, _INF)


def _warn_thresholds(pending: list[tuple[Resource, float, float]]) -> tuple[float, float, float, float]:
    """(executions, tokens, seconds, cost nanos) at which a pending warning fires; inf where none is
    pending."""
    at = {resource: threshold for resource, threshold, _ in pending}
    return (
        at.get(Resource.EXECUTIONS, _INF),
        at.get(Resource.TOKENS, _INF),
        at.get(Resource.TIME_SECONDS, _INF),
        at.get(Resource.COST, _INF) * NANO,
    )


class QuotaTracker:
    """Admission control for one session (seed-compatible API).

    ``check_and_reserve()`` admits and counts an execution atomically; ``record_execution(tokens)``
    adds its tokens. Executions count at admission, whatever their outcome.
    """

    def __init__(
        self,
        limits: QuotaLimits,
        *,
        store: QuotaStore | None = None,
        clock: Clock = time.monotonic,
        warning_ratio: float | None = None,
        on_warning: WarningHook | None = None,
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._store: QuotaStore = store if store is not None else InMemoryQuotaStore(clock)
        #: The store again when it leases fleet-wide slots (Redis); ``None`` for the in-memory path.
        self.leasing: LeasingQuotaStore | None = (
            store if store is not None and getattr(store, "leases", False) is True else None  # type: ignore[assignment]
        )
        self._warning_ratio = warning_ratio
        self._on_warning = on_warning
        self._warn_lock = threading.Lock()
        #: (resource, usage at which to warn, limit) not yet warned about; empty = nothing to check.
        self._pending_warnings: list[tuple[Resource, float, float]] = []
        #: Usage (executions, tokens, seconds) at which a pending warning fires; inf when none is pending.
        self._warn_at: tuple[float, float, float, float] = _NO_WARNINGS
        self._arm_warnings()

    @property
    def store(self) -> QuotaStore:
        """The store holding the session's usage (in memory or shared)."""
        return self._store

    def check_and_reserve(self) -> QuotaUsage:
        """Admit one execution or raise ``ExecutionLimitReached`` / ``TokenLimitExceeded`` /
        ``TimeLimitExceeded``; check and count happen in one atomic step."""
        usage = self._store.reserve(self.limits)
        at = self._warn_at  # Inlined from _maybe_warn: nothing crossed is four comparisons.
        if usage[0] >= at[0] or usage[1] >= at[1] or usage[2] >= at[2] or usage[3] >= at[3]:
            self._maybe_warn(usage)
        return usage

    def acquire(self, wait_seconds: float | None) -> Reservation:
        """Admit on a leasing store, polling up to ``wait_seconds`` (``None``: forever) for a fleet slot."""
        assert self.leasing is not None
        deadline = None if wait_seconds is None else time.monotonic() + wait_seconds
        pause = _SLOT_POLL_SECONDS[0]
        while True:
            try:
                reservation = self.leasing.acquire(self.limits)
                break
            except ConcurrencyLimitReached:
                pause = _next_pause(pause, deadline)
                if pause <= 0:
                    raise
                time.sleep(pause)
        if self._pending_warnings:
            self._maybe_warn(reservation.usage)
        return reservation

    async def acquire_async(self, wait_seconds: float | None) -> Reservation:
        """``acquire`` for asyncio code: the loop stays free while waiting."""
        assert self.leasing is not None
        deadline = None if wait_seconds is None else time.monotonic() + wait_seconds
        pause = _SLOT_POLL_SECONDS[0]
        while True:
            try:
                reservation = await self.leasing.acquire_async(self.limits)
                break
            except ConcurrencyLimitReached:
                pause = _next_pause(pause, deadline)
                if pause <= 0:
                    raise
                await asyncio.sleep(pause)
        if self._pending_warnings:
            self._maybe_warn(reservation.usage)
        return reservation

    def release(self, reservation: Reservation) -> None:
        """Give back a leasing store's fleet-wide slot (no-op for the in-memory store)."""
        assert self.leasing is not None
        self.leasing.release(reservation)

    async def release_async(self, reservation: Reservation) -> None:
        """``release`` without blocking the event loop on the store."""
        assert self.leasing is not None
        await self.leasing.release_async(reservation)

    def record_execution(
        self, tokens: int, reservation: Reservation | None = None, cost_nanos: int = 0
    ) -> QuotaUsage:
        """Add an execution's tokens and money (nano-units of the currency); raise
        ``TokenLimitExceeded`` / ``CostLimitExceeded`` once a total passes its limit.

        Both are counted even when they overshoot: the totals stay honest. With a leasing store,
        ``reservation`` settles them against the execution's estimates.
        """
        if type(tokens) is not int or not 0 <= tokens <= 1_000_000_000_000:  # MAX_TOKENS_PER_CALL
            count = token_count(tokens)
            if count is None:  # Checked before any store sees it: NaN would disable the budget.
                msg = f"tokens must be a whole number from 0 to {MAX_TOKENS_PER_CALL}, got {tokens!r}"
                raise ValueError(msg)
            tokens = count
        if type(cost_nanos) is not int or cost_nanos < 0:
            cost_nanos = _nanos(cost_nanos)  # Checked before any store sees it, as tokens are.
        if reservation is not None and self.leasing is not None:
            usage = self.leasing.add_lease_tokens(reservation, tokens, self.limits, cost_nanos)
        else:
            usage = self._store.add_tokens(tokens, self.limits, cost_nanos)
        at = self._warn_at
        if usage[0] >= at[0] or usage[1] >= at[1] or usage[2] >= at[2] or usage[3] >= at[3]:
            self._maybe_warn(usage)
        limits = self.limits
        limit = limits.max_total_tokens
        if limit is not None and usage[1] > limit:  # total_tokens
            raise TokenLimitExceeded(usage[1], limit)
        cost_limit = limits.cost_limit_nanos
        # Only a call that spends raises: a token-only call does not stop for money spent elsewhere.
        if cost_nanos and cost_limit is not None and usage[3] > cost_limit:
            raise _cost_refusal(usage[3], limits)
        return usage

    def get_usage(self) -> QuotaUsage:
        """The session's usage now."""
        return self._store.usage()

    def remaining_executions(self) -> int | None:
        """Executions left in the session's budget; ``None`` when unlimited."""
        limit = self.limits.max_executions
        return None if limit is None else max(limit - self._store.usage().executions, 0)

    def remaining_tokens(self) -> int | None:
        """Tokens left in the session's budget; ``None`` when unlimited."""
        limit = self.limits.max_total_tokens
        return None if limit is None else max(limit - self._store.usage().total_tokens, 0)

    def remaining_cost(self) -> Decimal | None:
        """Money left in the session's budget, exact; ``None`` when unlimited."""
        limit = self.limits.cost_limit_nanos
        if limit is None:
            return None
        return Decimal(max(limit - self._store.usage().cost_nanos, 0)).scaleb(-9)

    def remaining_time(self) -> float | None:
        """Seconds left in the session's time budget; ``None`` when unlimited."""
        limit = self.limits.max_total_time
        return None if limit is None else max(limit - self._store.usage().elapsed_seconds, 0.0)

    def deadline(self) -> float | None:
        """When the time budget runs out, on this tracker's clock; ``None`` when unlimited."""
        remaining = self.remaining_time()
        return None if remaining is None else self._clock() + remaining

    def check_time(self) -> None:
        """Raise ``TimeLimitExceeded`` when the time budget is spent (for sync code to call)."""
        limit = self.limits.max_total_time
        if limit is not None:
            elapsed = self._store.usage().elapsed_seconds
            if elapsed >= limit:
                raise TimeLimitExceeded(elapsed, limit)

    def reset(self) -> None:
        """Start a new session with the same limits."""
        self._store.reset()
        self._arm_warnings()

    def _arm_warnings(self) -> None:
        ratio = self._warning_ratio
        pending = []
        if ratio is not None:
            for resource in (Resource.EXECUTIONS, Resource.TOKENS, Resource.TIME_SECONDS, Resource.COST):
                limit = self.limits.limit_of(resource)
                if limit is not None:
                    pending.append((resource, ratio * limit, float(limit)))
        with self._warn_lock:
            self._pending_warnings = pending
            self._warn_at = _warn_thresholds(pending)

    def _maybe_warn(self, usage: QuotaUsage) -> None:
        # Hot path: nothing crossed (the common case) is three comparisons, no lock, no allocation.
        at = self._warn_at
        if usage[0] < at[0] and usage[1] < at[1] and usage[2] < at[2] and usage[3] < at[3]:
            return
        crossed = []
        with self._warn_lock:
            for item in self._pending_warnings:
                if usage.used_of(item[0]) >= item[1]:  # Cost: in currency units here.
                    crossed.append(item)
            if crossed:
                self._pending_warnings = [i for i in self._pending_warnings if i not in crossed]
                self._warn_at = _warn_thresholds(self._pending_warnings)
        if self._on_warning is not None:
            for resource, _, limit in crossed:
                self._on_warning(resource, usage.used_of(resource), limit)


def _next_pause(pause: float, deadline: float | None) -> float:
    """The next jittered pause while polling for a fleet slot; ``<= 0`` when the deadline has passed."""
    nxt = min(pause * 2, _SLOT_POLL_SECONDS[1]) * random.uniform(0.5, 1.0)
    if deadline is None:
        return nxt
    return min(nxt, deadline - time.monotonic())

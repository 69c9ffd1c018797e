"""What a shared store does while it is unreachable: ``deny``, ``allow`` or a small ``local_allowance``.

Decisions taken without the store are counted (``on_decision``) and logged. What they imply is kept as
a bounded backlog, replayed in one round trip when the store returns (``replay.lua``):

- executions admitted and tokens recorded locally (certainly never sent) are two running sums;
- leases to give back, admissions whose reply was lost (to void) and token additions whose reply was
  lost (added unless the store remembers their request id) are items, at most ``MAX_ITEMS``.

A backlog taken for replay becomes a numbered batch; the store applies a process's batches in order and
each at most once (it keeps the last batch number per process), so a batch whose reply is lost is
retried as is, whenever the store comes back.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ._store_errors import QuotaStoreUnavailable

_log = logging.getLogger("subagent_telemetry")

#: (policy, decision) → counted in ``subagent_quota_store_degraded_decisions_total``.
DecisionHook = Callable[[str, str], None]

#: Items (leases to release or void, token additions whose reply was lost) a backlog holds at most; at
#: most one per in-flight call when the store failed, so only a fleet-sized burst comes near it.
MAX_ITEMS = 10_000


@dataclass(slots=True)
class Batch:
    """A backlog taken for replay: sums (money in nano-units) and items (``r <lease>``, ``v <lease>``,
    ``t <id> <lease> <tokens> <cost>``)."""

    seq: int = 0
    executions: int = 0
    tokens: int = 0
    cost: int = 0
    items: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.executions or self.tokens or self.cost or self.items)


class FailurePolicy:
    """Local decisions while the store is down, and the queue replayed when it is back."""

    def __init__(
        self,
        policy: str,
        store_name: str,
        *,
        allowance_executions: int = 0,
        allowance_tokens: int = 0,
        retry_after_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if policy not in ("deny", "allow", "local_allowance"):
            msg = f"quota.failure_policy must be deny, allow or local_allowance, got {policy!r}"
            raise ValueError(msg)
        self.policy = policy
        self.store_name = store_name
        self.on_decision: DecisionHook | None = None
        self._allowance = (allowance_executions, allowance_tokens)
        self._used = [0, 0]
        self._retry_after = retry_after_seconds
        self._clock = clock
        self._down_until = 0.0
        self._lock = threading.Lock()
        #: Names this process to the store, which applies its replayed batches in order, each once.
        self.client_id = os.urandom(8).hex()
        self._seq = 0
        self._backlog = Batch()
        self._inflight: Batch | None = None
        self._overflowed = False
        #: A backlog or a batch waits for replay (a plain flag: ``idle`` runs on every admission).
        self._queued = False

    # -- store health ---------------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """Nothing to replay and no recent failure: the normal path (read without the lock)."""
        return self._down_until == 0.0 and not self._queued

    def skipping(self) -> bool:
        """True while a recent failure says not to try the store yet (fast local decisions).

        Once ``retry_after_seconds`` have passed, one caller probes the store and the others keep
        deciding locally for another ``retry_after_seconds`` (a paused store costs one caller a
        timeout, not every caller).
        """
        if self._down_until == 0.0:
            return False
        now = self._clock()
        with self._lock:
            if self._down_until == 0.0:
                return False
            if now < self._down_until:
                return True
            self._down_until = now + self._retry_after  # This caller probes.
            return False

    def failed(self, error: BaseException) -> None:
        with self._lock:
            first = self._down_until == 0.0
            self._down_until = self._clock() + self._retry_after
        if first:
            _log.warning(
                "subagent_telemetry: quota store %s unreachable (%s); quota.failure_policy=%s",
                self.store_name,
                error,
                self.policy,
            )

    def recovered(self) -> None:
        """The store answered and the queue is replayed: back to normal, allowance refilled."""
        with self._lock:
            was_down = self._down_until != 0.0
            self._down_until = 0.0
            self._used = [0, 0]
        if was_down:
            _log.warning("subagent_telemetry: quota store %s is back", self.store_name)

    # -- decisions ------------------------------------------------------------------------------------

    def admit(self, reason: str) -> None:
        """Admit one execution without the store, or raise ``QuotaStoreUnavailable``."""
        with self._lock:
            allowed = self.policy == "allow" or (
                self.policy == "local_allowance"
                and self._used[0] < self._allowance[0]
                and self._used[1] < self._allowance[1]
            )
            if allowed:
                self._used[0] += 1
        self._count("admitted" if allowed else "denied")
        if not allowed:
            raise QuotaStoreUnavailable(self.store_name, self.policy, reason)

    # -- the backlog ---------------------------------------------------------------------------------

    @property
    def backlog_items(self) -> int:
        """Items waiting for replay (leases to release or void, token additions whose reply was lost)."""
        inflight = self._inflight
        return len(self._backlog.items) + (len(inflight.items) if inflight is not None else 0)

    def add_executions(self, executions: int) -> None:
        with self._lock:
            self._backlog.executions += executions
            self._queued = True

    def add_tokens(self, tokens: int, cost_nanos: int = 0) -> None:
        """Tokens and money recorded without the store (never sent): summed; tokens count against the
        local allowance."""
        with self._lock:
            self._backlog.tokens += tokens
            self._backlog.cost += cost_nanos
            self._used[1] += tokens
            self._queued = True

    def add_item(self, item: str) -> bool:
        """Queue an item; ``False`` (logged once per outage) when the backlog is full."""
        with self._lock:
            if len(self._backlog.items) < MAX_ITEMS:
                self._backlog.items.append(item)
                self._queued = True
                return True
            first, self._overflowed = not self._overflowed, True
        if first:
            _log.warning(
                "subagent_telemetry: quota store %s backlog is full (%d items); further leases are left "
                "to expire on their own",
                self.store_name,
                MAX_ITEMS,
            )
        return False

    def next_batch(self) -> Batch | None:
        """The batch to replay: the one whose reply was lost (as is), else the backlog; None if empty."""
        with self._lock:
            if self._inflight is None and self._backlog:
                self._seq += 1
                self._backlog.seq = self._seq
                self._inflight, self._backlog = self._backlog, Batch()
                self._overflowed = False
            return self._inflight

    def replayed(self, batch: Batch) -> None:
        with self._lock:
            if self._inflight is batch:
                self._inflight = None
                self._queued = bool(self._backlog)

    def drop_backlog(self) -> int:
        """Forget everything not yet replayed (a new session); returns how many items and sums it held."""
        with self._lock:
            dropped = [b for b in (self._inflight, self._backlog) if b]
            self._inflight, self._backlog = None, Batch()
            self._queued = False
        return sum(len(b.items) + bool(b.executions) + bool(b.tokens) + bool(b.cost) for b in dropped)

    def forked(self) -> None:
        """In a forked child: the parent replays its own backlog; the child starts clean, as a new client."""
        self._lock = threading.Lock()
        self._inflight, self._backlog = None, Batch()
        self._queued = False
        self.client_id = os.urandom(8).hex()
        self._seq = 0

    def _count(self, decision: str) -> None:
        _log.debug("subagent_telemetry: degraded decision %s (policy %s)", decision, self.policy)
        hook = self.on_decision
        if hook is not None:
            try:
                hook(self.policy, decision)
            except Exception:
                _log.warning("subagent_telemetry: the degraded-decision hook raised", exc_info=True)

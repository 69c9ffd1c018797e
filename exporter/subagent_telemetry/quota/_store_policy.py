"""What a shared store does while it is unreachable: ``deny``, ``allow`` or a small ``local_allowance``.

Decisions taken without the store are counted (``on_decision``) and logged, and everything they imply
(executions admitted, tokens used, leases to give back) is queued as operations that carry their own
request id, so replaying them when the store returns applies each exactly once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ._store_errors import QuotaStoreUnavailable

_log = logging.getLogger("subagent_telemetry")

#: (policy, decision) → counted in ``subagent_quota_store_degraded_decisions_total``.
DecisionHook = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class PendingOp:
    """A settle call not yet applied by the store; replayed with the same ``request_id``."""

    request_id: str
    lease_id: str = ""
    tokens: int = 0
    executions: int = 0
    release: bool = False
    uncount: bool = False
    #: Money spent, in nano-units of the currency.
    cost: int = 0


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
        self.pending: list[PendingOp] = []

    # -- store health ---------------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """Nothing to replay and no recent failure: the normal path (read without the lock)."""
        return not self.pending and self._down_until == 0.0

    def skipping(self) -> bool:
        """True while a recent failure says not to try the store yet (fast local decisions)."""
        return self._down_until > 0 and self._clock() < self._down_until

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

    def use_tokens(self, tokens: int) -> None:
        with self._lock:
            self._used[1] += tokens

    def queue(self, op: PendingOp) -> None:
        with self._lock:
            self.pending.append(op)

    def take_pending(self) -> list[PendingOp]:
        with self._lock:
            ops, self.pending = self.pending, []
            return ops

    def requeue(self, ops: list[PendingOp]) -> None:
        with self._lock:
            self.pending[:0] = ops

    def _count(self, decision: str) -> None:
        _log.debug("subagent_telemetry: degraded decision %s (policy %s)", decision, self.policy)
        hook = self.on_decision
        if hook is not None:
            try:
                hook(self.policy, decision)
            except Exception:
                _log.warning("subagent_telemetry: the degraded-decision hook raised", exc_info=True)

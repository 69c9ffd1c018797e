"""Concurrency slots shared by threads and asyncio tasks (``agent.subagent.max_concurrency``).

One counter under one lock. Sync waiters wait on a condition; async waiters park a future on their own
loop and are handed a slot directly by ``release`` (so a slot is never lost between wake-up and claim).

Fork-safe: a child process starts with every slot free and a fresh lock (the executions that held slots
run in the parent's other threads, which the child does not have). A release with no matching acquire
in the child (fork called inside an execution) never raises the free count above the limit.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections import deque


class Slots:
    __slots__ = ("__weakref__", "_async_waiters", "_cond", "_free", "_lock", "_sync_waiters", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._fresh()
        _ALL.add(self)

    def _fresh(self) -> None:
        """Every slot free, no waiter: at construction and in a forked child."""
        self._free = self.limit
        # The uncontended path takes the bare lock (a C call); the condition shares it for sync waiters.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._sync_waiters = 0
        self._async_waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()

    @property
    def in_use(self) -> int:
        return self.limit - self._free

    def try_acquire(self) -> bool:
        with self._lock:
            if self._free > 0:
                self._free -= 1
                return True
            return False

    def acquire(self, timeout_seconds: float | None) -> bool:
        """Block until a slot is free; ``False`` when the timeout passes first."""
        deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
        with self._cond:
            while self._free <= 0:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._sync_waiters += 1
                try:
                    self._cond.wait(remaining)
                finally:
                    self._sync_waiters -= 1
            self._free -= 1
            return True

    async def acquire_async(self, timeout_seconds: float | None) -> bool:
        """Wait without blocking the loop; ``False`` when the timeout passes first."""
        loop = asyncio.get_running_loop()
        with self._cond:
            if self._free > 0:
                self._free -= 1
                return True
            future: asyncio.Future[None] = loop.create_future()
            self._async_waiters.append((loop, future))
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout_seconds)
        except TimeoutError:
            return self._give_up(future)  # A slot handed over at the last moment is kept.
        except asyncio.CancelledError:
            if self._give_up(future):
                self.release()
            raise
        return True

    def release(self) -> None:
        with self._lock:
            while self._async_waiters:
                loop, future = self._async_waiters.popleft()
                if not future.done() and not loop.is_closed():
                    # The slot passes straight to this waiter; _free stays as it is.
                    loop.call_soon_threadsafe(self._hand_over, future)
                    return
            if self._free < self.limit:  # Else a slot taken before a fork: the child never lent it.
                self._free += 1
            if self._sync_waiters:  # notify() costs a Python-level ownership check; skip it when idle.
                self._cond.notify()

    def _hand_over(self, future: asyncio.Future[None]) -> None:
        if future.done():  # Cancelled between hand-over and now: the slot goes back.
            self.release()
        else:
            future.set_result(None)

    def _give_up(self, future: asyncio.Future[None]) -> bool:
        """Withdraw a waiter; ``True`` when it had already been handed a slot."""
        with self._cond:
            if future.done() and not future.cancelled():
                return True
            future.cancel()
            self._async_waiters = deque(w for w in self._async_waiters if w[1] is not future)
            return False


#: Every ``Slots`` of this process, for the fork hook.
_ALL: weakref.WeakSet[Slots] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for slots in list(_ALL):
        slots._fresh()


os.register_at_fork(after_in_child=_after_fork_in_child)

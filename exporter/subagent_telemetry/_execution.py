"""Executions: the context manager (sync and async), the decorator and the manual handle.

An execution is admitted (depth, concurrency slot, session budget) when it starts, tracks turns, tokens
and output while it runs, and records exactly one outcome when it ends, whatever ends it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, NoReturn, TypeVar

from ._errors import (
    ConcurrencyLimitReached,
    DepthLimitExceeded,
    QuotaExceeded,
    SubagentInputError,
    TimeLimitExceeded,
    TokenLimitExceeded,
    TurnLimitExceeded,
)
from ._vocab import ErrorType, Resource, Status
from .quota._tracker import QuotaUsage, Reservation

if TYPE_CHECKING:
    from ._telemetry import SubagentTelemetry

_log = logging.getLogger("subagent_telemetry")

#: Maps an exception that escaped an execution to its error type; return None to use the default rules.
ErrorClassifier = Callable[[BaseException], ErrorType | None]


def classify(  # noqa: PLR0911 - one return per documented rule reads best
    exc: BaseException, custom: ErrorClassifier | None = None
) -> Status | ErrorType:
    """The outcome of an execution that ended with ``exc`` (documented in docs/metrics.md)."""
    if isinstance(exc, TurnLimitExceeded):
        return Status.INCOMPLETE
    if isinstance(exc, QuotaExceeded):
        return exc.error_type
    if custom is not None:
        try:
            custom_type = custom(exc)
        except Exception:
            _log.warning("subagent_telemetry: error_classifier raised; using the default", exc_info=True)
        else:
            if custom_type is not None:
                return ErrorType(custom_type)
    if isinstance(exc, asyncio.CancelledError):
        return ErrorType.CANCELLED
    if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
        return ErrorType.INTERRUPTED
    if isinstance(exc, TimeoutError):
        return ErrorType.TIMEOUT
    if isinstance(exc, SubagentInputError):
        return ErrorType.INVALID_INPUT
    return ErrorType.EXECUTION_FAILED


def truncate_utf8(text: str, limit_bytes: int) -> tuple[str, int]:
    """``text`` cut to at most ``limit_bytes`` of UTF-8 without splitting a character; and its size."""
    if len(text) * 4 <= limit_bytes:  # Cannot exceed the limit whatever the characters.
        return text, -1
    data = text.encode("utf-8")
    if len(data) <= limit_bytes:
        return text, len(data)
    return data[:limit_bytes].decode("utf-8", errors="ignore"), len(data)


class Execution:
    """One subagent execution. Use as ``with``/``async with``; one use per object."""

    # Class-level defaults: a new execution only stores what differs (this runs on every call).
    depth = 0
    depth_label = "0"
    parent: Execution | None = None
    turns = 0
    input_tokens = 0
    output_tokens = 0
    status: Status | None = None
    error_type: ErrorType | None = None
    duration_seconds = 0.0
    trace_id: str | None = None
    backend_state: object = None
    #: Usage returned by admission (remaining time for the async deadline without another store call).
    usage_at_start: QuotaUsage | None = None
    _started_at = 0.0
    _slot = False
    #: The fleet-wide hold of a leasing (Redis) store; ``None`` with the in-memory store.
    _lease: Reservation | None = None
    _finished = False
    _token: contextvars.Token[Execution | None] | None = None
    _deadline_cm: asyncio.Timeout | None = None

    def __init__(self, tel: SubagentTelemetry, name: str, max_turns: int | None) -> None:
        if max_turns is None:
            max_turns = tel._default_max_turns
        elif max_turns < 1:
            msg = f"max_turns must be >= 1, got {max_turns!r}"
            raise ValueError(msg)
        self._tel = tel
        self.name = name
        self.agent = tel._agent_label(name)
        self.max_turns = max_turns

    # -- the agent-facing API ------------------------------------------------------------------------

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def elapsed(self) -> float:
        """Seconds since admission."""
        # Time can go backwards with an injected clock; never report a negative duration.
        return max(self._tel._clock() - self._started_at, 0.0)

    def record_turn(self) -> None:
        """Count one turn; raise ``TurnLimitExceeded`` when this turn would pass ``max_turns``."""
        if self.turns >= self.max_turns:
            self._tel._recorder.turn_limit(self)
            raise TurnLimitExceeded(self.turns + 1, self.max_turns)
        self.turns += 1

    def record_tokens(self, input: int = 0, output: int = 0) -> None:
        """Add token usage; raise ``TokenLimitExceeded`` once the session total passes its limit."""
        if input < 0 or output < 0:
            _log.warning(
                "subagent_telemetry: negative token counts dropped (input=%r, output=%r)", input, output
            )
            return
        self.input_tokens += input
        self.output_tokens += output
        try:
            self._tel.tracker.record_execution(input + output, self._lease)
        except TokenLimitExceeded:
            self._tel._recorder.quota_stopped(self, Resource.TOKENS)
            raise

    def set_output(self, text: str) -> str:
        """Return ``text`` truncated to ``output_max_size`` bytes of UTF-8 (counted when cut)."""
        limit = self._tel._output_max_size
        kept, size = truncate_utf8(text, limit)
        if size > limit:
            self._tel._recorder.truncated(self, size, limit)
        return kept

    def mark_incomplete(self) -> None:
        """End as ``status="incomplete"`` even if no exception escapes (a partial result)."""
        self.status = Status.INCOMPLETE

    def check_time(self) -> None:
        """Raise ``TimeLimitExceeded`` when the session's time budget is spent (for sync code)."""
        try:
            self._tel.tracker.check_time()
        except TimeLimitExceeded:
            self._tel._recorder.quota_stopped(self, Resource.TIME_SECONDS)
            raise

    # -- admission -----------------------------------------------------------------------------------

    def _begin(self, parent: Execution | None, depth: int | None = None) -> None:
        """Place the execution under ``parent`` (one level deeper, unless ``depth`` is given)."""
        if self._started_at or self._finished:
            msg = "an Execution object can only be entered once; call tel.execution() again"
            raise RuntimeError(msg)
        self.parent = parent
        if depth is None:
            depth = parent.depth + 1 if parent is not None else 1
        self.depth = depth
        max_depth = self._tel._max_depth
        if depth > max_depth:
            self.depth_label = str(depth)
            self._refuse(DepthLimitExceeded(depth, max_depth))
        self.depth_label = _DEPTH_LABELS[depth]

    def _reserve(self, wait: bool = False) -> None:
        """The budget step, after a concurrency slot is held.

        A leasing (Redis) store also takes a fleet-wide slot there; a top-level execution (``wait``)
        polls for one up to ``concurrency_timeout``, a nested one is refused at once.
        """
        tracker = self._tel.tracker
        try:
            if tracker.leasing is None:
                self.usage_at_start = tracker.check_and_reserve()
            else:
                self._lease = tracker.acquire(self._wait_seconds() if wait else 0.0)
                self.usage_at_start = self._lease.usage
        except BaseException as error:
            self._admission_failed(error)
        self._started_at = self._tel._clock() or 1e-9
        self._tel._recorder.started(self)

    async def _reserve_async(self, wait: bool) -> None:
        """``_reserve`` without blocking the event loop on a leasing store's round trip."""
        tracker = self._tel.tracker
        if tracker.leasing is None:
            self._reserve()
            return
        try:
            self._lease = await tracker.acquire_async(self._wait_seconds() if wait else 0.0)
            self.usage_at_start = self._lease.usage
        except BaseException as error:
            self._admission_failed(error)
        self._started_at = self._tel._clock() or 1e-9
        self._tel._recorder.started(self)

    def _admission_failed(self, error: BaseException) -> NoReturn:
        self._release_slot()
        if isinstance(error, QuotaExceeded):
            self._refuse(error)
        raise error

    def _refuse(self, error: QuotaExceeded) -> None:
        self._finished = True
        self.error_type = error.error_type
        self._tel._recorder.refused(self, error)
        raise error

    def _admit_sync(self, nested: bool) -> None:
        """Take a concurrency slot (only top-level admissions wait for one), then the budget."""
        slots = self._tel._slots
        if not slots.try_acquire() and (nested or not slots.acquire(self._wait_seconds())):
            self._refuse(ConcurrencyLimitReached(slots.in_use, slots.limit))
        self._slot = True
        self._reserve(wait=not nested)

    async def _admit_async(self) -> None:
        self._begin(self._tel._current.get())
        slots = self._tel._slots
        if not slots.try_acquire() and (
            self.parent is not None or not await slots.acquire_async(self._wait_seconds())
        ):
            self._refuse(ConcurrencyLimitReached(slots.in_use, slots.limit))
        self._slot = True
        await self._reserve_async(wait=self.parent is None)

    def _wait_seconds(self) -> float | None:
        """How long a top-level admission waits for a slot.

        Only top-level executions wait: a nested one whose ancestors hold slots would deadlock when
        every slot belongs to a parent waiting on its children, so it takes a free slot or is refused.
        """
        return self._tel._concurrency_timeout

    def _release_slot(self) -> None:
        if self._slot:
            self._slot = False
            self._tel._slots.release()
        lease = self._lease
        if lease is not None:
            self._lease = None
            self._tel.tracker.release(lease)

    # -- the outcome ---------------------------------------------------------------------------------

    def _finish(self, exc: BaseException | None, outcome: Status | ErrorType | None = None) -> None:
        """Record the one outcome: ``outcome`` if given, else derived from ``exc``. Never raises."""
        if self._finished:
            return
        self._finished = True
        tel = self._tel
        try:
            self.duration_seconds = self.elapsed()
            if exc is None and outcome is None:
                self.status = self.status or Status.COMPLETE
            else:
                if outcome is None:
                    assert exc is not None
                    outcome = classify(exc, tel._error_classifier)
                if isinstance(outcome, Status):
                    self.status = outcome
                else:
                    self.status = None
                    self.error_type = outcome
        finally:
            self._release_slot()
        tel._recorder.finished(self)
        if tel._log_level is not None:
            tel._log_execution(self)

    # -- context manager protocol --------------------------------------------------------------------

    def __enter__(self) -> Execution:
        tel = self._tel
        current = tel._current
        parent = current.get()
        self._begin(parent)
        self._admit_sync(nested=parent is not None)
        self._token = current.set(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            self._tel._current.reset(self._token)
            self._token = None
        self._finish(exc)

    async def __aenter__(self) -> Execution:
        await self._admit_async()
        self._token = self._tel._current.set(self)
        limit = self._tel.tracker.limits.max_total_time
        usage = self.usage_at_start
        # The usage returned by admission: no second round trip to a shared store.
        remaining = None if limit is None or usage is None else max(limit - usage.elapsed_seconds, 0.0)
        if remaining is not None:
            try:
                loop = asyncio.get_running_loop()
                self._deadline_cm = asyncio.timeout_at(loop.time() + remaining)
                await self._deadline_cm.__aenter__()
            except BaseException as exc:
                self.__exit__(type(exc), exc, exc.__traceback__)
                raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        cm, self._deadline_cm = self._deadline_cm, None
        if cm is not None:
            try:
                await cm.__aexit__(exc_type, exc, tb)
            except TimeoutError as timeout:
                if cm.expired():
                    limit = self._tel.tracker.limits.max_total_time or 0.0
                    error = TimeLimitExceeded(self._tel.tracker.get_usage().elapsed_seconds, limit)
                    self._tel._recorder.quota_stopped(self, Resource.TIME_SECONDS)
                    self.__exit__(TimeLimitExceeded, error, None)
                    raise error from timeout
                raise  # pragma: no cover - asyncio.Timeout only raises TimeoutError when it expired
        lease = self._lease
        if lease is not None:  # Give the fleet slot back without blocking the loop.
            self._lease = None
            await self._tel.tracker.release_async(lease)
        self.__exit__(exc_type, exc, tb)


class SubagentMetrics(Execution):
    """Manual handle for callback-style frameworks: admitted when created, ended by the first
    ``record_completion``/``record_error``; one dropped without either is recorded as ``aborted``."""

    __slots__ = ("_lock",)

    def __init__(self, tel: SubagentTelemetry, name: str, depth: int | None, max_turns: int | None) -> None:
        super().__init__(tel, name, max_turns)
        self._lock = threading.Lock()
        if depth is not None and depth < 1:
            msg = f"depth must be >= 1, got {depth!r}"
            raise ValueError(msg)
        self._begin(tel._current.get(), depth)
        self._admit_sync(nested=self.parent is not None or self.depth > 1)

    def record_completion(
        self, turns: int = 0, tokens: int = 0, status: Status | str = Status.COMPLETE
    ) -> bool:
        """Record success; ``False`` (and nothing recorded) when an outcome was already recorded."""
        with self._lock:
            if self._finished:
                return False
            self.turns = max(int(turns), 0)
            self.output_tokens = max(int(tokens), 0)
            try:
                self._tel.tracker.record_execution(self.output_tokens, self._lease)
            except TokenLimitExceeded:
                # The execution is over; the next admission is refused instead.
                self._tel._recorder.quota_stopped(self, Resource.TOKENS)
            self._finish(None, _coerce(Status, status, Status.COMPLETE))
            return True

    def record_error(self, error_type: ErrorType | str = ErrorType.EXECUTION_FAILED) -> bool:
        """Record failure; ``False`` (and nothing recorded) when an outcome was already recorded."""
        with self._lock:
            if self._finished:
                return False
            self._finish(None, _coerce(ErrorType, error_type, ErrorType.EXECUTION_FAILED))
            return True

    def __del__(self) -> None:
        if not getattr(self, "_finished", True):
            self._finish(None, ErrorType.ABORTED)


#: ``str(depth)`` for every depth a config allows (1-10) and one past it.
_DEPTH_LABELS = tuple(str(depth) for depth in range(12))

_E = TypeVar("_E", Status, ErrorType)


def _coerce(enum: type[_E], value: _E | str, default: _E) -> _E:
    """A closed-vocabulary value; an unknown string is logged and replaced, never raised."""
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(e.value for e in enum)
        _log.warning("subagent_telemetry: %r is not one of %s; recorded as %s", value, allowed, default.value)
        return default

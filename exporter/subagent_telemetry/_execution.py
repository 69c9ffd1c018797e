"""Executions: the context manager (sync and async), the decorator and the manual handle.

An execution is admitted (depth, concurrency slot, session budget) when it starts, tracks turns, tokens
and output while it runs, and records exactly one outcome when it ends, whatever ends it. The public
surface (docs/api.md) is the same on both forms: ``record_turn``/``record_tokens``/``record_response``,
``finish``; the manual handle adds ``record_completion``/``record_error``.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import logging
import threading
from collections.abc import Callable
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Literal, NoReturn, TypeVar

from ._errors import (
    ConcurrencyLimitReached,
    CostLimitExceeded,
    DepthLimitExceeded,
    QuotaExceeded,
    SubagentInputError,
    TimeLimitExceeded,
    TokenLimitExceeded,
    TurnLimitExceeded,
)
from ._text import clean_name, is_clean_name, truncate_utf8
from ._vocab import ErrorType, Resource, Status
from .quota._prices import ModelRates
from .quota._tracker import MAX_TOKENS_PER_CALL, QuotaUsage, Reservation, token_count

if TYPE_CHECKING:
    from ._telemetry import SubagentTelemetry

__all__ = ["CURRENT", "ErrorClassifier", "Execution", "SubagentMetrics", "classify", "truncate_utf8"]

_log = logging.getLogger("subagent_telemetry")

#: Maps an exception that escaped an execution to its outcome; return None to use the default rules.
ErrorClassifier = Callable[[BaseException], ErrorType | Status | None]


class _Parent(enum.Enum):
    CURRENT = "current"


#: ``tel.start(parent=...)``'s default: the execution current in this context (``tel.current()``).
CURRENT = _Parent.CURRENT

#: How far ``classify`` follows ``__cause__``/``__context__`` (chains can be cyclic).
_CHAIN_LIMIT = 32


def classify(exc: BaseException, custom: ErrorClassifier | None = None) -> Status | ErrorType:
    """The outcome of an execution that ended with ``exc`` (documented in docs/metrics.md).

    A quota exception anywhere in the ``__cause__``/``__context__`` chain wins (frameworks wrap tool
    errors); then ``custom`` (a value outside the vocabulary, or an exception, falls through); then the
    default rules.
    """
    quota = _quota_in_chain(exc)
    if quota is not None:
        return Status.INCOMPLETE if isinstance(quota, TurnLimitExceeded) else quota.error_type
    if custom is not None:
        outcome = _custom_outcome(custom, exc)
        if outcome is not None:
            return outcome
    return _default_outcome(exc)


def _quota_in_chain(exc: BaseException | None) -> QuotaExceeded | None:
    for _ in range(_CHAIN_LIMIT):
        if exc is None or isinstance(exc, QuotaExceeded):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _custom_outcome(custom: ErrorClassifier, exc: BaseException) -> Status | ErrorType | None:
    try:
        value = custom(exc)
    except Exception:
        _log.warning("subagent_telemetry: error_classifier raised; using the default", exc_info=True)
        return None
    if value is None or isinstance(value, (ErrorType, Status)):
        return value
    for vocabulary in (ErrorType, Status):
        try:
            return vocabulary(value)
        except Exception:  # ValueError, or TypeError for unhashable values: try the next one.
            continue
    _log.warning(
        "subagent_telemetry: error_classifier returned %.100r, which is neither an ErrorType nor a "
        "Status; using the default classification",
        value,
    )
    return None


def _default_outcome(exc: BaseException) -> ErrorType:
    if isinstance(exc, asyncio.CancelledError):
        return ErrorType.CANCELLED
    if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
        return ErrorType.INTERRUPTED
    if isinstance(exc, TimeoutError):
        return ErrorType.TIMEOUT
    if isinstance(exc, SubagentInputError):
        return ErrorType.INVALID_INPUT
    return ErrorType.EXECUTION_FAILED


def live(run: Execution | None) -> Execution | None:
    """``run``, or its nearest ancestor that has not finished: a finished execution is never current."""
    while run is not None and run._finished:
        run = run.parent
    return run


class Execution:
    """One subagent execution. Use as ``with``/``async with``; one use per object."""

    # Class-level defaults: a new execution only stores what differs (this runs on every call).
    depth = 0
    depth_label = "0"
    parent: Execution | None = None
    #: The parent is the execution current where this one started (so its span is in the OTel context).
    parent_in_context = True
    turns = 0
    input_tokens = 0
    output_tokens = 0
    #: Every token recorded: input + output + totals recorded without a split (``total=``).
    tokens = 0
    #: The last model / provider name seen (``record_tokens(model=...)``); never a metric label.
    model: str | None = None
    provider: str | None = None
    #: Parts of input_tokens / output_tokens, when the caller reports them (record_tokens keywords).
    cache_read_tokens = 0
    cache_write_tokens = 0
    reasoning_tokens = 0
    #: ``model`` bounded for the ``model`` label (set with the model; "" when the label is off).
    model_label = ""
    #: Money spent on priced responses, in the nano-units charged to the budget; the exact spend is
    #: ``cost_nanos * 10**9 + _atto_rest`` atto-units (the part below one nano-unit waits here).
    cost_nanos = 0
    _atto_rest = 0
    #: Tokens of responses of a model with no price.
    unpriced_tokens = 0
    #: The model's flat rates once resolved (None: the full path): input, output, per response,
    #: in_atto (False: the rates are whole nano-units, most prices; True: atto-units), then the
    #: cache_read, cache_write and reasoning rates net of their parent's.
    _flat: tuple[int, int, int, bool, int, int, int] | None = None
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
        elif type(max_turns) is not int or max_turns < 1:
            msg = f"max_turns must be an int >= 1, got {max_turns!r}"
            raise ValueError(msg)
        self._tel = tel
        # Sanitized (every exporter encodes it as UTF-8) and mapped to its label once per distinct name.
        entry = tel._names.get(name)
        if entry is None:
            entry = tel._name_cache.lookup(name)
        self.name, self.agent = entry
        self.max_turns = max_turns

    # -- the agent-facing API ------------------------------------------------------------------------

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

    def record_tokens(  # noqa: PLR0912 - the priced response is inlined on purpose (docs/benchmarks.md)
        self,
        input: int = 0,
        output: int = 0,
        *,
        total: int | None = None,
        model: str | None = None,
        provider: str | None = None,
        cache_read: int = 0,
        cache_write: int = 0,
        reasoning: int = 0,
    ) -> None:
        """Add token usage; raise ``TokenLimitExceeded`` once the session total passes its limit.

        ``total=`` records usage that has no input/output split (exclusive with ``input``/``output``).
        A call whose counts are not whole numbers, or add up to more than 10¹², is dropped with a
        warning (docs/api.md, "Token counts").

        With a model (this call's ``model=`` or one seen before) the usage is priced (docs/cost.md):
        ``cache_read``/``cache_write`` are the parts of ``input`` read from / written to the prompt
        cache, ``reasoning`` the part of ``output`` spent reasoning. The cost is charged to the money
        budget; ``CostLimitExceeded`` is raised once the session's spend passes ``max_total_cost``.
        """
        if (model is not None and model != self.model) or (
            provider is not None and provider != self.provider
        ):
            self._note_model(model, provider)
        tokens = input + output if type(input) is int and type(output) is int else -1
        plain = (
            0 <= tokens <= 1_000_000_000_000  # MAX_TOKENS_PER_CALL, a constant on this hot path
            and input >= 0 <= output
            and total is None
        )
        if plain:
            self.input_tokens += input
            self.output_tokens += output
        else:
            tokens = self._add_checked(input, output, total, None, None)  # Names noted above.
            if tokens < 0:
                return
        self.tokens += tokens
        cost_nanos = 0
        flat = self._flat
        if flat is not None and plain:
            # The common priced response, inlined: flat rates, exact integers.
            cost_nanos = input * flat[0] + output * flat[1] + flat[2]
            if cache_read or cache_write or reasoning:
                if (
                    type(cache_read) is int
                    and type(cache_write) is int
                    and type(reasoning) is int
                    and cache_read >= 0
                    and cache_write >= 0
                    and cache_read + cache_write <= input
                    and 0 <= reasoning <= output
                ):  # Whole parts within their totals (the common case), inlined.
                    if cache_read:
                        self.cache_read_tokens += cache_read
                        cost_nanos += cache_read * flat[4]
                    if cache_write:
                        self.cache_write_tokens += cache_write
                        cost_nanos += cache_write * flat[5]
                    if reasoning:
                        self.reasoning_tokens += reasoning
                        cost_nanos += reasoning * flat[6]
                else:
                    cost_nanos += self._parts_cost(flat, input, output, cache_read, cache_write, reasoning)
            if flat[3]:  # Rates finer than a nano-unit: carry the remainder to the next response.
                cost_nanos, self._atto_rest = divmod(self._atto_rest + cost_nanos, _ATTO_PER_NANO)
            self.cost_nanos += cost_nanos
        elif self.model is not None:  # Any other model response: resolve and price it in full.
            cost_nanos = self._price(
                tokens,
                input,
                output,
                total,
                cache_read=cache_read,
                cache_write=cache_write,
                reasoning=reasoning,
            )
            if cost_nanos < 0:
                self._refuse_unpriced(tokens)
        try:
            self._tel.tracker.record_execution(tokens, self._lease, cost_nanos)
        except TokenLimitExceeded:
            self._tel._recorder.quota_stopped(self, Resource.TOKENS)
            raise
        except CostLimitExceeded:
            self._tel._recorder.quota_stopped(self, Resource.COST)
            raise

    def record_response(
        self,
        input: int = 0,
        output: int = 0,
        *,
        total: int | None = None,
        model: str | None = None,
        provider: str | None = None,
        cache_read: int = 0,
        cache_write: int = 0,
        reasoning: int = 0,
    ) -> None:
        """One model response: its tokens (always counted, they were spent) and their cost, then one
        turn.

        Raises ``TokenLimitExceeded`` or ``TurnLimitExceeded`` as ``record_tokens``/``record_turn`` do
        (the turn limit wins when both are hit).
        """
        try:
            self.record_tokens(
                input,
                output,
                total=total,
                model=model,
                provider=provider,
                cache_read=cache_read,
                cache_write=cache_write,
                reasoning=reasoning,
            )
        finally:
            self.record_turn()

    def set_output(self, text: str) -> str:
        """Return ``text`` truncated to ``output_max_size`` bytes of UTF-8 (counted when cut).

        Lone surrogates (not encodable) are replaced by U+FFFD; the rest of the text is kept as is.
        Anything that is not a ``str`` (``None``, bytes) is returned as it is, with a warning.
        """
        if type(text) is not str and not isinstance(text, str):
            self._tel._warn_dropped(
                "output", "subagent_telemetry: set_output takes a str, got %.100r; returned as is", text
            )
            return text
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

    def finish(
        self,
        exc: BaseException | None = None,
        *,
        status: Status | str | None = None,
        error_type: ErrorType | str | None = None,
    ) -> bool:
        """End the execution now: with ``exc`` classified as ``with`` would, or the explicit outcome
        (``error_type`` wins over ``status``, both over ``exc``). Never raises; ``False`` when an
        outcome was already recorded (or the execution was never admitted)."""
        return self._finish(exc, _explicit_outcome(status, error_type))

    # -- recording helpers ---------------------------------------------------------------------------

    def _note_model(self, model: object, provider: object) -> None:
        if model is not None:
            self.model = model if is_clean_name(model) else clean_name(model)  # type: ignore[assignment]
            self.model_label = self._tel._model_label(self.model)  # type: ignore[arg-type]
        self._flat = None  # Prices are looked up again for the new model or provider.
        if provider is not None:
            self.provider = provider if is_clean_name(provider) else clean_name(provider)  # type: ignore[assignment]

    def _parts_cost(  # noqa: PLR0917 - hot path: positional arguments, no tuple built per response
        self,
        flat: tuple[int, int, int, bool, int, int, int],
        input: int,
        output: int,
        read: object,
        write: object,
        thought: object,
    ) -> int:
        """What cache reads/writes and reasoning add to a response at flat rates (counted on the
        execution); 0 and a warning when they are not whole numbers within input / output."""
        if not (
            type(read) is int
            and type(write) is int
            and type(thought) is int
            and read >= 0
            and write >= 0
            and read + write <= input
            and 0 <= thought <= output
        ):
            checked = self._checked_parts(input, output, read, write, thought)
            if checked is None:
                return 0
            read, write, thought = checked
        self.cache_read_tokens += read
        self.cache_write_tokens += write
        self.reasoning_tokens += thought
        return read * flat[4] + write * flat[5] + thought * flat[6]

    def _checked_parts(
        self, input: int, output: int, read: object, write: object, thought: object
    ) -> tuple[int, int, int] | None:
        """(cache_read, cache_write, reasoning) as whole numbers within input / output; ``None`` and a
        warning (the response is priced without them) otherwise."""
        read_n, write_n, thought_n = token_count(read), token_count(write), token_count(thought)
        if (
            read_n is not None
            and write_n is not None
            and thought_n is not None
            and read_n + write_n <= input
            and thought_n <= output
        ):
            return read_n, write_n, thought_n
        self._drop(
            "cache_read=%r, cache_write=%r, reasoning=%r (parts of input=%r, output=%r); priced without",
            read,
            write,
            thought,
            input,
            output,
        )
        return None

    def _price(
        self,
        tokens: int,
        input: object,
        output: object,
        total: object,
        *,
        cache_read: object,
        cache_write: object,
        reasoning: object,
    ) -> int:
        """Price one response of ``self.model``: add its exact cost and return the nano-units to
        charge (the execution keeps the sub-nano remainder, so nothing is lost between responses);
        ``-1`` when it has no price and ``cost.unpriced`` is ``refuse``."""
        tel = self._tel
        rates = tel._prices.rates(self.model, self.provider)  # type: ignore[arg-type]
        if rates is not None:
            self._flat = _flat_rates(rates)  # The next plain responses take the inlined path.
        if rates is None or total is not None:  # No price, or no input/output split to price.
            self.unpriced_tokens += tokens
            return -1 if tel._refuse_unpriced else 0
        if type(input) is not int or type(output) is not int:  # Validated counts such as 100.0.
            input, output = token_count(input), token_count(output)
        if cache_read or cache_write or reasoning:
            parts = self._checked_parts(input, output, cache_read, cache_write, reasoning)  # type: ignore[arg-type]
            if parts is None:
                cache_read = cache_write = reasoning = 0
            else:
                cache_read, cache_write, reasoning = parts
                self.cache_read_tokens += cache_read
                self.cache_write_tokens += cache_write
                self.reasoning_tokens += reasoning
        atto = self._atto_rest + rates.cost_atto(input, output, cache_read, cache_write, reasoning)  # type: ignore[arg-type]
        nanos, self._atto_rest = divmod(atto, _ATTO_PER_NANO)
        self.cost_nanos += nanos
        return nanos

    def _refuse_unpriced(self, tokens: int) -> NoReturn:
        """``cost.unpriced: refuse``: the response's tokens were spent, so they are charged to the
        session (its token budget stays enforced), then the response is refused."""
        tel = self._tel
        try:
            tel.tracker.record_execution(tokens, self._lease)
        except TokenLimitExceeded:
            tel._recorder.quota_stopped(self, Resource.TOKENS)
            raise
        tel._recorder.quota_stopped(self, Resource.COST)
        limits = tel.tracker.limits
        used = Decimal(tel.tracker.get_usage().cost_nanos).scaleb(-9).normalize()
        raise CostLimitExceeded(
            used, limits.max_total_cost or Decimal(0), currency=limits.currency, model=self.model
        )

    def _add_checked(
        self, input: object, output: object, total: object, model: object, provider: object
    ) -> int:
        """The slow path of ``record_tokens``: names, validation, the counts added; the tokens to
        charge, or ``-1`` when the call is dropped."""
        if model is not None or provider is not None:
            self._note_model(model, provider)
        if total is not None:
            count = token_count(total)
            if count is None or input != 0 or output != 0:
                return self._drop("total=%r (with input=%r, output=%r)", total, input, output)
            return count
        input_count, output_count = token_count(input), token_count(output)
        if input_count is None or output_count is None or input_count + output_count > MAX_TOKENS_PER_CALL:
            return self._drop("input=%r, output=%r", input, output)
        self.input_tokens += input_count
        self.output_tokens += output_count
        return input_count + output_count

    def _drop(self, detail: str, *args: object) -> int:
        """Warn (at most once a minute per session) that a bad measurement was dropped; ``-1``."""
        self._tel._warn_dropped(
            "counts",
            "subagent_telemetry: counts dropped (not whole numbers from 0 to %d): " + detail,
            MAX_TOKENS_PER_CALL,
            *args,
        )
        return -1

    def _settle(self, turns: object, tokens: object) -> None:
        """Explicit totals from ``record_completion``/``record_error``: each raises what was recorded
        incrementally to that total; only tokens beyond those already charged reach the quota."""
        if turns is not None:
            count = token_count(turns)
            if count is None:
                self._drop("turns=%r", turns)
            elif count > self.turns:
                self.turns = count
        if tokens is not None:
            count = token_count(tokens)
            if count is None:
                self._drop("tokens=%r", tokens)
            elif count > self.tokens:
                extra = count - self.tokens
                self.tokens = count
                try:
                    self._tel.tracker.record_execution(extra, self._lease)
                except TokenLimitExceeded:  # The execution is over; the next admission is refused instead.
                    self._tel._recorder.quota_stopped(self, Resource.TOKENS)

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
            # Whatever the depth asked for, the label stays in the closed set 1 .. max_depth + 1.
            self.depth_label = _DEPTH_LABELS[max_depth + 1]
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
            self._admission_failed(error, nested=not wait)
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
            self._admission_failed(error, nested=not wait)
        self._started_at = self._tel._clock() or 1e-9
        self._tel._recorder.started(self)

    def _admission_failed(self, error: BaseException, nested: bool) -> NoReturn:
        self._release_slot()
        if nested and isinstance(error, ConcurrencyLimitReached):
            error = error.as_nested()
        if isinstance(error, QuotaExceeded):
            self._refuse(error)
        raise error

    def _refuse(self, error: QuotaExceeded) -> NoReturn:
        self._finished = True
        self.error_type = error.error_type
        self._tel._recorder.refused(self, error)
        raise error

    def _admit_sync(self, nested: bool) -> None:
        """Take a concurrency slot (only top-level admissions wait for one), then the budget."""
        slots = self._tel._slots
        if not slots.try_acquire() and (nested or not slots.acquire(self._wait_seconds())):
            self._refuse(ConcurrencyLimitReached(slots.in_use, slots.limit, nested=nested))
        self._slot = True
        self._reserve(wait=not nested)

    async def _admit_async(self, nested: bool) -> None:
        """``_admit_sync`` for asyncio code: waiting for a slot or the store never blocks the loop."""
        slots = self._tel._slots
        if not slots.try_acquire() and (nested or not await slots.acquire_async(self._wait_seconds())):
            self._refuse(ConcurrencyLimitReached(slots.in_use, slots.limit, nested=nested))
        self._slot = True
        await self._reserve_async(wait=not nested)

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

    def _finish(self, exc: BaseException | None, outcome: Status | ErrorType | None = None) -> bool:
        """Record the one outcome: ``outcome`` if given, else derived from ``exc``. Never raises.

        ``False`` when there is nothing to end: already ended, refused, or never admitted.
        """
        if self._finished or not self._started_at:
            return False
        self._finished = True
        tel = self._tel
        try:
            try:
                # elapsed() inlined (once per execution); an injected clock can go backwards.
                self.duration_seconds = max(tel._clock() - self._started_at, 0.0)
                if outcome is None:
                    if exc is None:
                        self.status = self.status or Status.COMPLETE
                    else:
                        outcome = classify(exc, tel._error_classifier)
            except Exception:  # finish(exc=<not an exception>), a raising clock: still one outcome.
                _log.warning("subagent_telemetry: cannot classify %.100r: execution_failed", exc)
                outcome = ErrorType.EXECUTION_FAILED
            if outcome is not None:
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
        return True

    # -- context manager protocol --------------------------------------------------------------------

    def __enter__(self) -> Execution:
        current = self._tel._current
        parent = current.get()
        if parent is not None and parent._finished:  # A stale pointer (out-of-order exits): skip it.
            parent = live(parent)
            self.parent_in_context = False
        self._begin(parent)
        self._admit_sync(nested=parent is not None)
        self._token = current.set(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        token = self._token
        if token is not None:
            self._token = None
            try:  # noqa: SIM105 - try is free on this hot path; contextlib.suppress allocates
                self._tel._current.reset(token)
            except (ValueError, RuntimeError):
                # Ended in another context (a generator finalized elsewhere, copy_context().run): that
                # context is left as it is; this execution is finished, so it is never current again.
                pass
        self._finish(exc)

    async def __aenter__(self) -> Execution:
        parent = self._tel._current.get()
        if parent is not None and parent._finished:
            parent = live(parent)
            self.parent_in_context = False
        self._begin(parent)
        await self._admit_async(nested=parent is not None)
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
            # Shielded: a cancellation arriving meanwhile ends this exit, never the release, and the
            # outcome is recorded below whatever happens to the await.
            release = asyncio.ensure_future(self._tel.tracker.release_async(lease))
            _RELEASING.add(release)
            release.add_done_callback(_RELEASING.discard)
            try:
                await asyncio.shield(release)
            finally:
                self.__exit__(exc_type, exc, tb)
            return
        self.__exit__(exc_type, exc, tb)


class SubagentMetrics(Execution):
    """Manual handle for callback-style frameworks (docs/api.md): admitted when created, ended by the
    first ``finish``/``record_completion``/``record_error``; one dropped without an outcome is recorded
    as ``aborted``, one that was never admitted records nothing."""

    __slots__ = ("_lock",)

    def __init__(
        self,
        tel: SubagentTelemetry,
        name: str = "subagent",
        depth: int | None = None,
        max_turns: int | None = None,
        *,
        parent: Execution | Literal[_Parent.CURRENT] | None = CURRENT,
        model: str | None = None,
        provider: str | None = None,
        _admit: bool = True,
    ) -> None:
        super().__init__(tel, name, max_turns)
        self._lock = threading.Lock()
        if depth is not None and (type(depth) is not int or depth < 1):
            msg = f"depth must be an int >= 1, got {depth!r}"
            raise ValueError(msg)
        if model is not None or provider is not None:
            self._note_model(model, provider)
        self._place(parent, depth)
        if _admit:
            self._admit_sync(nested=self._nested)

    def _place(self, parent: Execution | Literal[_Parent.CURRENT] | None, depth: int | None) -> None:
        current = self._tel._current.get()
        if parent is CURRENT:
            parent = live(current)
            self.parent_in_context = parent is current
        elif parent is not None:
            if not isinstance(parent, Execution):
                msg = f"parent must be an Execution, a SubagentMetrics handle or None, got {parent!r}"
                raise TypeError(msg)
            self.parent_in_context = parent is current
        self._begin(parent, depth)

    @property
    def _nested(self) -> bool:
        return self.parent is not None or self.depth > 1

    def finish(
        self,
        exc: BaseException | None = None,
        *,
        status: Status | str | None = None,
        error_type: ErrorType | str | None = None,
    ) -> bool:
        with self._lock:
            return self._finish(exc, _explicit_outcome(status, error_type))

    def record_completion(
        self, turns: int | None = None, tokens: int | None = None, status: Status | str = Status.COMPLETE
    ) -> bool:
        """Record success. Without counts it keeps what was recorded; ``turns``/``tokens`` are totals
        for callers that recorded nothing incrementally. ``False`` when an outcome was already recorded."""
        with self._lock:
            if self._finished or not self._started_at:
                return False
            self._settle(turns, tokens)
            return self._finish(None, _coerce(Status, status, Status.COMPLETE))

    def record_error(
        self,
        error_type: ErrorType | str = ErrorType.EXECUTION_FAILED,
        *,
        turns: int | None = None,
        tokens: int | None = None,
    ) -> bool:
        """Record failure (counts as in ``record_completion``); ``False`` when an outcome was already
        recorded."""
        with self._lock:
            if self._finished or not self._started_at:
                return False
            self._settle(turns, tokens)
            return self._finish(None, _coerce(ErrorType, error_type, ErrorType.EXECUTION_FAILED))

    def __del__(self) -> None:
        # A handle that was never admitted (validation failed, admission refused) has nothing to end.
        self._finish(None, ErrorType.ABORTED)


#: Lease releases running shielded from their task's cancellation (kept referenced until done).
_RELEASING: set[asyncio.Future[None]] = set()

_ATTO_PER_NANO = 10**9


def _flat_rates(rates: ModelRates) -> tuple[int, int, int, bool, int, int, int] | None:
    """What the inlined path multiplies: whole nano-units when every rate is one, else atto-units."""
    if rates.tiers or rates.expires is not None:
        return None
    base = rates.base
    flat = (base.input, base.output, base.per_response, base.cache_read, base.cache_write, base.reasoning)
    in_atto = any(rate % _ATTO_PER_NANO for rate in flat)
    if not in_atto:
        flat = tuple(rate // _ATTO_PER_NANO for rate in flat)  # type: ignore[assignment]
    return flat[0], flat[1], flat[2], in_atto, flat[3], flat[4], flat[5]


#: ``str(depth)`` for every depth a config allows (1-10) and one past it.
_DEPTH_LABELS = tuple(str(depth) for depth in range(12))

_E = TypeVar("_E", Status, ErrorType)


def _coerce(enum: type[_E], value: _E | str, default: _E) -> _E:
    """A closed-vocabulary value; an unknown string is logged and replaced, never raised."""
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(e.value for e in enum)
        _log.warning(
            "subagent_telemetry: %.100r is not one of %s; recorded as %s", value, allowed, default.value
        )
        return default


def _explicit_outcome(
    status: Status | str | None, error_type: ErrorType | str | None
) -> Status | ErrorType | None:
    if error_type is not None:
        return _coerce(ErrorType, error_type, ErrorType.EXECUTION_FAILED)
    if status is not None:
        return _coerce(Status, status, Status.COMPLETE)
    return None

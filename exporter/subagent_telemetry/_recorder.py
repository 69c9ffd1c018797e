"""The seam between executions and backends (Prometheus, OpenTelemetry).

Backends see a read-only view of a run and the moments of its life; they know nothing of quotas beyond
the values handed to them. ``Recorder`` fans out and guarantees recording never raises into agent code.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from ._errors import QuotaExceeded
from ._vocab import ErrorType, Resource, Status

_log = logging.getLogger("subagent_telemetry")


class RunView(Protocol):
    """What a backend may read about one execution (``trace_id``/``backend_state`` it may also set)."""

    trace_id: str | None
    #: Backend-private slot (the OpenTelemetry backend keeps the span here).
    backend_state: object

    @property
    def name(self) -> str: ...
    @property
    def agent(self) -> str: ...
    @property
    def depth(self) -> int: ...
    @property
    def depth_label(self) -> str: ...
    @property
    def turns(self) -> int: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def tokens(self) -> int:
        """Every token recorded: input + output + totals recorded without a split."""

    @property
    def model(self) -> str | None: ...
    @property
    def provider(self) -> str | None: ...
    @property
    def status(self) -> Status | None: ...
    @property
    def error_type(self) -> ErrorType | None: ...
    @property
    def duration_seconds(self) -> float: ...
    @property
    def parent(self) -> RunView | None: ...
    @property
    def parent_in_context(self) -> bool:
        """The parent was current where this run started (its span is in the ambient OTel context)."""

    @property
    def model_label(self) -> str:
        """``model`` bounded for the ``model`` label (``""`` when ``telemetry.model_label`` is off)."""

    @property
    def cost_nanos(self) -> int:
        """Money spent on priced responses, in nano-units of ``cost.currency`` (exact)."""

    @property
    def unpriced_tokens(self) -> int:
        """Tokens of responses of a model with no price."""

    @property
    def cache_read_tokens(self) -> int:
        """Input tokens read from the prompt cache (part of ``input_tokens``)."""

    @property
    def cache_write_tokens(self) -> int:
        """Input tokens written to the prompt cache (part of ``input_tokens``)."""

    @property
    def reasoning_tokens(self) -> int:
        """Reasoning tokens (part of ``output_tokens``)."""


class Backend(Protocol):
    """What every backend implements. A backend may also implement ``activate(run) -> token`` and
    ``deactivate(token)``: called when ``tel.use(run)`` makes ``run`` current for a block."""

    def started(self, run: RunView) -> None:
        """An execution was admitted and is running."""

    def refused(self, run: RunView, error: QuotaExceeded) -> None:
        """Admission was refused; ``run`` never ran (its status/error_type are set)."""

    def quota_stopped(self, run: RunView, resource: Resource) -> None:
        """A running execution hit a session budget (tokens or time)."""

    def turn_limit(self, run: RunView) -> None:
        """A running execution asked for a turn past its limit."""

    def truncated(self, run: RunView, size_bytes: int, limit_bytes: int) -> None:
        """Output was cut to ``limit_bytes``."""

    def finished(self, run: RunView) -> None:
        """The execution ended; exactly one of status / error_type is set."""

    def shutdown(self, timeout_seconds: float) -> None:
        """Flush and release resources."""


class RateLimitedLog:
    """Logs a warning at most once per ``interval_seconds`` per key (with the current traceback)."""

    def __init__(self, interval_seconds: float = 60.0, *, with_traceback: bool = True) -> None:
        self._interval = interval_seconds
        self._traceback = with_traceback
        self._last: dict[str, float] = {}

    def __call__(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -self._interval) >= self._interval:
            self._last[key] = now
            _log.warning(message, *args, exc_info=self._traceback)


class Recorder:
    """Fans each event out to every backend; a failing backend is logged (rate-limited) and skipped."""

    __slots__ = ("_activators", "_backends", "_warn")

    def __init__(self, backends: list[Backend]) -> None:
        self._backends = tuple(backends)
        self._activators = tuple(b for b in backends if hasattr(b, "activate"))
        self._warn = RateLimitedLog()

    @property
    def backends(self) -> tuple[Backend, ...]:
        return self._backends

    def started(self, run: RunView) -> None:
        for backend in self._backends:
            try:
                backend.started(run)
            except Exception:
                self._warn("started", "subagent_telemetry: %s failed to record a start", backend)

    def refused(self, run: RunView, error: QuotaExceeded) -> None:
        for backend in self._backends:
            try:
                backend.refused(run, error)
            except Exception:
                self._warn("refused", "subagent_telemetry: %s failed to record a refusal", backend)

    def quota_stopped(self, run: RunView, resource: Resource) -> None:
        for backend in self._backends:
            try:
                backend.quota_stopped(run, resource)
            except Exception:
                self._warn("quota", "subagent_telemetry: %s failed to record a quota stop", backend)

    def turn_limit(self, run: RunView) -> None:
        for backend in self._backends:
            try:
                backend.turn_limit(run)
            except Exception:
                self._warn("turns", "subagent_telemetry: %s failed to record a turn limit", backend)

    def truncated(self, run: RunView, size_bytes: int, limit_bytes: int) -> None:
        for backend in self._backends:
            try:
                backend.truncated(run, size_bytes, limit_bytes)
            except Exception:
                self._warn("truncated", "subagent_telemetry: %s failed to record a truncation", backend)

    def finished(self, run: RunView) -> None:
        for backend in self._backends:
            try:
                backend.finished(run)
            except Exception:
                self._warn("finished", "subagent_telemetry: %s failed to record an outcome", backend)

    def activate(self, run: RunView) -> list[tuple[Any, object]]:
        """``run`` becomes current for a block (``tel.use``); returns what ``deactivate`` undoes."""
        undo: list[tuple[Any, object]] = []
        for backend in self._activators:
            try:
                undo.append((backend, backend.activate(run)))
            except Exception:
                self._warn("activate", "subagent_telemetry: %s failed to make a run current", backend)
        return undo

    def deactivate(self, undo: list[tuple[Any, object]]) -> None:
        for backend, token in undo:
            try:
                backend.deactivate(token)
            except Exception:
                self._warn("activate", "subagent_telemetry: %s failed to restore the context", backend)

    def shutdown(self, timeout_seconds: float) -> None:
        for backend in self._backends:
            try:
                backend.shutdown(timeout_seconds)
            except Exception:
                self._warn("shutdown", "subagent_telemetry: %s failed to shut down", backend)

"""Rate-limits the OpenTelemetry SDK's export-failure logs.

With the collector down the SDK logs on every export attempt and retry; an agent that runs for days
would fill its log with the same line. Each distinct message passes at most once per interval.
"""

from __future__ import annotations

import logging
import threading
import time

_PREFIXES = ("opentelemetry.exporter", "opentelemetry.sdk")


class RateLimitFilter(logging.Filter):
    """Passes each (logger, message template) at most once per ``interval_seconds``."""

    def __init__(self, interval_seconds: float = 60.0) -> None:
        super().__init__()
        self.interval_seconds = interval_seconds
        self._last: dict[tuple[str, object], float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.msg)
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_seconds:
                return False
            self._last[key] = now
        return True

    def reset(self) -> None:
        """Forget what was logged (tests start from a clean state)."""
        with self._lock:
            self._last.clear()


_FILTER = RateLimitFilter()


def install_rate_limit(log_filter: RateLimitFilter = _FILTER) -> None:
    """Attach the filter to every OpenTelemetry exporter/SDK logger created so far (idempotent)."""
    names = [n for n in logging.Logger.manager.loggerDict if n.startswith(_PREFIXES)]
    for name in names:
        logger = logging.getLogger(name)
        if log_filter not in logger.filters:
            logger.addFilter(log_filter)


def reset_rate_limit() -> None:
    """Let every message through once more (the filter is process-wide)."""
    _FILTER.reset()

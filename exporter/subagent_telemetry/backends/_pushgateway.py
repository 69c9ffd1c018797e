"""Batch runs: push the run's metrics to a Prometheus Pushgateway when it ends.

The grouping key is stable (``job`` plus the labels you configure; never a run id or a pid), and the
push replaces the whole group (PUT), so no series of an earlier run lingers (an agent label or a quota
limit this run does not have). A failed run carries the group's
``subagent_batch_last_success_timestamp_seconds`` over (read back from the gateway first), so it
survives; only when that read fails does the push fall back to ``pushadd`` (POST), which keeps it.
``timeout_seconds`` bounds the whole push, reads included: at the deadline its sockets are shut down.
Counters restart with every run; for counts cumulated across runs, export over OTLP instead.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, push_to_gateway, pushadd_to_gateway
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import _catalog as cat
from ._push_http import PushDeadline, handler_within

if TYPE_CHECKING:
    from .._telemetry import SubagentTelemetry

_log = logging.getLogger("subagent_telemetry")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
#: Labels that change with every run would create one Pushgateway group per run, kept forever.
_PER_RUN_LABELS = frozenset({"pid", "run_id", "run", "instance_id", "hostname_pid"})


class _Union(Collector):
    """The telemetry's registry plus the batch gauges, as one thing to push."""

    def __init__(self, registry: CollectorRegistry, batch: Callable[[], Iterator[Metric]]) -> None:
        self._registry = registry
        self._batch = batch

    def collect(self) -> Iterator[Metric]:
        yield from self._registry.collect()
        yield from self._batch()


class BatchPush:
    """Pushes ``tel``'s metrics and the last-run gauges once, when the run ends.

    Use ``with push_on_exit(...)``: the run fails when an exception escapes. Without ``with``, the push
    happens at interpreter exit and counts as failed after an uncaught exception or ``mark_failed()``.
    """

    def __init__(
        self,
        tel: SubagentTelemetry,
        gateway_url: str,
        job: str,
        grouping_key: Mapping[str, str] | None = None,
        *,
        timeout_seconds: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        key = dict(grouping_key or {})
        for name in key:
            if not _LABEL_RE.match(name) or name == "job":
                msg = f"grouping key label {name!r} is not a Prometheus label name other than job"
                raise ValueError(msg)
            if name in _PER_RUN_LABELS:
                msg = f"grouping key label {name!r} changes every run; each run would leave a new group"
                raise ValueError(msg)
        if not job:
            msg = "job must not be empty"
            raise ValueError(msg)
        if not 0 < timeout_seconds < math.inf:
            msg = f"timeout_seconds must be a finite number of seconds above 0, not {timeout_seconds!r}"
            raise ValueError(msg)
        self.gateway_url = gateway_url
        self.job = job
        self.grouping_key = key
        self._tel = tel
        self.timeout_seconds = timeout_seconds
        self._clock = clock
        self._started = clock()
        self._failed = False
        self._pushed = False
        self._lock = threading.Lock()

    def mark_failed(self) -> None:
        """The run failed: the next push leaves the last-success timestamp as it was."""
        self._failed = True

    def push(self, success: bool | None = None) -> bool:
        """Push now (once); ``False`` (logged, never raised) when the Pushgateway did not take it.

        Never takes longer than ``timeout_seconds`` in all.
        """
        with self._lock:
            if self._pushed:
                return True
            self._pushed = True
        ok = (not self._failed) if success is None else success
        ended = self._clock()
        deadline = PushDeadline(self.timeout_seconds)
        try:
            return self._push(ok, ended, deadline)
        finally:
            deadline.cancel()

    def _push(self, ok: bool, ended: float, deadline: PushDeadline) -> bool:
        replace = True
        last_success: float | None = ended if ok else None
        if not ok:
            try:
                last_success = self._last_success(deadline)
            except Exception as error:  # Cannot tell: keep the group's value by adding, not replacing.
                _log.warning(
                    "subagent_telemetry: cannot read %s back (%s); adding to it", self.gateway_url, error
                )
                replace = False

        def batch() -> Iterator[Metric]:
            yield _gauge(cat.BATCH_LAST_RUN, ended)
            yield _gauge(cat.BATCH_LAST_DURATION, max(ended - self._started, 0.0))
            if last_success is not None:
                yield _gauge(cat.BATCH_LAST_SUCCESS, last_success)

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Union(self._tel.registry, batch))
        send = push_to_gateway if replace else pushadd_to_gateway
        try:
            send(self.gateway_url, self.job, registry, self.grouping_key, handler=handler_within(deadline))
        except Exception as error:
            _log.warning("subagent_telemetry: push to %s failed: %s", self.gateway_url, error)
            return False
        return True

    def _last_success(self, deadline: PushDeadline) -> float | None:
        """The group's last-success time on the gateway now; ``None`` when it has none."""
        base = self.gateway_url if "://" in self.gateway_url else f"http://{self.gateway_url}"
        body = deadline.open(urllib.request.Request(base.rstrip("/") + "/api/v1/metrics"))
        labels = {"job": self.job, **self.grouping_key}
        for group in json.loads(body)["data"]:
            if group.get("labels") == labels:
                family: dict[str, Any] = group.get(cat.BATCH_LAST_SUCCESS.name) or {}
                for sample in family.get("metrics", []):
                    return float(sample["value"])
        return None

    def __enter__(self) -> BatchPush:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.push(success=exc is None and not self._failed)


def _gauge(spec: cat.MetricSpec, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(spec.name, spec.help, value=value)


def push_on_exit(
    tel: SubagentTelemetry,
    gateway_url: str,
    job: str,
    grouping_key: Mapping[str, str] | None = None,
    *,
    timeout_seconds: float = 10.0,
) -> BatchPush:
    """Push ``tel``'s metrics to ``gateway_url`` under ``job`` + ``grouping_key`` when the run ends.

    Also registered at interpreter exit, so a run that never leaves a ``with`` block still pushes, and
    on SIGTERM (called from the main thread): the run is pushed as failed, then the handler the program
    had installed runs, or, with none, the process ends by SIGTERM as it would have.
    """
    import atexit  # noqa: PLC0415 - only batch jobs register the hook

    batch = BatchPush(tel, gateway_url, job, grouping_key, timeout_seconds=timeout_seconds)
    previous = sys.excepthook

    def excepthook(*args: object) -> None:
        batch.mark_failed()
        previous(*args)  # type: ignore[arg-type]

    sys.excepthook = excepthook
    atexit.register(batch.push)
    _push_on_sigterm(batch)
    return batch


def _push_on_sigterm(batch: BatchPush) -> None:
    if threading.current_thread() is not threading.main_thread():
        _log.debug("subagent_telemetry: push_on_exit outside the main thread; no SIGTERM push")
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_IGN:  # The program outlives SIGTERM: its exit pushes.
        return

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        batch.mark_failed()
        # In a thread: the interrupted code may hold a lock that collecting the metrics needs.
        pusher = threading.Thread(target=batch.push, name="subagent-telemetry-sigterm-push", daemon=True)
        pusher.start()
        pusher.join(batch.timeout_seconds + 1.0)
        if callable(previous):
            previous(signum, frame)
            return
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, on_sigterm)

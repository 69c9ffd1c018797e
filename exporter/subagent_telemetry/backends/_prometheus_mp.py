"""Prometheus backend for multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``): prometheus_client's own
metric objects, whose values live in memory-mapped files that the scraping process merges.

Slower per observation than the in-process collector of ``_prometheus.py`` (a lock and a file-backed
value per call), which is the price of sharing values across pre-fork workers (docs/fleet.md).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .. import _catalog as cat
from .._errors import QuotaExceeded
from .._recorder import RunView
from .._vocab import REJECTION_RESOURCES, ErrorType, Resource, Status


class _Children:
    """Bound label children for one (depth, agent)."""

    __slots__ = (
        "active",
        "completions",
        "duration",
        "errors",
        "executions",
        "tokens",
        "truncations",
        "turns",
    )

    def __init__(self, m: _Metrics, values: tuple[str, ...]) -> None:
        self.executions = m.executions.labels(*values)
        self.active = m.active.labels(*values)
        self.turns = m.turns.labels(*values)
        self.tokens = m.tokens.labels(*values)
        self.truncations = m.truncations.labels(*values)
        self.duration = {s: m.duration.labels(values[0], s.value, *values[1:]) for s in Status}
        self.completions = {s: m.completions.labels(values[0], s.value, *values[1:]) for s in Status}
        self.errors = {e: m.errors.labels(values[0], e.value, *values[1:]) for e in ErrorType}


def _labelnames(spec: cat.MetricSpec, with_agent: bool, with_model: bool = False) -> tuple[str, ...]:
    names = (*spec.labels, cat.AGENT_LABEL) if with_agent and spec in cat.PER_EXECUTION else spec.labels
    return (*names, cat.MODEL_LABEL) if with_model and spec in cat.PER_MODEL else names


class _Metrics:
    def __init__(self, registry: CollectorRegistry, with_agent: bool, with_model: bool = False) -> None:
        multiproc = "PROMETHEUS_MULTIPROC_DIR" in os.environ

        def make(spec: cat.MetricSpec) -> Any:
            names = _labelnames(spec, with_agent, with_model)
            kwargs: dict[str, Any] = {"registry": registry, "unit": spec.unit}
            if spec.kind is cat.Kind.COUNTER:
                return Counter(spec.base_name, spec.help, names, **kwargs)
            if spec.kind is cat.Kind.HISTOGRAM:
                return Histogram(spec.base_name, spec.help, names, buckets=spec.buckets, **kwargs)
            if multiproc and spec.multiprocess_mode:
                kwargs["multiprocess_mode"] = spec.multiprocess_mode
            return Gauge(spec.base_name, spec.help, names, **kwargs)

        self.executions = make(cat.EXECUTIONS)
        self.active = make(cat.ACTIVE)
        self.duration = make(cat.DURATION)
        self.turns = make(cat.TURNS)
        self.tokens = make(cat.TOKENS)
        self.completions = make(cat.COMPLETIONS)
        self.errors = make(cat.ERRORS)
        self.truncations = make(cat.OUTPUT_TRUNCATIONS)
        self.cost = make(cat.COST)
        self.cost_total = make(cat.COST_TOTAL)
        self.unpriced = make(cat.UNPRICED_TOKENS)
        self.rejections = make(cat.QUOTA_REJECTIONS)
        self.degraded = make(cat.QUOTA_STORE_DEGRADED)


class MultiprocessPrometheusBackend:
    """Records executions into prometheus_client metrics (multiprocess-capable) on the registry."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        max_depth: int,
        with_agent_label: bool = False,
        with_model_label: bool = False,
        exemplars: bool = False,
    ) -> None:
        self.registry = registry
        self._metrics = _Metrics(registry, with_agent_label, with_model_label)
        self._with_agent = with_agent_label
        self._with_model = with_model_label
        #: (cost histogram, cost counter, unpriced counter) children by (depth, agent, model).
        self._cost_children: dict[tuple[str, str, str], tuple[Any, Any, Any]] = {}
        self._exemplars = exemplars
        self._children: dict[tuple[str, str], _Children] = {}
        self._lock = threading.Lock()
        self._rejections: dict[Resource, Any] = {
            r: self._metrics.rejections.labels(r.value) for r in REJECTION_RESOURCES
        }
        if not with_agent_label:  # Every series exists from the start: rates work on fresh systems.
            for depth in range(1, max_depth + 1):
                self._bound(str(depth), "")
                if not with_model_label:
                    self._cost_bound(str(depth), "", "")

    def _bound(self, depth: str, agent: str) -> _Children:
        key = (depth, agent)
        children = self._children.get(key)
        if children is None:
            with self._lock:
                children = self._children.get(key)
                if children is None:
                    values = (depth, agent) if self._with_agent else (depth,)
                    children = self._children[key] = _Children(self._metrics, values)
        return children

    def _cost_bound(self, depth: str, agent: str, model: str) -> tuple[Any, Any, Any]:
        key = (depth, agent, model)
        children = self._cost_children.get(key)
        if children is None:
            values = [depth]
            if self._with_agent:
                values.append(agent)
            if self._with_model:
                values.append(model)
            m = self._metrics
            children = (m.cost.labels(*values), m.cost_total.labels(*values), m.unpriced.labels(*values))
            with self._lock:
                children = self._cost_children.setdefault(key, children)
        return children

    def started(self, run: RunView) -> None:
        children = self._bound(run.depth_label, run.agent)
        children.executions.inc()
        children.active.inc()

    def refused(self, run: RunView, error: QuotaExceeded) -> None:
        children = self._bound(run.depth_label, run.agent)
        children.executions.inc()
        children.errors[error.error_type].inc()
        self._rejection(error.resource)

    def quota_stopped(self, run: RunView, resource: Resource) -> None:
        self._rejection(resource)

    def _rejection(self, resource: Resource) -> None:
        counter = self._rejections.get(resource)
        if counter is not None:  # Turns never refuse: no series (docs/metrics.md).
            counter.inc()

    def turn_limit(self, run: RunView) -> None:
        """Turn limits show as ``status="incomplete"`` when the execution ends."""

    def truncated(self, run: RunView, size_bytes: int, limit_bytes: int) -> None:
        self._bound(run.depth_label, run.agent).truncations.inc()

    def finished(self, run: RunView) -> None:
        children = self._bound(run.depth_label, run.agent)
        children.active.dec()
        tokens = run.tokens
        exemplar = {"trace_id": run.trace_id} if self._exemplars and run.trace_id else None
        children.turns.observe(run.turns)
        children.tokens.observe(tokens, exemplar)
        if run.model is not None:
            cost, total, unpriced = self._cost_bound(run.depth_label, run.agent, run.model_label)
            cost.observe(run.cost_nanos / 1e9, exemplar)
            total.inc(run.cost_nanos / 1e9)
            unpriced.inc(run.unpriced_tokens)
        status = run.status
        if status is not None:
            children.duration[status].observe(run.duration_seconds, exemplar)
            children.completions[status].inc()
        else:
            # Failed executions are timed under "incomplete": they did not complete.
            children.duration[Status.INCOMPLETE].observe(run.duration_seconds, exemplar)
            children.errors[run.error_type or ErrorType.EXECUTION_FAILED].inc()

    def store_degraded(self, policy: str, decision: str) -> None:
        """An admission decided without the shared quota store (see ``quota.failure_policy``)."""
        self._metrics.degraded.labels(policy, decision).inc()

    def shutdown(self, timeout_seconds: float) -> None:
        """Nothing to flush: Prometheus pulls."""

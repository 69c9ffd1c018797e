"""Prometheus backend: the catalog's metrics, kept as plain numbers and turned into metric families
when Prometheus collects.

The hot path is one dict lookup and one short critical section per event (start, finish): an execution
costs two lock round trips instead of one per counter and histogram as with prometheus_client's metric
objects. Quota gauges are computed at collection time too. In multiprocess mode the backend of
``_prometheus_mp.py`` is used instead (values must live in shared files there).
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

from .. import _catalog as cat
from .._errors import QuotaExceeded
from .._recorder import RunView
from .._vocab import BUDGET_RESOURCES, REJECTION_RESOURCES, ErrorType, Resource, Status
from ..quota._tracker import QuotaLimits, QuotaUsage

_log = logging.getLogger("subagent_telemetry")

_STATUSES = tuple(Status)
_ERROR_TYPES = tuple(ErrorType)


class _Histogram:
    """Bucket counts (non-cumulative until collected), sum and the last exemplar per bucket."""

    __slots__ = ("bounds", "counts", "exemplars", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.exemplars: dict[int, Exemplar] | None = None

    def observe(self, value: float, trace_id: str | None) -> None:
        index = bisect_left(self.bounds, value)  # Bucket upper bounds are inclusive (le).
        self.counts[index] += 1
        self.total += value
        if trace_id is not None:
            if self.exemplars is None:
                self.exemplars = {}
            self.exemplars[index] = Exemplar({"trace_id": trace_id}, value, time.time())

    def buckets(self) -> list[tuple[Any, ...]]:
        result: list[tuple[Any, ...]] = []
        cumulative = 0
        exemplars = self.exemplars or {}
        for index, bound in enumerate((*self.bounds, float("inf"))):
            cumulative += self.counts[index]
            exemplar = exemplars.get(index)
            le = floatToGoString(bound)  # type: ignore[no-untyped-call]
            result.append((le, cumulative, exemplar) if exemplar else (le, cumulative))
        return result


class _Cell:
    """Every per-execution value of one (depth, agent)."""

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

    def __init__(self) -> None:
        self.executions = 0
        self.active = 0
        self.truncations = 0
        self.completions = dict.fromkeys(_STATUSES, 0)
        self.errors = dict.fromkeys(_ERROR_TYPES, 0)
        self.duration = {s: _Histogram(cat.DURATION.buckets) for s in _STATUSES}
        self.turns = _Histogram(cat.TURNS.buckets)
        self.tokens = _Histogram(cat.TOKENS.buckets)


class _CostCell:
    """Money of one (depth, agent, model): spend per execution, total spend, unpriced tokens."""

    __slots__ = ("cost", "total_nanos", "unpriced")

    def __init__(self) -> None:
        self.cost = _Histogram(cat.COST.buckets)
        self.total_nanos = 0
        self.unpriced = 0


class _Unnamed(Collector):
    """A collector the registry knows no names of (``name[]`` cannot select it)."""

    def __init__(self, inner: Collector) -> None:
        self._inner = inner

    def collect(self) -> Iterable[Metric]:
        return self._inner.collect()


def register(registry: CollectorRegistry, collector: Collector) -> None:
    """Register ``collector`` under its names, so ``/metrics?name[]=…`` selects its metrics.

    A second telemetry on one registry repeats those names: it is registered unnamed, as collectors
    without ``describe()`` are, and a warning says the scrape will repeat the families.
    """
    try:
        registry.register(collector)
    except ValueError:
        _log.warning(
            "subagent_telemetry: this registry already holds subagent metrics of another "
            "SubagentTelemetry; its scrape repeats them. Give each SubagentTelemetry its own registry."
        )
        registry.register(_Unnamed(collector))


class QuotaCollector(Collector):
    """``subagent_quota_limit``/``subagent_quota_used``/``subagent_max_concurrency`` at scrape time."""

    def __init__(
        self,
        limits: Callable[[], QuotaLimits],
        usage: Callable[[], QuotaUsage],
        session: str,
        max_concurrency: int,
    ) -> None:
        self._limits = limits
        self._usage = usage
        self._session = session
        self._max_concurrency = max_concurrency

    def describe(self) -> Iterator[Metric]:
        """Names only (no store call), so ``/metrics?name[]=…`` can select these gauges."""
        return _described((cat.QUOTA_LIMIT, cat.QUOTA_USED, cat.MAX_CONCURRENCY))

    def collect(self) -> Iterator[Metric]:
        limits, usage = self._limits(), self._usage()
        limit = GaugeMetricFamily(cat.QUOTA_LIMIT.name, cat.QUOTA_LIMIT.help, labels=cat.QUOTA_LIMIT.labels)
        used = GaugeMetricFamily(cat.QUOTA_USED.name, cat.QUOTA_USED.help, labels=cat.QUOTA_USED.labels)
        for resource in BUDGET_RESOURCES:
            value = limits.limit_of(resource)
            if value is not None:  # Unlimited: no series, so ratios and alerts are absent.
                limit.add_metric([resource.value, self._session], value)
            used.add_metric([resource.value, self._session], usage.used_of(resource))
        yield limit
        yield used
        yield GaugeMetricFamily(
            cat.MAX_CONCURRENCY.name, cat.MAX_CONCURRENCY.help, value=self._max_concurrency
        )


class PrometheusBackend(Collector):
    """Records executions as plain numbers; registered on ``registry`` as a collector."""

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
        self._with_agent = with_agent_label
        self._with_model = with_model_label
        self._exemplars = exemplars
        self._lock = threading.Lock()
        self._cells: dict[tuple[str, str], _Cell] = {}
        #: Money by (depth, agent, model); only executions that recorded a model response.
        self._costs: dict[tuple[str, str, str], _CostCell] = {}
        self._rejections: dict[Resource, int] = dict.fromkeys(REJECTION_RESOURCES, 0)
        self._degraded: dict[tuple[str, str], int] = {}
        if not with_agent_label:  # Every series exists from the start: rates work on fresh systems.
            for depth in range(1, max_depth + 1):
                self._cells[(str(depth), "")] = _Cell()
                if not with_model_label:
                    self._costs[(str(depth), "", "")] = _CostCell()
        register(registry, self)

    def _cell(self, run: RunView) -> _Cell:
        cell = self._cells.get((run.depth_label, run.agent))
        return cell if cell is not None else self._new_cell(run)

    def _new_cell(self, run: RunView) -> _Cell:
        with self._lock:
            return self._cells.setdefault((run.depth_label, run.agent), _Cell())

    # -- Backend -------------------------------------------------------------------------------------

    def started(self, run: RunView) -> None:
        cell = self._cells.get((run.depth_label, run.agent)) or self._new_cell(run)
        with self._lock:
            cell.executions += 1
            cell.active += 1

    def refused(self, run: RunView, error: QuotaExceeded) -> None:
        cell = self._cell(run)
        with self._lock:
            cell.executions += 1
            cell.errors[error.error_type] += 1
            if error.resource in self._rejections:
                self._rejections[error.resource] += 1

    def quota_stopped(self, run: RunView, resource: Resource) -> None:
        with self._lock:
            if resource in self._rejections:
                self._rejections[resource] += 1

    def turn_limit(self, run: RunView) -> None:
        """Turn limits show as ``status="incomplete"`` when the execution ends."""

    def truncated(self, run: RunView, size_bytes: int, limit_bytes: int) -> None:
        cell = self._cell(run)
        with self._lock:
            cell.truncations += 1

    def finished(self, run: RunView) -> None:
        cell = self._cells.get((run.depth_label, run.agent)) or self._new_cell(run)
        status = run.status
        # Failed executions are timed under "incomplete": they did not complete.
        duration_hist = cell.duration[status if status is not None else Status.INCOMPLETE]
        turns_hist, tokens_hist = cell.turns, cell.tokens
        duration, turns, tokens = run.duration_seconds, run.turns, run.tokens
        trace_id = run.trace_id if self._exemplars else None
        if run.model is not None:  # Model responses were recorded: the money metrics too.
            self._finished_cost(run, trace_id)
        with self._lock:  # One critical section: a scrape sees the whole outcome or none of it.
            cell.active -= 1
            if status is not None:
                cell.completions[status] += 1
            else:
                cell.errors[run.error_type or ErrorType.EXECUTION_FAILED] += 1
            if trace_id is None:  # The common case, inlined: this runs once per execution.
                turns_hist.counts[bisect_left(turns_hist.bounds, turns)] += 1
                turns_hist.total += turns
                tokens_hist.counts[bisect_left(tokens_hist.bounds, tokens)] += 1
                tokens_hist.total += tokens
                duration_hist.counts[bisect_left(duration_hist.bounds, duration)] += 1
                duration_hist.total += duration
            else:
                turns_hist.observe(turns, None)
                tokens_hist.observe(tokens, trace_id)
                duration_hist.observe(duration, trace_id)

    def _finished_cost(self, run: RunView, trace_id: str | None) -> None:
        key = (run.depth_label, run.agent, run.model_label)
        cell = self._costs.get(key)
        if cell is None:
            with self._lock:
                cell = self._costs.setdefault(key, _CostCell())
        nanos = run.cost_nanos
        with self._lock:
            cell.cost.observe(nanos / 1e9, trace_id)
            cell.total_nanos += nanos
            cell.unpriced += run.unpriced_tokens

    def store_degraded(self, policy: str, decision: str) -> None:
        """An admission decided without the shared quota store (see ``quota.failure_policy``)."""
        with self._lock:
            key = (policy, decision)
            self._degraded[key] = self._degraded.get(key, 0) + 1

    def shutdown(self, timeout_seconds: float) -> None:
        """Nothing to flush: Prometheus pulls."""

    # -- Collector -----------------------------------------------------------------------------------

    def describe(self) -> Iterator[Metric]:
        """Names only, so ``/metrics?name[]=…`` can select these metrics."""
        return _described((*cat.PER_EXECUTION, cat.QUOTA_REJECTIONS, cat.QUOTA_STORE_DEGRADED))

    def collect(self) -> Iterator[Metric]:
        agent = (cat.AGENT_LABEL,) if self._with_agent else ()
        fams = {
            spec.name: _family(spec, (*spec.labels, *agent))
            for spec in cat.PER_EXECUTION
            if spec not in cat.PER_MODEL
        }
        with self._lock:
            for (depth, agent_value), cell in sorted(self._cells.items()):
                extra = [agent_value] if self._with_agent else []
                fams[cat.EXECUTIONS.name].add_metric([depth, *extra], cell.executions)
                fams[cat.ACTIVE.name].add_metric([depth, *extra], cell.active)
                fams[cat.OUTPUT_TRUNCATIONS.name].add_metric([depth, *extra], cell.truncations)
                fams[cat.TURNS.name].add_metric([depth, *extra], cell.turns.buckets(), cell.turns.total)
                fams[cat.TOKENS.name].add_metric([depth, *extra], cell.tokens.buckets(), cell.tokens.total)
                for status in _STATUSES:
                    hist = cell.duration[status]
                    fams[cat.DURATION.name].add_metric(
                        [depth, status.value, *extra], hist.buckets(), hist.total
                    )
                    fams[cat.COMPLETIONS.name].add_metric(
                        [depth, status.value, *extra], cell.completions[status]
                    )
                for error_type in _ERROR_TYPES:
                    fams[cat.ERRORS.name].add_metric(
                        [depth, error_type.value, *extra], cell.errors[error_type]
                    )
            model = (cat.MODEL_LABEL,) if self._with_model else ()
            for spec in cat.PER_MODEL:
                fams[spec.name] = _family(spec, (*spec.labels, *agent, *model))
            for (depth, agent_value, model_value), cost in sorted(self._costs.items()):
                values = [depth]
                if self._with_agent:
                    values.append(agent_value)
                if self._with_model:
                    values.append(model_value)
                fams[cat.COST.name].add_metric(values, cost.cost.buckets(), cost.cost.total)
                fams[cat.COST_TOTAL.name].add_metric(values, cost.total_nanos / 1e9)
                fams[cat.UNPRICED_TOKENS.name].add_metric(values, cost.unpriced)
            rejections = _family(cat.QUOTA_REJECTIONS, cat.QUOTA_REJECTIONS.labels)
            for resource, count in self._rejections.items():
                rejections.add_metric([resource.value], count)
            degraded = _family(cat.QUOTA_STORE_DEGRADED, cat.QUOTA_STORE_DEGRADED.labels)
            for (policy, decision), count in sorted(self._degraded.items()):
                degraded.add_metric([policy, decision], count)
        yield from fams.values()
        yield rejections
        yield degraded


def _described(specs: tuple[cat.MetricSpec, ...]) -> Iterator[Metric]:
    """Empty families of ``specs``: a registry learns a collector's names from them."""
    return iter([_family(spec, ()) for spec in specs])


def _family(spec: cat.MetricSpec, labels: tuple[str, ...]) -> Any:
    if spec.kind is cat.Kind.COUNTER:
        return CounterMetricFamily(spec.base_name, spec.help, labels=labels, unit=spec.unit)
    if spec.kind is cat.Kind.HISTOGRAM:
        return HistogramMetricFamily(spec.name, spec.help, labels=labels, unit=spec.unit)
    return GaugeMetricFamily(spec.name, spec.help, labels=labels, unit=spec.unit)

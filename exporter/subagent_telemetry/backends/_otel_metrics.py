"""The catalog's metrics as OpenTelemetry instruments, with attribute sets resolved once.

Names and units come from the catalog's ``otel_name``/``otel_unit``, chosen so that the OTLP→Prometheus
translation yields the scrape path's names. Attributes are the scrape path's labels with the same
values (``depth`` as a string). Attribute dicts are built once per (depth, agent) and reused, so the
hot path does only what the SDK itself must do.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from .. import _catalog as cat
from .._vocab import BUDGET_RESOURCES, REJECTION_RESOURCES, ErrorType, Resource, Status
from ..quota._tracker import QuotaLimits, QuotaUsage

Attrs = dict[str, str]

#: GenAI semantic-convention bucket boundaries (gen_ai.client.token.usage / operation durations).
GENAI_TOKEN_BUCKETS: tuple[float, ...] = tuple(float(4**i) for i in range(14))
GENAI_DURATION_BUCKETS: tuple[float, ...] = tuple(0.01 * 2**i for i in range(14))


class BoundAttrs:
    """Attribute sets of one (depth, agent)."""

    __slots__ = ("base", "by_error", "by_status")

    def __init__(self, depth: str, agent: str | None) -> None:
        self.base: Attrs = {"depth": depth}
        if agent is not None:
            self.base[cat.AGENT_LABEL] = agent
        self.by_status = {s: {**self.base, "status": s.value} for s in Status}
        self.by_error = {e: {**self.base, "error_type": e.value} for e in ErrorType}


def _instrument(meter: Meter, spec: cat.MetricSpec) -> Any:
    if spec.kind is cat.Kind.COUNTER:
        return meter.create_counter(spec.otel_name, unit=spec.otel_unit, description=spec.help)
    if spec.kind is cat.Kind.HISTOGRAM:
        return meter.create_histogram(
            spec.otel_name,
            unit=spec.otel_unit,
            description=spec.help,
            explicit_bucket_boundaries_advisory=list(spec.buckets),
        )
    # The only non-observable gauge is the active count: a sum that goes up and down.
    return meter.create_up_down_counter(spec.otel_name, unit=spec.otel_unit, description=spec.help)


class OtelInstruments:
    """Synchronous instruments for the per-execution metrics, observable gauges for the quotas."""

    def __init__(
        self,
        meter: Meter,
        *,
        with_agent_label: bool,
        max_depth: int,
        with_model_label: bool = False,
        session: str,
        max_concurrency: int,
        usage: Callable[[], QuotaUsage],
        limits: Callable[[], QuotaLimits],
        genai_metrics: bool = False,
    ) -> None:
        self.executions = _instrument(meter, cat.EXECUTIONS)
        self.active = _instrument(meter, cat.ACTIVE)
        self.duration = _instrument(meter, cat.DURATION)
        self.turns = _instrument(meter, cat.TURNS)
        self.tokens = _instrument(meter, cat.TOKENS)
        self.completions = _instrument(meter, cat.COMPLETIONS)
        self.errors = _instrument(meter, cat.ERRORS)
        self.truncations = _instrument(meter, cat.OUTPUT_TRUNCATIONS)
        self.cost = _instrument(meter, cat.COST)
        self.cost_total = _instrument(meter, cat.COST_TOTAL)
        self.unpriced = _instrument(meter, cat.UNPRICED_TOKENS)
        self.rejections = _instrument(meter, cat.QUOTA_REJECTIONS)
        self.degraded = _instrument(meter, cat.QUOTA_STORE_DEGRADED)
        #: Attributes of a rejection per resource; none for turns, which never refuse (as on /metrics).
        self.resource_attrs: dict[Resource, Attrs] = {r: {"resource": r.value} for r in REJECTION_RESOURCES}
        self._with_agent = with_agent_label
        self._with_model = with_model_label
        self._bound: dict[tuple[str, str], BoundAttrs] = {}
        self._cost_attrs: dict[tuple[str, str, str], Attrs] = {}
        self._lock = threading.Lock()
        self._usage = usage
        self._limits = limits
        self._session = session
        self._max_concurrency = max_concurrency
        self._observable(meter, cat.QUOTA_LIMIT, self._observe_limits)
        self._observable(meter, cat.QUOTA_USED, self._observe_used)
        self._observable(meter, cat.MAX_CONCURRENCY, self._observe_max_concurrency)
        self.genai_tokens: Any = None
        self.genai_duration: Any = None
        if genai_metrics:
            self.genai_tokens = meter.create_histogram(
                "gen_ai.client.token.usage",
                unit="{token}",
                description="Number of input and output tokens used.",
                explicit_bucket_boundaries_advisory=list(GENAI_TOKEN_BUCKETS),
            )
            self.genai_duration = meter.create_histogram(
                "gen_ai.invoke_agent.duration",
                unit="s",
                description="Duration of an agent invocation.",
                explicit_bucket_boundaries_advisory=list(GENAI_DURATION_BUCKETS),
            )
        for attrs in self.resource_attrs.values():  # Zero series from the start, like the scrape path.
            self.rejections.add(0, attrs)
        if not with_agent_label:
            for depth in range(1, max_depth + 1):
                self._prime(self.bound(str(depth), ""))
                if not with_model_label:
                    self.cost_total.add(0, self.cost_attrs(str(depth), "", ""))
                    self.unpriced.add(0, self.cost_attrs(str(depth), "", ""))

    def _prime(self, attrs: BoundAttrs) -> None:
        self.executions.add(0, attrs.base)
        self.active.add(0, attrs.base)
        self.truncations.add(0, attrs.base)
        for status_attrs in attrs.by_status.values():
            self.completions.add(0, status_attrs)
        for error_attrs in attrs.by_error.values():
            self.errors.add(0, error_attrs)

    def rejected(self, resource: Resource) -> None:
        attrs = self.resource_attrs.get(resource)
        if attrs is not None:
            self.rejections.add(1, attrs)

    def bound(self, depth: str, agent: str) -> BoundAttrs:
        key = (depth, agent)
        attrs = self._bound.get(key)
        if attrs is None:
            with self._lock:
                attrs = self._bound.get(key)
                if attrs is None:
                    attrs = self._bound[key] = BoundAttrs(depth, agent if self._with_agent else None)
        return attrs

    def cost_attrs(self, depth: str, agent: str, model: str) -> Attrs:
        """Attributes of the money metrics: depth, agent and model when those labels are on."""
        key = (depth, agent, model)
        attrs = self._cost_attrs.get(key)
        if attrs is None:
            attrs = dict(self.bound(depth, agent).base)
            if self._with_model:
                attrs[cat.MODEL_LABEL] = model
            with self._lock:
                attrs = self._cost_attrs.setdefault(key, attrs)
        return attrs

    # -- observable gauges, read at collection time ---------------------------------------------------

    @staticmethod
    def _observable(
        meter: Meter, spec: cat.MetricSpec, callback: Callable[[CallbackOptions], Iterable[Observation]]
    ) -> None:
        meter.create_observable_gauge(
            spec.otel_name, callbacks=[callback], unit=spec.otel_unit, description=spec.help
        )

    def _observe_limits(self, options: CallbackOptions) -> Iterable[Observation]:
        limits = self._limits()
        for resource in BUDGET_RESOURCES:
            value = limits.limit_of(resource)
            if value is not None:  # Unlimited: no series, as on the scrape path.
                yield Observation(value, {"resource": resource.value, "session": self._session})

    def _observe_used(self, options: CallbackOptions) -> Iterable[Observation]:
        usage = self._usage()
        for resource in BUDGET_RESOURCES:
            yield Observation(usage.used_of(resource), {"resource": resource.value, "session": self._session})

    def _observe_max_concurrency(self, options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(self._max_concurrency)

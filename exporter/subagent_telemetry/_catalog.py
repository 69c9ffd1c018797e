"""The metric catalog: the single source of truth for every metric this package exports.

Prometheus instruments, OpenTelemetry instruments, the metrics reference, the alert and dashboard
queries and the scrape/OTLP parity tests all read this table. A metric that is not here does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


#: Seconds: sub-second tool calls up to the 600 s default time budget and beyond.
DURATION_BUCKETS: tuple[float, ...] = (
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0,
)  # fmt: skip
#: Turns: every value up to 5, then coarser up to the 100-turn ceiling of ``default_max_turns``.
TURN_BUCKETS: tuple[float, ...] = (1, 2, 3, 4, 5, 7, 10, 15, 20, 30, 50, 75, 100)
#: Tokens: log-scale (1-2.5-5 per decade) from 100 to 5 M.
TOKEN_BUCKETS: tuple[float, ...] = (
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000,
    100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
)  # fmt: skip
#: Money per execution (in ``cost.currency``): 1-2.5-5 per decade from a tenth of a cent to $50.
COST_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric as exported on every path.

    ``name`` is the Prometheus family name as it appears in PromQL (counters with ``_total``);
    ``otel_name``/``otel_unit`` are chosen so that the OTLP→Prometheus translation (Prometheus and
    VictoriaMetrics with Prometheus naming) yields ``name`` again. ``unit`` is the Prometheus unit
    metadata, only set where the name already ends with it (OpenMetrics requires the suffix).
    """

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...]
    otel_name: str
    otel_unit: str
    unit: str = ""
    buckets: tuple[float, ...] = ()
    #: How prometheus_client aggregates a gauge across processes in multiprocess mode.
    multiprocess_mode: str = ""

    @property
    def base_name(self) -> str:
        """The name prometheus_client expects (counters without the ``_total`` suffix)."""
        return self.name.removesuffix("_total") if self.kind is Kind.COUNTER else self.name

    @property
    def series_names(self) -> tuple[str, ...]:
        """Every series name this metric produces in the exposition."""
        if self.kind is Kind.HISTOGRAM:
            return tuple(f"{self.name}{s}" for s in ("_bucket", "_count", "_sum"))
        return (self.name,)


EXECUTIONS = MetricSpec(
    name="subagent_executions_total",
    kind=Kind.COUNTER,
    help="Subagent executions started, including those refused at admission.",
    labels=("depth",),
    otel_name="subagent.executions",
    otel_unit="{execution}",
)
ACTIVE = MetricSpec(
    name="subagent_active_count",
    kind=Kind.GAUGE,
    help="Subagent executions running now.",
    labels=("depth",),
    otel_name="subagent.active_count",
    otel_unit="{execution}",
    multiprocess_mode="livesum",
)
DURATION = MetricSpec(
    name="subagent_duration_seconds",
    kind=Kind.HISTOGRAM,
    help="Wall-clock duration of finished subagent executions.",
    labels=("depth", "status"),
    otel_name="subagent.duration",
    otel_unit="s",
    unit="seconds",
    buckets=DURATION_BUCKETS,
)
TURNS = MetricSpec(
    name="subagent_turns_used",
    kind=Kind.HISTOGRAM,
    help="Turns (model round trips) used by each finished subagent execution.",
    labels=("depth",),
    otel_name="subagent.turns_used",
    otel_unit="{turn}",
    buckets=TURN_BUCKETS,
)
TOKENS = MetricSpec(
    name="subagent_tokens_consumed",
    kind=Kind.HISTOGRAM,
    help="Tokens (input + output) consumed by each finished subagent execution.",
    labels=("depth",),
    otel_name="subagent.tokens_consumed",
    otel_unit="{token}",
    buckets=TOKEN_BUCKETS,
)
COMPLETIONS = MetricSpec(
    name="subagent_completions_total",
    kind=Kind.COUNTER,
    help="Subagent executions that finished without error, by status (complete or incomplete).",
    labels=("depth", "status"),
    otel_name="subagent.completions",
    otel_unit="{execution}",
)
ERRORS = MetricSpec(
    name="subagent_errors_total",
    kind=Kind.COUNTER,
    help="Subagent executions that failed or were refused, by error type.",
    labels=("depth", "error_type"),
    otel_name="subagent.errors",
    otel_unit="{execution}",
)
OUTPUT_TRUNCATIONS = MetricSpec(
    name="subagent_output_truncations_total",
    kind=Kind.COUNTER,
    help="Subagent outputs truncated to agent.subagent.output_max_size bytes.",
    labels=("depth",),
    otel_name="subagent.output_truncations",
    otel_unit="{output}",
)
COST = MetricSpec(
    name="subagent_execution_cost",
    kind=Kind.HISTOGRAM,
    help="Money (in cost.currency) spent by each finished subagent execution on priced model responses.",
    labels=("depth",),
    otel_name="subagent.execution_cost",
    otel_unit="{currency}",
    buckets=COST_BUCKETS,
)
COST_TOTAL = MetricSpec(
    name="subagent_cost_total",
    kind=Kind.COUNTER,
    help="Money (in cost.currency) spent by finished subagent executions on priced model responses.",
    labels=("depth",),
    otel_name="subagent.cost",
    otel_unit="{currency}",
)
UNPRICED_TOKENS = MetricSpec(
    name="subagent_unpriced_tokens_total",
    kind=Kind.COUNTER,
    help="Tokens of model responses with no known price (counted at no cost; see cost.unpriced).",
    labels=("depth",),
    otel_name="subagent.unpriced_tokens",
    otel_unit="{token}",
)
QUOTA_LIMIT = MetricSpec(
    name="subagent_quota_limit",
    kind=Kind.GAUGE,
    help="Configured session budget by resource (executions, tokens, time_seconds, cost); absent: unlimited.",
    labels=("resource", "session"),
    otel_name="subagent.quota_limit",
    otel_unit="{quota}",
    multiprocess_mode="max",
)
QUOTA_USED = MetricSpec(
    name="subagent_quota_used",
    kind=Kind.GAUGE,
    help="Session budget used so far per resource (executions, tokens, time_seconds, cost).",
    labels=("resource", "session"),
    otel_name="subagent.quota_used",
    otel_unit="{quota}",
    multiprocess_mode="max",
)
QUOTA_REJECTIONS = MetricSpec(
    name="subagent_quota_rejections_total",
    kind=Kind.COUNTER,
    help="Executions refused or stopped by a quota, by resource.",
    labels=("resource",),
    otel_name="subagent.quota_rejections",
    otel_unit="{execution}",
)
MAX_CONCURRENCY = MetricSpec(
    name="subagent_max_concurrency",
    kind=Kind.GAUGE,
    help="Configured maximum of concurrently running subagent executions.",
    labels=(),
    otel_name="subagent.max_concurrency",
    otel_unit="{execution}",
    multiprocess_mode="max",
)
QUOTA_STORE_DEGRADED = MetricSpec(
    name="subagent_quota_store_degraded_decisions_total",
    kind=Kind.COUNTER,
    help="Admissions decided without the shared quota store (unreachable), by failure policy and decision.",
    labels=("policy", "decision"),
    otel_name="subagent.quota_store.degraded_decisions",
    otel_unit="{decision}",
)

#: The quota gauges carry ``session`` (``quota.session``): with a shared store every process of a fleet
#: exports the same budget, so queries take ``max by (session, resource)``, never ``sum``. With the
#: in-memory store each process has its own budget and the same ``max`` shows the closest to exhaustion.

#: Every metric, in exposition order.
CATALOG: tuple[MetricSpec, ...] = (
    EXECUTIONS,
    ACTIVE,
    DURATION,
    TURNS,
    TOKENS,
    COMPLETIONS,
    ERRORS,
    OUTPUT_TRUNCATIONS,
    COST,
    COST_TOTAL,
    UNPRICED_TOKENS,
    QUOTA_LIMIT,
    QUOTA_USED,
    QUOTA_REJECTIONS,
    MAX_CONCURRENCY,
    QUOTA_STORE_DEGRADED,
)

#: Gauges of a batch run, only in what ``push_on_exit`` sends to a Pushgateway (never on /metrics).
BATCH_LAST_RUN = MetricSpec(
    name="subagent_batch_last_run_timestamp_seconds",
    kind=Kind.GAUGE,
    help="Unix time at which the last batch run ended (pushed on exit).",
    labels=(),
    otel_name="subagent.batch.last_run_timestamp",
    otel_unit="s",
    unit="seconds",
)
BATCH_LAST_SUCCESS = MetricSpec(
    name="subagent_batch_last_success_timestamp_seconds",
    kind=Kind.GAUGE,
    help="Unix time at which the last successful batch run ended (kept when a later run fails).",
    labels=(),
    otel_name="subagent.batch.last_success_timestamp",
    otel_unit="s",
    unit="seconds",
)
BATCH_LAST_DURATION = MetricSpec(
    name="subagent_batch_last_run_duration_seconds",
    kind=Kind.GAUGE,
    help="Wall-clock duration of the last batch run (pushed on exit).",
    labels=(),
    otel_name="subagent.batch.last_run_duration",
    otel_unit="s",
    unit="seconds",
)
BATCH_CATALOG: tuple[MetricSpec, ...] = (BATCH_LAST_RUN, BATCH_LAST_SUCCESS, BATCH_LAST_DURATION)

#: Label added to the per-execution metrics when ``telemetry.agent_label`` is enabled.
AGENT_LABEL = "agent"
#: Label added to the money metrics when ``telemetry.model_label`` is enabled (the execution's last model).
MODEL_LABEL = "model"
#: Catalog entries that take the optional agent label (per-execution metrics only).
PER_EXECUTION: tuple[MetricSpec, ...] = (
    EXECUTIONS,
    ACTIVE,
    DURATION,
    TURNS,
    TOKENS,
    COMPLETIONS,
    ERRORS,
    OUTPUT_TRUNCATIONS,
    COST,
    COST_TOTAL,
    UNPRICED_TOKENS,
)
#: Catalog entries that take the optional model label.
PER_MODEL: tuple[MetricSpec, ...] = (COST, COST_TOTAL, UNPRICED_TOKENS)


def by_name(name: str) -> MetricSpec:
    """The catalog entry owning a metric or series name (``_bucket``/``_sum``/``_count`` included)."""
    for spec in CATALOG:
        if name in spec.series_names:
            return spec
    msg = f"{name!r} is not a metric of the catalog"
    raise KeyError(msg)

"""One table of expected series, checked against every path: the scrape path, OTLP into VictoriaMetrics,
and the OpenTelemetry Prometheus exporter.

``run_reference_workload`` drives a fixed mix of outcomes; ``EXPECTED`` lists what it must produce, by the
catalog's Prometheus names and the exact label names and values dashboards and alerts select on.
``check`` runs the table through any ``lookup(name, labels) -> value | None``, so each path only has to
say how it finds one series (a registry sample, a PromQL query, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from subagent_telemetry import _catalog as cat
from subagent_telemetry._config import Config
from subagent_telemetry._errors import DepthLimitExceeded
from subagent_telemetry._telemetry import SubagentTelemetry

SESSION = "parity"
MAX_EXECUTIONS = 10
MAX_TOTAL_TOKENS = 1000
MAX_TOTAL_TIME = 3600
MAX_CONCURRENCY = 5
MAX_TOTAL_COST = 10
#: The priced model of the workload: $1000/M input and $2000/M output, so 100 + 50 tokens cost $0.2.
PRICED_MODEL = "parity-model"


def parity_config(**telemetry: object) -> Config:
    """Budgets with known limits; ``telemetry`` overrides (service name, otlp, prometheus)."""
    return Config.model_validate(
        {
            "agent": {
                "subagent": {
                    "max_depth": 3,
                    "max_executions": MAX_EXECUTIONS,
                    "max_total_tokens": MAX_TOTAL_TOKENS,
                    "max_total_time": MAX_TOTAL_TIME,
                    "max_concurrency": MAX_CONCURRENCY,
                    "output_max_size": 1024,
                    "max_total_cost": MAX_TOTAL_COST,
                }
            },
            "quota": {"session": SESSION},
            "cost": {"bundled_prices": False, "prices": {PRICED_MODEL: {"input": 1000, "output": 2000}}},
            "telemetry": {"log_executions": False, **telemetry},
        }
    )


def run_reference_workload(tel: SubagentTelemetry) -> None:
    """A 3-level tree (one truncation, one depth refusal), a failure and a partial result; the planner
    uses a priced model ($0.2), the worker one without a price (15 unpriced tokens)."""
    with tel.execution("planner") as planner:
        planner.record_turn()
        planner.record_tokens(input=100, output=50, model=PRICED_MODEL)
        with tel.execution("worker") as worker:
            worker.record_tokens(input=10, output=5, model="unpriced-model")
            worker.set_output("x" * 2000)
            with tel.execution("reviewer") as reviewer:
                reviewer.record_tokens(input=1, output=1)
                try:
                    with tel.execution("too-deep"):
                        pass
                except DepthLimitExceeded:
                    pass
    try:
        with tel.execution("failing"):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    with tel.execution("partial") as partial:
        partial.mark_incomplete()


@dataclass(frozen=True)
class Series:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    #: None: the series must exist, its value is not fixed (elapsed time).
    value: float | None = None

    def __str__(self) -> str:
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(self.labels.items()))
        return f"{self.name}{{{inner}}}"


def _d(depth: int, **labels: str) -> dict[str, str]:
    return {"depth": str(depth), **labels}


#: What ``run_reference_workload`` produces on every path (catalog names, scrape-path labels).
EXPECTED: tuple[Series, ...] = (
    Series(cat.EXECUTIONS.name, _d(1), 3),
    Series(cat.EXECUTIONS.name, _d(2), 1),
    Series(cat.EXECUTIONS.name, _d(3), 1),
    Series(cat.EXECUTIONS.name, _d(4), 1),
    Series(cat.ACTIVE.name, _d(1), 0),
    Series(cat.ACTIVE.name, _d(3), 0),
    Series(cat.COMPLETIONS.name, _d(1, status="complete"), 1),
    Series(cat.COMPLETIONS.name, _d(1, status="incomplete"), 1),
    Series(cat.COMPLETIONS.name, _d(2, status="complete"), 1),
    Series(cat.COMPLETIONS.name, _d(3, status="complete"), 1),
    Series(cat.COMPLETIONS.name, _d(2, status="incomplete"), 0),
    Series(cat.ERRORS.name, _d(1, error_type="execution_failed"), 1),
    Series(cat.ERRORS.name, _d(4, error_type="max_depth_reached"), 1),
    Series(cat.ERRORS.name, _d(1, error_type="quota_exceeded"), 0),
    Series(cat.OUTPUT_TRUNCATIONS.name, _d(2), 1),
    Series(cat.OUTPUT_TRUNCATIONS.name, _d(1), 0),
    Series(cat.QUOTA_REJECTIONS.name, {"resource": "depth"}, 1),
    Series(cat.QUOTA_REJECTIONS.name, {"resource": "tokens"}, 0),
    Series(f"{cat.DURATION.name}_count", _d(1, status="complete"), 1),
    Series(f"{cat.DURATION.name}_count", _d(1, status="incomplete"), 2),
    Series(f"{cat.DURATION.name}_bucket", _d(1, status="incomplete", le="+Inf"), 2),
    Series(f"{cat.DURATION.name}_sum", _d(2, status="complete")),
    Series(f"{cat.TURNS.name}_count", _d(1), 3),
    Series(f"{cat.TURNS.name}_sum", _d(1), 1),
    Series(f"{cat.TURNS.name}_bucket", _d(1, le="+Inf"), 3),
    Series(f"{cat.TOKENS.name}_sum", _d(1), 150),
    Series(f"{cat.TOKENS.name}_sum", _d(2), 15),
    Series(f"{cat.TOKENS.name}_sum", _d(3), 2),
    Series(f"{cat.TOKENS.name}_count", _d(3), 1),
    Series(f"{cat.TOKENS.name}_bucket", _d(1, le="+Inf"), 3),
    Series(cat.QUOTA_LIMIT.name, {"resource": "executions", "session": SESSION}, MAX_EXECUTIONS),
    Series(cat.QUOTA_LIMIT.name, {"resource": "tokens", "session": SESSION}, MAX_TOTAL_TOKENS),
    Series(cat.QUOTA_LIMIT.name, {"resource": "time_seconds", "session": SESSION}, MAX_TOTAL_TIME),
    Series(cat.QUOTA_USED.name, {"resource": "executions", "session": SESSION}, 5),
    Series(cat.QUOTA_USED.name, {"resource": "tokens", "session": SESSION}, 167),
    Series(cat.QUOTA_USED.name, {"resource": "time_seconds", "session": SESSION}),
    Series(cat.QUOTA_LIMIT.name, {"resource": "cost", "session": SESSION}, MAX_TOTAL_COST),
    Series(cat.QUOTA_USED.name, {"resource": "cost", "session": SESSION}, 0.2),
    Series(cat.COST_TOTAL.name, _d(1), 0.2),
    Series(cat.COST_TOTAL.name, _d(2), 0),
    Series(f"{cat.COST.name}_sum", _d(1), 0.2),
    Series(f"{cat.COST.name}_count", _d(1), 1),
    Series(f"{cat.COST.name}_count", _d(2), 1),
    Series(cat.UNPRICED_TOKENS.name, _d(2), 15),
    Series(cat.UNPRICED_TOKENS.name, _d(1), 0),
    Series(cat.MAX_CONCURRENCY.name, {}, MAX_CONCURRENCY),
)

#: Histogram bucket boundaries (``le`` as floats, ``+Inf`` included) per catalog histogram.
EXPECTED_BUCKETS: dict[str, tuple[float, ...]] = {
    spec.name: (*spec.buckets, float("inf")) for spec in cat.CATALOG if spec.kind is cat.Kind.HISTOGRAM
}

Lookup = Callable[[str, dict[str, str]], float | None]


def check(lookup: Lookup, expected: tuple[Series, ...] = EXPECTED) -> list[str]:
    """Every mismatch between ``expected`` and what ``lookup`` finds, as readable lines."""
    failures: list[str] = []
    for series in expected:
        found = lookup(series.name, series.labels)
        if found is None:
            failures.append(f"missing {series}")
        elif series.value is not None and found != series.value:
            failures.append(f"{series} = {found:g}, expected {series.value:g}")
    return failures


def all_series_names() -> set[str]:
    """Every series name of the catalog (what dashboards and alerts may select)."""
    return {name for spec in cat.CATALOG for name in spec.series_names}

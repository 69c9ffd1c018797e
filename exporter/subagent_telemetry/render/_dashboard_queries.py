"""The PromQL of every dashboard panel, built from the config and the metric catalog.

Conventions (checked by tests/test_dashboards.py):

- every expression carries the configured selector plus ``<job_label>=~"$job"`` and
  ``<instance_label>=~"$instance"`` (regex matchers, so the All value ``.+`` and multi-value
  selections ``(a|b)`` work);
- every range (``rate``, ``deriv``) is ``$__rate_interval``; counters are always ``sum by (...)``;
- quota gauges are combined with ``max by (session, resource)``, never summed: a fleet sharing a budget
  exports the same values from every process;
- metric names come from the catalog objects, never from string literals.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._catalog import (
    ACTIVE,
    AGENT_LABEL,
    COMPLETIONS,
    COST,
    COST_TOTAL,
    DURATION,
    ERRORS,
    EXECUTIONS,
    MAX_CONCURRENCY,
    MODEL_LABEL,
    OUTPUT_TRUNCATIONS,
    QUOTA_LIMIT,
    QUOTA_REJECTIONS,
    QUOTA_USED,
    TOKENS,
    TURNS,
    UNPRICED_TOKENS,
    MetricSpec,
)
from .._config import Config
from ._promql import by_clause, selector

RATE_INTERVAL = "$__rate_interval"
#: Quantiles drawn for each histogram.
QUANTILES: tuple[float, ...] = (0.5, 0.95, 0.99)


@dataclass(frozen=True)
class DashboardQueries:
    """PromQL for one config; ``keep`` are the labels every aggregation keeps (job + group_by)."""

    config: Config

    # -- building blocks -------------------------------------------------------------------------

    @property
    def job_label(self) -> str:
        return self.config.alerts.job_label

    @property
    def instance_label(self) -> str:
        return self.config.alerts.instance_label

    @property
    def keep(self) -> tuple[str, ...]:
        return (self.job_label, *self.config.alerts.group_by)

    @property
    def quota_keep(self) -> tuple[str, ...]:
        return (*self.config.alerts.group_by, "session", "resource")

    def sel(self, *extra: str) -> str:
        """``{configured matchers, job=~"$job", instance=~"$instance", extra...}``."""
        variables = (f'{self.job_label}=~"$job"', f'{self.instance_label}=~"$instance"')
        return "{" + selector(self.config.alerts.matchers, *variables, *extra) + "}"

    def variable_query(self, label: str, *extra: str) -> str:
        """``label_values`` over the always-present max_concurrency gauge (no per-execution labels)."""
        inner = selector(self.config.alerts.matchers, *extra)
        return f"label_values({MAX_CONCURRENCY.name}{{{inner}}}, {label})"

    def rate(self, metric: MetricSpec, by: tuple[str, ...] = (), *extra: str, series: str = "") -> str:
        """``sum by (keep..., by...) (rate(metric{sel}[$__rate_interval]))``."""
        name = metric.name + series
        return f"sum {by_clause((*self.keep, *by))} (rate({name}{self.sel(*extra)}[{RATE_INTERVAL}]))"

    def quantile(self, q: float, metric: MetricSpec, by: tuple[str, ...] = ()) -> str:
        return f"histogram_quantile({q}, {self.rate(metric, (*by, 'le'), series='_bucket')})"

    def buckets(self, metric: MetricSpec) -> str:
        """Bucket rates summed per ``le`` only, as a heatmap needs one series per bucket."""
        return f"sum by (le) (rate({metric.name}_bucket{self.sel()}[{RATE_INTERVAL}]))"

    def error_ratio(self, by: tuple[str, ...] = ()) -> str:
        """Errors / executions; 0 when nothing failed, no value when idle (never a division by zero)."""
        errors, executions = self.rate(ERRORS, by), self.rate(EXECUTIONS, by)
        return f"({errors} or 0 * {executions}) / ({executions} > 0)"

    def quota(self, metric: MetricSpec, *extra: str) -> str:
        return f"max {by_clause(self.quota_keep)} ({metric.name}{self.sel(*extra)})"

    # -- Overview ----------------------------------------------------------------------------------

    def execution_rate(self, by: tuple[str, ...] = ()) -> str:
        return self.rate(EXECUTIONS, by)

    def active(self, by: tuple[str, ...] = ()) -> str:
        return f"sum {by_clause((*self.keep, *by))} ({ACTIVE.name}{self.sel()})"

    def max_concurrency(self, by: tuple[str, ...] = ()) -> str:
        """Every process exports the configured limit: ``max``, never summed."""
        return f"max {by_clause((*self.keep, *by))} ({MAX_CONCURRENCY.name}{self.sel()})"

    @property
    def concurrency_by(self) -> tuple[str, ...]:
        """What max_concurrency applies to beyond ``keep``: the instance, or nothing for a shared store.

        A shared (Redis) store enforces max_concurrency across the fleet, so active executions are
        summed over the instances; the in-memory store gives each process its own limit.
        """
        return () if self.config.quota.shared else (self.instance_label,)

    def concurrency_alert_level(self) -> str:
        """max_concurrency plus the alert's headroom: where SubagentActiveOverMaxConcurrency starts."""
        headroom = self.config.alerts.active_over_max_concurrency.threshold
        return f"{self.max_concurrency(self.concurrency_by)} + {headroom:g}"

    def completions(self) -> str:
        return self.rate(COMPLETIONS, ("status",))

    def errors_by_type(self) -> str:
        return self.rate(ERRORS, ("error_type",))

    def truncations(self) -> str:
        return self.rate(OUTPUT_TRUNCATIONS, ("depth",))

    def duration_quantile(self, q: float, by: tuple[str, ...] = ()) -> str:
        return self.quantile(q, DURATION, by)

    def turns_quantile(self, q: float) -> str:
        return self.quantile(q, TURNS)

    def tokens_quantile(self, q: float) -> str:
        return self.quantile(q, TOKENS)

    def duration_buckets(self) -> str:
        return self.buckets(DURATION)

    def turns_buckets(self) -> str:
        return self.buckets(TURNS)

    def tokens_buckets(self) -> str:
        return self.buckets(TOKENS)

    # -- Quotas ------------------------------------------------------------------------------------

    def quota_used_ratio(self) -> str:
        return f"{self.quota(QUOTA_USED)} / ({self.quota(QUOTA_LIMIT)} > 0)"

    def quota_limit(self, *extra: str) -> str:
        return self.quota(QUOTA_LIMIT, *extra)

    def quota_used(self, *extra: str) -> str:
        return self.quota(QUOTA_USED, *extra)

    def quota_warning_level(self, *extra: str) -> str:
        """The limit times the quota_nearly_exhausted threshold: where the alert starts."""
        threshold = self.config.alerts.quota_nearly_exhausted.threshold
        return f"{threshold} * {self.quota(QUOTA_LIMIT, *extra)}"

    def quota_remaining(self) -> str:
        return f"clamp_min({self.quota(QUOTA_LIMIT)} - {self.quota(QUOTA_USED)}, 0)"

    def rejections(self) -> str:
        return self.rate(QUOTA_REJECTIONS, ("resource",))

    def time_to_exhaustion(self) -> str:
        """Remaining budget / current consumption rate (``deriv``, a linear fit of the used gauge).

        The window is ``$__rate_interval``, not the alert window: a budget restarts at every session
        (used drops to 0), and a long window across such a drop fits a meaningless slope. The ``> 0``
        leaves no value, rather than infinity, while nothing is consumed or right after a restart.
        """
        slope = f"max {by_clause(self.quota_keep)} (deriv({QUOTA_USED.name}{self.sel()}[{RATE_INTERVAL}]))"
        return f"{self.quota_remaining()} / ({slope} > 0)"

    # -- Cost --------------------------------------------------------------------------------------

    @property
    def model_by(self) -> tuple[str, ...]:
        """The ``model`` label when ``telemetry.model_label`` puts it on the money metrics."""
        return (MODEL_LABEL,) if self.config.telemetry.model_label.enabled else ()

    def spend_per_hour(self) -> str:
        """Money spent per hour (the rate of ``subagent_cost_total`` x 3600), by model when labelled."""
        return f"3600 * {self.rate(COST_TOTAL, self.model_by)}"

    def cost_per_execution_quantile(self, q: float) -> str:
        return self.quantile(q, COST, ("depth", *self.model_by))

    def cost_per_execution_average(self) -> str:
        """Mean money per execution by depth; no value while no model response finishes."""
        by = ("depth", *self.model_by)
        spent = self.rate(COST, by, series="_sum")
        count = self.rate(COST, by, series="_count")
        return f"{spent} / ({count} > 0)"

    def top_spenders(self, count: int = 5) -> str:
        """The agents spending most per hour (needs ``telemetry.agent_label``)."""
        return f"topk({count}, 3600 * {self.rate(COST_TOTAL, (AGENT_LABEL,))})"

    def unpriced_tokens(self) -> str:
        return self.rate(UNPRICED_TOKENS, self.model_by)

"""Per-depth figures read back from a test's registry, for the integration tests' assertions."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from tests.support.agent_metrics import total as _sum


@dataclass(frozen=True)
class Depth:
    """What the registry says about the executions at one depth."""

    executions: float
    completions: float
    incomplete: float
    errors: float
    turns: float
    tokens: float
    active: float


def at_depth(registry: CollectorRegistry, depth: int) -> Depth:
    label = str(depth)
    return Depth(
        executions=_sum(registry, "subagent_executions_total", depth=label),
        completions=_sum(registry, "subagent_completions_total", depth=label),
        incomplete=_sum(registry, "subagent_completions_total", depth=label, status="incomplete"),
        errors=_sum(registry, "subagent_errors_total", depth=label),
        turns=_sum(registry, "subagent_turns_used_sum", depth=label),
        tokens=_sum(registry, "subagent_tokens_consumed_sum", depth=label),
        active=_sum(registry, "subagent_active_count", depth=label),
    )


def errors(registry: CollectorRegistry, depth: int, error_type: str) -> float:
    return _sum(registry, "subagent_errors_total", depth=str(depth), error_type=error_type)


def rejections(registry: CollectorRegistry, resource: str | None = None) -> float:
    if resource is None:
        return _sum(registry, "subagent_quota_rejections_total")
    return _sum(registry, "subagent_quota_rejections_total", resource=resource)


def invariant_holds(registry: CollectorRegistry, max_depth: int = 6) -> bool:
    """``executions == completions + errors`` at every depth."""
    return all(
        (d := at_depth(registry, depth)).executions == d.completions + d.errors
        for depth in range(1, max_depth + 1)
    )

"""Reading what framework integrations recorded: per-depth sums from a test's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry


def total(registry: CollectorRegistry, name: str, **match: str) -> float:
    """Sum of every sample of ``name`` whose labels include ``match`` (whatever other labels it has)."""
    result = 0.0
    for family in registry.collect():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in match.items()):
                result += s.value
    return result


def per_depth(registry: CollectorRegistry, name: str, depths: int = 4, **match: str) -> list[float]:
    """``name`` summed at depth 1, 2, ... ``depths``."""
    return [total(registry, name, depth=str(d), **match) for d in range(1, depths + 1)]


def assert_invariant(registry: CollectorRegistry, depths: int = 5) -> None:
    """executions == completions + errors at every depth, and nothing is left active (no leaked slot)."""
    for d in range(1, depths + 1):
        depth = str(d)
        executions = total(registry, "subagent_executions_total", depth=depth)
        outcomes = total(registry, "subagent_completions_total", depth=depth) + total(
            registry, "subagent_errors_total", depth=depth
        )
        assert executions == outcomes, f"depth {depth}: {executions} executions, {outcomes} outcomes"
        assert total(registry, "subagent_active_count", depth=depth) == 0, f"depth {depth}: still active"

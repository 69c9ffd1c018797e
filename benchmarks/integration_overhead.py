"""Shared by the framework integration benchmarks: one agent run batch with and without the integration.

A framework's area module supplies ``batch(runs) -> seconds`` (the same agent on the same fake model)
and its integration module; this measures both sides interleaved and reports per model response.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from types import ModuleType

from prometheus_client import CollectorRegistry

from benchmarks.bench_core import Figure, bench_config
from subagent_telemetry import SubagentTelemetry


def per_response(
    framework: str,
    integration: ModuleType,
    batch: Callable[[int], float],
    *,
    responses: int,
    runs: int,
    repeats: int,
) -> list[Figure]:
    """µs per model response without and with ``integration.instrument(tel)``; the ratio and the added µs.

    Each run makes ``responses`` model responses. Asserts every response was recorded exactly once.
    """
    registry = CollectorRegistry()
    tel = SubagentTelemetry(bench_config(default_max_turns=100), registry=registry)
    warm_up = max(runs // 10, 1)  # Imports, schemas, label children: once on each side, not measured.
    batch(warm_up)
    integration.instrument(tel)
    batch(warm_up)
    integration.uninstrument()
    bare, instrumented = [], []
    for _ in range(repeats):
        bare.append(batch(runs))
        integration.instrument(tel)
        try:
            instrumented.append(batch(runs))
        finally:
            integration.uninstrument()
    expected = (runs * repeats + warm_up) * responses
    recorded = registry.get_sample_value("subagent_turns_used_sum", {"depth": "1"})
    assert recorded == expected, (recorded, expected)
    bare_us = statistics.median(bare) / (runs * responses) * 1e6
    inst_us = statistics.median(instrumented) / (runs * responses) * 1e6
    label = f"{responses} response{'s' if responses > 1 else ''} per run"
    return [
        Figure(f"{framework} alone, µs per response ({label})", bare_us, "µs"),
        Figure(f"instrumented, µs per response ({label})", inst_us, "µs"),
        Figure(f"added per response ({label})", inst_us - bare_us, "µs"),
        Figure(f"instrumented / {framework} alone ({label})", inst_us / bare_us, "x"),
    ]

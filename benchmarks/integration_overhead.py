"""Shared by the framework integration benchmarks: one agent run batch with and without the integration.

A framework's area module supplies ``batch(runs) -> seconds`` (the same agent on the same fake model)
and its integration module; this measures both sides interleaved and reports per model response.
"""

from __future__ import annotations

import gc
import statistics
from collections.abc import Callable
from typing import Protocol

from prometheus_client import CollectorRegistry

from benchmarks.bench_core import Figure, bench_config
from subagent_telemetry import SubagentTelemetry


class Instrumentor(Protocol):
    """An integration module (or a stand-in with the same two functions)."""

    def instrument(self, tel: SubagentTelemetry) -> None: ...

    def uninstrument(self) -> None: ...


def per_response(
    framework: str,
    integration: Instrumentor,
    batch: Callable[[int], float],
    *,
    responses: int,
    runs: int,
    repeats: int,
    variant: str = "instrumented",
) -> list[Figure]:
    """µs per model response without and with ``integration.instrument(tel)``; the ratio and the added µs.

    ``integration`` is anything with ``instrument(tel)``/``uninstrument()`` (the integration module, or a
    stand-in that switches ``batch`` to another form of the integration, named by ``variant``).

    Each run makes ``responses`` model responses. Asserts every response was recorded exactly once.
    """
    registry = CollectorRegistry()
    tel = SubagentTelemetry(bench_config(default_max_turns=100), registry=registry)
    warm_up = max(runs // 10, 1)  # Imports, schemas, label children: once on each side, not measured.
    batch(warm_up)
    integration.instrument(tel)
    batch(warm_up)
    integration.uninstrument()
    bare: list[float] = []
    instrumented: list[float] = []

    def timed_instrumented() -> None:
        integration.instrument(tel)
        try:
            instrumented.append(timed(batch, runs))
        finally:
            integration.uninstrument()

    for repeat in range(repeats):
        # The order alternates (ABBA...): the side measured second would otherwise always inherit the
        # first side's garbage and warm caches.
        if repeat % 2 == 0:
            bare.append(timed(batch, runs))
            timed_instrumented()
        else:
            timed_instrumented()
            bare.append(timed(batch, runs))
    expected = (runs * repeats + warm_up) * responses
    recorded = registry.get_sample_value("subagent_turns_used_sum", {"depth": "1"})
    assert recorded == expected, (recorded, expected)
    bare_us = statistics.median(bare) / (runs * responses) * 1e6
    inst_us = statistics.median(instrumented) / (runs * responses) * 1e6
    label = f"{responses} response{'s' if responses > 1 else ''} per run"
    return [
        Figure(f"{framework} alone, µs per response ({label})", bare_us, "µs"),
        Figure(f"{variant}, µs per response ({label})", inst_us, "µs"),
        Figure(f"{variant}: added per response ({label})", inst_us - bare_us, "µs"),
        Figure(f"{variant} / {framework} alone ({label})", inst_us / bare_us, "x"),
    ]


def timed(batch: Callable[[int], float], runs: int) -> float:
    """``batch(runs)`` from a collected heap, so neither side pays for the other's garbage."""
    gc.collect()
    return batch(runs)

"""OpenTelemetry benchmarks: the OTel backend vs the bare SDK doing the same records, traces, a dead
collector, and import time with OTel disabled.

Baselines are measured in the same run and interleaved with the library (``bench_core``'s helpers), so
ratios hold on the machine that produced them. Run alone: ``python benchmarks/bench_otel.py [--quick]``.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from benchmarks.bench_core import (
    GENEROUS,
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    TURNS,
    Figure,
    _time_subprocess,
    interleaved_medians,
    library_execution,
)
from subagent_telemetry import _catalog as cat
from subagent_telemetry._config import Config
from subagent_telemetry._telemetry import SubagentTelemetry
from subagent_telemetry._vocab import Status
from subagent_telemetry.backends._otel import OtelBackend
from subagent_telemetry.quota._tracker import QuotaLimits, QuotaUsage

AREA = "otel"
TARGET_RATIO = 1.1
TARGET = f"≤ {TARGET_RATIO}"


class _DropSpans(SpanExporter):
    """Accepts and discards: the span pipeline runs, nothing leaves the process."""

    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def otel_config(**otlp: Any) -> Config:
    return Config.model_validate(
        {
            "agent": {"subagent": GENEROUS},
            "telemetry": {"log_executions": False, "prometheus": {"enabled": False}, "otlp": otlp},
        }
    )


def tracer_provider() -> TracerProvider:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(_DropSpans()))
    return provider


class BareOtel:
    """The same instruments (names, units, buckets) created directly with the SDK."""

    def __init__(self, meter_provider: MeterProvider, tracer_provider: TracerProvider | None = None) -> None:
        meter = meter_provider.get_meter("bare")

        def histogram(spec: cat.MetricSpec) -> Any:
            return meter.create_histogram(
                spec.otel_name, unit=spec.otel_unit, explicit_bucket_boundaries_advisory=list(spec.buckets)
            )

        self.executions = meter.create_counter(cat.EXECUTIONS.otel_name, unit=cat.EXECUTIONS.otel_unit)
        self.active = meter.create_up_down_counter(cat.ACTIVE.otel_name, unit=cat.ACTIVE.otel_unit)
        self.completions = meter.create_counter(cat.COMPLETIONS.otel_name, unit=cat.COMPLETIONS.otel_unit)
        self.duration = histogram(cat.DURATION)
        self.turns = histogram(cat.TURNS)
        self.tokens = histogram(cat.TOKENS)
        self.tracer = tracer_provider.get_tracer("bare") if tracer_provider is not None else None


def bare_execution(m: BareOtel) -> Callable[[], None]:
    """The same records a hand-instrumented program makes, attribute dicts built once up front."""
    start_attrs = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "bench", "subagent.depth": 1}
    base = {"depth": "1"}
    complete = {"depth": "1", "status": "complete"}
    clock = time.monotonic
    tracer = m.tracer

    def one() -> None:
        span = token = None
        if tracer is not None:
            span = tracer.start_span("invoke_agent bench", kind=SpanKind.INTERNAL, attributes=start_attrs)
            token = otel_context.attach(trace.set_span_in_context(span))
        m.executions.add(1, base)
        m.active.add(1, base)
        started = clock()
        turns = 0
        for _ in range(TURNS):
            turns += 1
        tokens = INPUT_TOKENS + OUTPUT_TOKENS
        elapsed = clock() - started
        m.active.add(-1, base)
        m.turns.record(turns, base)
        m.tokens.record(tokens, base)
        m.duration.record(elapsed, complete)
        m.completions.add(1, complete)
        if span is not None and token is not None:
            span.set_attributes(
                {
                    "gen_ai.usage.input_tokens": INPUT_TOKENS,
                    "gen_ai.usage.output_tokens": OUTPUT_TOKENS,
                    "subagent.tokens": tokens,
                    "subagent.turns": turns,
                    "subagent.subtree.input_tokens": INPUT_TOKENS,
                    "subagent.subtree.output_tokens": OUTPUT_TOKENS,
                    "subagent.subtree.total_tokens": tokens,
                    "subagent.subtree.executions": 1,
                }
            )
            span.set_attribute("subagent.status", "complete")
            otel_context.detach(token)
            span.end()

    return one


def _providers() -> MeterProvider:
    return MeterProvider(metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False)


class _Run:
    """A finished depth-1 execution as backends see it (the RunView fields)."""

    __slots__ = (
        "agent", "backend_state", "cost_nanos", "depth", "depth_label", "duration_seconds", "error_type",
        "input_tokens", "model", "name", "output_tokens", "parent", "parent_in_context", "provider",
        "status", "tokens", "trace_id", "turns",
    )  # fmt: skip

    def __init__(self) -> None:
        self.name, self.agent, self.depth, self.depth_label = "bench", "", 1, "1"
        self.turns, self.input_tokens, self.output_tokens = TURNS, INPUT_TOKENS, OUTPUT_TOKENS
        self.tokens = INPUT_TOKENS + OUTPUT_TOKENS
        self.model: str | None = None
        self.provider: str | None = None
        self.parent_in_context = True
        self.status, self.error_type, self.duration_seconds = Status.COMPLETE, None, 0.001
        self.trace_id: str | None = None
        self.backend_state: object = None
        self.parent = None
        self.cost_nanos = 0


def backend_execution(backend: OtelBackend) -> Callable[[], None]:
    """The backend's whole share of one execution: ``started`` then ``finished``."""
    run = _Run()

    def one() -> None:
        backend.started(run)
        backend.finished(run)

    return one


def _compare(label: str, tracing: bool, ops: int, repeats: int) -> list[Figure]:
    tracer = tracer_provider() if tracing else None
    backend = OtelBackend(
        otel_config(),
        meter_provider=_providers(),
        tracer_provider=tracer,
        usage=lambda: QuotaUsage(0, 0, 0.0),
        limits=QuotaLimits,
    )
    lib = SubagentTelemetry(
        otel_config(),
        registry=CollectorRegistry(),
        meter_provider=_providers(),
        tracer_provider=tracer_provider() if tracing else None,
    )
    core = SubagentTelemetry(otel_config(), registry=CollectorRegistry())
    bare = BareOtel(_providers(), tracer_provider() if tracing else None)
    ns = interleaved_medians(
        {
            "backend": backend_execution(backend),
            "bare": bare_execution(bare),
            "library": library_execution(lib),
            "core": library_execution(core),
        },
        ops,
        repeats,
    )
    ratio = ns["backend"] / ns["bare"]
    return [
        Figure(f"{label}: OTel backend, one execution", ns["backend"] / 1000, "µs"),
        Figure(f"{label}: bare OTel SDK, same records", ns["bare"] / 1000, "µs"),
        Figure(
            f"{label}: backend ratio vs bare OTel SDK", ratio, "x", f"≤ {TARGET_RATIO}", ratio <= TARGET_RATIO
        ),
        Figure(f"{label}: tel.execution() end to end", ns["library"] / 1000, "µs"),
        Figure(f"{label}: tel.execution() with no backend", ns["core"] / 1000, "µs"),
        Figure(f"{label}: end-to-end ratio vs bare SDK (incl. admission)", ns["library"] / ns["bare"], "x"),
    ]


def bench_metrics(ops: int, repeats: int) -> list[Figure]:
    """OTel metrics only. The backend figure is the one comparable with the bare SDK: the end-to-end
    figure also carries admission, quota accounting and the context variable, which the SDK does not do."""
    return _compare("metrics", False, ops, repeats)


def bench_traces(ops: int, repeats: int) -> list[Figure]:
    """Metrics and one span per execution (batch processor, spans dropped), the bare SDK doing both."""
    return _compare("traces", True, ops, repeats)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def bench_collector_down(ops: int, repeats: int) -> list[Figure]:
    """The real OTLP/HTTP exporters pointed at a closed port, exporting every 100 ms during the run."""
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    down = SubagentTelemetry(
        otel_config(enabled=True, endpoint=endpoint, export_interval_seconds=0.1, timeout_seconds=1),
        registry=CollectorRegistry(),
    )
    healthy = SubagentTelemetry(
        otel_config(),
        registry=CollectorRegistry(),
        meter_provider=_providers(),
        tracer_provider=tracer_provider(),
    )
    ns = interleaved_medians(
        {"down": library_execution(down), "healthy": library_execution(healthy)}, ops, repeats
    )
    started = time.perf_counter()
    down.shutdown()
    shutdown_s = time.perf_counter() - started
    ratio = ns["down"] / ns["healthy"]
    return [
        Figure("collector down: tel.execution(), metrics + span", ns["down"] / 1000, "µs"),
        Figure("collector down: ratio vs same pipeline, nothing exported", ratio, "x", "≤ 1.5", ratio <= 1.5),
        Figure("collector down: shutdown flush (timeout 1 s)", shutdown_s, "s", "≤ 1.5", shutdown_s <= 1.5),
    ]


def bench_import(repeats: int) -> list[Figure]:
    """Import time with OTel disabled, and proof that no opentelemetry module is loaded."""
    commands = {
        "prometheus_client": [sys.executable, "-c", "import prometheus_client"],
        "subagent_telemetry": [sys.executable, "-c", "import subagent_telemetry"],
    }
    for args in commands.values():
        _time_subprocess(args)
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, args in commands.items():
            samples[name].append(_time_subprocess(args))
    ms = {name: statistics.median(values) * 1000 for name, values in samples.items()}
    probe = (
        "import sys, subagent_telemetry as s\n"
        "from prometheus_client import CollectorRegistry\n"
        "s.SubagentTelemetry(registry=CollectorRegistry())\n"
        "print(sum(m.startswith('opentelemetry') for m in sys.modules))"
    )
    loaded = int(
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    )
    return [
        Figure("import: subagent_telemetry (OTel disabled)", ms["subagent_telemetry"], "ms"),
        Figure("import: prometheus_client", ms["prometheus_client"], "ms"),
        Figure("import: opentelemetry modules loaded with OTel disabled", loaded, "", "= 0", loaded == 0),
    ]


def run(quick: bool = False) -> dict[str, Any]:
    ops, repeats = (200, 3) if quick else (20_000, 9)
    figures: list[Figure] = []
    print("otel: metrics vs bare SDK ...", file=sys.stderr, flush=True)
    figures += bench_metrics(ops, repeats)
    print("otel: traces on ...", file=sys.stderr, flush=True)
    figures += bench_traces(ops, repeats)
    print("otel: collector down ...", file=sys.stderr, flush=True)
    figures += bench_collector_down(ops, repeats)
    print("otel: import with OTel disabled ...", file=sys.stderr, flush=True)
    figures += bench_import(3 if quick else 20)
    details = {"workload": f"admission + {TURNS} record_turn() + 1 record_tokens() + outcome, depth 1"}
    return {"area": AREA, "figures": [f.as_dict() for f in figures], "details": details}


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, ensure_ascii=False))

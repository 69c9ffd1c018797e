"""A collector that is down, hangs or answers 5xx never reaches agent code: no exception, bounded time.

Each case runs the same workload (executions with metrics and spans, exports every 100 ms so several
happen during the run) and measures it against a healthy receiver in the same test.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

pytest.importorskip("opentelemetry.sdk")

from prometheus_client import CollectorRegistry

from subagent_telemetry._config import Config
from subagent_telemetry._telemetry import SubagentTelemetry
from subagent_telemetry.backends._otel_logs import reset_rate_limit
from tests.support.otlp_receiver import HangingServer, closed_port_endpoint, failing_receiver, http_receiver

pytestmark = pytest.mark.integration

TIMEOUT_SECONDS = 1.0
EXECUTIONS = 400


@dataclass(frozen=True)
class Run:
    per_execution_seconds: list[float]
    shutdown_seconds: float
    exceptions: int

    @property
    def median_us(self) -> float:
        return statistics.median(self.per_execution_seconds) * 1e6

    @property
    def max_seconds(self) -> float:
        return max(self.per_execution_seconds)


def workload(endpoint: str) -> Run:
    otlp = {
        "enabled": True,
        "endpoint": endpoint,
        "timeout_seconds": TIMEOUT_SECONDS,
        "export_interval_seconds": 0.1,
    }
    # No session budgets: every execution is admitted, so any exception would come from exporting.
    telemetry = {"log_executions": False, "prometheus": {"enabled": False}, "otlp": otlp}
    config = Config.model_validate({"telemetry": telemetry})
    tel = SubagentTelemetry(config, registry=CollectorRegistry())
    times: list[float] = []
    exceptions = 0
    # A full garbage collection of the whole test process can pause one execution for half a second:
    # collect first and pause the collector, so the times show waits on the exporter, nothing else.
    gc.collect()
    gc.disable()
    try:
        for i in range(EXECUTIONS):
            started = time.perf_counter()
            try:
                with tel.execution("parent") as run:
                    run.record_tokens(input=10, output=i % 7)
                    with tel.execution("child"):
                        pass
            except Exception:
                exceptions += 1
            times.append(time.perf_counter() - started)
            if i % 100 == 0:
                time.sleep(0.15)  # Let a periodic export start while executions keep running.
    finally:
        gc.enable()
    started = time.perf_counter()
    tel.shutdown()
    return Run(times, time.perf_counter() - started, exceptions)


@contextlib.contextmanager
def hanging() -> Iterator[str]:
    server = HangingServer()
    try:
        yield server.endpoint
    finally:
        server.close()


@contextlib.contextmanager
def answering_503() -> Iterator[str]:
    with contextlib.contextmanager(failing_receiver)(503) as receiver:
        yield receiver.endpoint


@contextlib.contextmanager
def closed_port() -> Iterator[str]:
    yield closed_port_endpoint()


@pytest.fixture(autouse=True)
def _fresh_rate_limit() -> None:
    """Each test sees the first occurrence of every export-failure message."""
    reset_rate_limit()


@pytest.fixture(scope="module")
def healthy() -> Run:
    with contextlib.contextmanager(http_receiver)() as receiver:
        return workload(receiver.endpoint)


@pytest.mark.parametrize("collector", [closed_port, hanging, answering_503], ids=lambda f: f.__name__)
class TestBrokenCollector:
    def test_agent_code_sees_no_exception_and_is_not_slowed(
        self, collector: object, healthy: Run, record_property: object
    ) -> None:
        """Executions raise nothing, none waits for an export, and the median cost stays near healthy."""
        with collector() as endpoint:  # type: ignore[operator]
            broken = workload(endpoint)
        record_property("median_us", broken.median_us)  # type: ignore[operator]
        print(
            f"\n{collector.__name__}: median {broken.median_us:.0f} us/execution pair "  # type: ignore[attr-defined]
            f"(healthy {healthy.median_us:.0f}), max {broken.max_seconds * 1e3:.1f} ms, "
            f"shutdown {broken.shutdown_seconds:.2f} s"
        )
        assert broken.exceptions == 0
        assert broken.max_seconds < TIMEOUT_SECONDS / 2
        assert broken.median_us < 3 * healthy.median_us + 200

    def test_shutdown_is_bounded_by_the_timeout(self, collector: object) -> None:
        """Flushing at shutdown (and so at exit) waits at most the configured timeout."""
        with collector() as endpoint:  # type: ignore[operator]
            broken = workload(endpoint)
        assert broken.shutdown_seconds < TIMEOUT_SECONDS + 0.5

    def test_failures_are_logged_rate_limited(
        self, collector: object, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Export failures are logged, each distinct message at most once per interval."""
        caplog.set_level(logging.WARNING)
        with collector() as endpoint:  # type: ignore[operator]
            workload(endpoint)
        otel_records = [r for r in caplog.records if r.name.startswith("opentelemetry")]
        keys = [(r.name, r.msg) for r in otel_records]
        assert otel_records, "a broken collector is logged"
        assert len(keys) == len(set(keys))

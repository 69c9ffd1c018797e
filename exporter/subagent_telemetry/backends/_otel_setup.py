"""Building the OpenTelemetry providers from ``telemetry.otlp`` and the standard ``OTEL_*`` variables.

Precedence, per setting: a value written in the config file, then the ``OTEL_*`` environment variable,
then the config's default. Providers passed by the caller are used as they are and never shut down here.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from .._config import Config, OtlpConfig
from .._config_yaml import shown
from .._errors import ConfigError

_GRPC = "grpc"
_HTTP = "http/protobuf"


def build_resource(config: Config) -> Resource:
    """``service.name`` (→ job), ``service.instance.id`` (→ instance) and ``OTEL_RESOURCE_ATTRIBUTES``."""
    telemetry = config.telemetry
    from_env = OTELResourceDetector().detect().attributes  # OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME
    attributes: dict[str, Any] = {}
    if "service_name" in telemetry.model_fields_set or "service.name" not in from_env:
        attributes["service.name"] = telemetry.service_name
    if "service.instance.id" not in from_env:
        # Readable and unique per process; set it in OTEL_RESOURCE_ATTRIBUTES (e.g. the pod name) to
        # keep one series per replica across restarts.
        attributes["service.instance.id"] = f"{socket.gethostname()}:{os.getpid()}"
    return Resource.create(attributes)


def _protocol(otlp: OtlpConfig, signal: str) -> str:
    if "protocol" in otlp.model_fields_set:
        return otlp.protocol
    env = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", ""
    )
    return _GRPC if env.strip() == _GRPC else _HTTP


def _endpoint(otlp: OtlpConfig, protocol: str, path: str) -> str | None:
    """The config's base endpoint with the signal path (HTTP) added; None lets the SDK read the env."""
    if otlp.endpoint is None:
        return None
    if protocol == _GRPC:
        return otlp.endpoint
    return otlp.endpoint.rstrip("/") + path


def _kwargs(otlp: OtlpConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"timeout": otlp.timeout_seconds}
    if otlp.headers:
        kwargs["headers"] = dict(otlp.headers)
    return kwargs


def metric_exporter(otlp: OtlpConfig) -> Any:
    protocol = _protocol(otlp, "METRICS")
    if protocol == _GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # noqa: PLC0415
            OTLPMetricExporter as GrpcMetricExporter,
        )

        return GrpcMetricExporter(
            endpoint=_endpoint(otlp, protocol, ""), insecure=_insecure(otlp), **_kwargs(otlp)
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter  # noqa: PLC0415

    return OTLPMetricExporter(endpoint=_endpoint(otlp, protocol, "/v1/metrics"), **_kwargs(otlp))


def span_exporter(otlp: OtlpConfig) -> Any:
    protocol = _protocol(otlp, "TRACES")
    if protocol == _GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter(
            endpoint=_endpoint(otlp, protocol, ""), insecure=_insecure(otlp), **_kwargs(otlp)
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

    return OTLPSpanExporter(endpoint=_endpoint(otlp, protocol, "/v1/traces"), **_kwargs(otlp))


def _insecure(otlp: OtlpConfig) -> bool | None:
    """Plain-text gRPC for ``http://`` endpoints; None lets the SDK decide (env, scheme)."""
    if otlp.endpoint is None:
        return None
    return otlp.endpoint.startswith("http://")


def _interval_millis(otlp: OtlpConfig) -> float | None:
    if "export_interval_seconds" in otlp.model_fields_set or "OTEL_METRIC_EXPORT_INTERVAL" not in os.environ:
        return otlp.export_interval_seconds * 1000
    return None  # The reader reads OTEL_METRIC_EXPORT_INTERVAL.


@dataclass
class OwnedProviders:
    """Providers this package built (and so flushes and shuts down); either may be None."""

    meter_provider: MeterProvider | None = None
    tracer_provider: TracerProvider | None = None
    _done: bool = field(default=False, repr=False)

    def shutdown(self, timeout_seconds: float) -> bool:
        """Flush and shut down within ``timeout_seconds`` overall; True when everything finished in time.

        The SDK's own shutdowns can wait for a hung exporter for their 30 s defaults, so the work runs in
        a daemon thread and the caller waits at most the timeout.
        """
        if self._done:
            return True
        self._done = True
        deadline = time.monotonic() + timeout_seconds
        worker = threading.Thread(
            target=self._shutdown_all, args=(deadline,), name="subagent-telemetry-otel-shutdown", daemon=True
        )
        worker.start()
        worker.join(max(deadline - time.monotonic(), 0.0))
        return not worker.is_alive()

    def _shutdown_all(self, deadline: float) -> None:
        def remaining_millis() -> float:
            return max(deadline - time.monotonic(), 0.0) * 1000

        steps: list[Callable[[], object]] = []
        if self.tracer_provider is not None:
            tp = self.tracer_provider
            steps += [lambda: tp.force_flush(int(remaining_millis())), tp.shutdown]
        if self.meter_provider is not None:
            mp = self.meter_provider
            steps.append(lambda: mp.shutdown(timeout_millis=remaining_millis()))
        for step in steps:
            with contextlib.suppress(Exception):  # The SDK logs its own export failures.
                step()


class _OwnProcessMetrics(MetricExporter):
    """Exports only from the process that built it.

    A forked child inherits the parent's providers, with the parent's ``service.instance.id`` and its
    counts; the SDK restarts their export threads in the child. Those copies stay silent (the child
    builds its own providers, see ``OtelBackend``), so no process ever sends another's series.
    """

    def __init__(self, inner: MetricExporter) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self._inner = inner
        self._pid = os.getpid()

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        if os.getpid() != self._pid:
            return MetricExportResult.SUCCESS
        return self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return os.getpid() != self._pid or self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if os.getpid() == self._pid:
            self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)


class _OwnProcessSpans(SpanExporter):
    """``_OwnProcessMetrics`` for spans."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner
        self._pid = os.getpid()

    def export(self, spans: Any) -> SpanExportResult:
        if os.getpid() != self._pid:
            return SpanExportResult.SUCCESS
        return self._inner.export(spans)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return os.getpid() != self._pid or self._inner.force_flush(timeout_millis)

    def shutdown(self) -> None:
        if os.getpid() == self._pid:
            self._inner.shutdown()


def build_providers(config: Config, *, metrics: bool, traces: bool) -> OwnedProviders:
    """SDK providers exporting over OTLP; the SDK's own exit hooks are off (ours is bounded).

    The SDK also reads ``OTEL_*`` environment variables and raises a bare ``ValueError`` for values it
    refuses (``OTEL_BSP_MAX_QUEUE_SIZE=-1``): that is a ``ConfigError`` naming the variables set.
    """
    owned = OwnedProviders()
    try:
        _build(config, owned, metrics=metrics, traces=traces)
    except ValueError as err:
        owned.shutdown(1.0)  # Whatever was built before the refusal never exports.
        settings = ", ".join(
            f"{k}={'<hidden>' if 'HEADERS' in k else shown(v)}"  # Headers carry credentials.
            for k, v in sorted(os.environ.items())
            if k.startswith("OTEL_")
        )
        msg = (
            f"telemetry.otlp: the OpenTelemetry SDK refused its settings ({err}); besides the config it "
            f"reads these environment variables: {settings or 'none set'}. Fix or unset the one named."
        )
        raise ConfigError(msg) from None
    return owned


def _build(config: Config, owned: OwnedProviders, *, metrics: bool, traces: bool) -> None:
    otlp = config.telemetry.otlp
    resource = build_resource(config)
    if metrics:
        reader = PeriodicExportingMetricReader(
            _OwnProcessMetrics(metric_exporter(otlp)),
            export_interval_millis=_interval_millis(otlp),
            export_timeout_millis=otlp.timeout_seconds * 1000,
        )
        owned.meter_provider = MeterProvider(
            metric_readers=[reader], resource=resource, shutdown_on_exit=False
        )
    if traces:
        owned.tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        owned.tracer_provider.add_span_processor(
            BatchSpanProcessor(
                _OwnProcessSpans(span_exporter(otlp)), export_timeout_millis=otlp.timeout_seconds * 1000
            )
        )

"""OTLP wiring: config vs OTEL_* precedence, protocol choice, resource, bounded shutdown, lazy import."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry

from subagent_telemetry import ConfigError, SubagentTelemetry
from subagent_telemetry._config import Config
from subagent_telemetry.backends._otel_setup import (
    OwnedProviders,
    build_resource,
    metric_exporter,
    span_exporter,
)
from tests.support.otlp_receiver import grpc_receiver, http_receiver


def otlp(**fields: Any) -> Any:
    return Config.model_validate({"telemetry": {"otlp": {"enabled": True, **fields}}}).telemetry.otlp


class TestExporters:
    def test_http_protobuf_is_the_default(self) -> None:
        """Without protocol set anywhere, the HTTP exporter posts to <endpoint>/v1/<signal>."""
        exporter = metric_exporter(otlp(endpoint="http://collector:4318"))
        assert type(exporter).__module__.startswith("opentelemetry.exporter.otlp.proto.http")
        assert exporter._endpoint == "http://collector:4318/v1/metrics"

    def test_grpc_from_the_config(self) -> None:
        """protocol: grpc picks the gRPC exporter with the endpoint as given."""
        exporter = span_exporter(otlp(endpoint="http://collector:4317", protocol="grpc"))
        assert type(exporter).__module__.startswith("opentelemetry.exporter.otlp.proto.grpc")

    def test_grpc_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """OTEL_EXPORTER_OTLP_PROTOCOL=grpc applies when the config does not set a protocol."""
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        exporter = metric_exporter(otlp(endpoint="http://collector:4317"))
        assert type(exporter).__module__.startswith("opentelemetry.exporter.otlp.proto.grpc")

    def test_config_protocol_beats_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A protocol written in the config wins over OTEL_EXPORTER_OTLP_PROTOCOL."""
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        exporter = metric_exporter(otlp(endpoint="http://c:4318", protocol="http/protobuf"))
        assert type(exporter).__module__.startswith("opentelemetry.exporter.otlp.proto.http")

    def test_endpoint_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """With no endpoint in the config the SDK reads OTEL_EXPORTER_OTLP_ENDPOINT."""
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://from-env:4318")
        assert metric_exporter(otlp())._endpoint == "http://from-env:4318/v1/metrics"

    @pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
    def test_configured_headers_reach_the_collector(self, protocol: str) -> None:
        """telemetry.otlp.headers are sent with every export, over either protocol."""
        receive = http_receiver if protocol == "http/protobuf" else grpc_receiver
        with contextlib.contextmanager(receive)() as receiver:
            config = otlp(endpoint=receiver.endpoint, protocol=protocol, headers={"x-tenant": "team-a"})
            exporter = span_exporter(config)
            provider = TracerProvider(shutdown_on_exit=False)
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            provider.get_tracer("t").start_span("s").end()
            provider.shutdown()
            assert receiver.received.headers[0]["x-tenant"] == "team-a"


class TestResource:
    def test_service_name_and_instance(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """service.name comes from telemetry.service_name; service.instance.id is host:pid."""
        monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
        monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
        config = Config.model_validate({"telemetry": {"service_name": "billing-agent"}})
        attrs = build_resource(config).attributes
        assert attrs["service.name"] == "billing-agent"
        assert str(attrs["service.instance.id"]).endswith(f":{__import__('os').getpid()}")

    def test_environment_overrides_the_default_service_name(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """OTEL_SERVICE_NAME wins over the default, OTEL_RESOURCE_ATTRIBUTES sets the instance."""
        monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=pod-7,service.namespace=team")
        attrs = build_resource(Config()).attributes
        assert (attrs["service.name"], attrs["service.instance.id"]) == ("from-env", "pod-7")
        assert attrs["service.namespace"] == "team"

    def test_configured_service_name_beats_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A service_name written in the config wins over OTEL_SERVICE_NAME."""
        monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
        config = Config.model_validate({"telemetry": {"service_name": "from-config"}})
        assert build_resource(config).attributes["service.name"] == "from-config"


class TestEnvironmentRefused:
    @pytest.mark.parametrize(
        ("variable", "value"),
        [
            ("OTEL_BSP_MAX_QUEUE_SIZE", "-1"),
            ("OTEL_BSP_SCHEDULE_DELAY", "-5"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "0"),
        ],
    )
    def test_a_value_the_sdk_refuses_is_a_config_error_naming_the_variable(
        self, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
    ) -> None:
        """SubagentTelemetry raises one ConfigError naming the OTEL_* variable and its value, not the SDK's
        bare ValueError; a header variable's value (credentials) is never shown."""
        monkeypatch.setenv(variable, value)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer secret-token")
        config = Config.model_validate(
            {"telemetry": {"otlp": {"enabled": True, "endpoint": "http://127.0.0.1:9"}}}
        )
        with pytest.raises(ConfigError) as refused:
            SubagentTelemetry(config, registry=CollectorRegistry())
        message = str(refused.value)
        assert f"{variable}='{value}'" in message
        assert "secret-token" not in message


class _HangingExporter(SpanExporter):
    def __init__(self) -> None:
        self.release = threading.Event()

    def export(self, spans: Any) -> SpanExportResult:
        self.release.wait(30)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.wait(30)


class TestShutdown:
    def test_shutdown_returns_within_the_timeout_when_the_exporter_hangs(self) -> None:
        """A hung exporter cannot hold shutdown (or exit) past its timeout."""
        exporter = _HangingExporter()
        tracer_provider = TracerProvider(shutdown_on_exit=False)
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        owned = OwnedProviders(MeterProvider(shutdown_on_exit=False), tracer_provider)
        threading.Thread(target=lambda: tracer_provider.get_tracer("t").start_span("s").end()).start()
        started = time.monotonic()
        finished = owned.shutdown(timeout_seconds=0.3)
        elapsed = time.monotonic() - started
        exporter.release.set()
        assert not finished
        assert elapsed < 0.6

    def test_shutdown_is_idempotent(self) -> None:
        """A second shutdown (explicit, then at exit) does nothing."""
        owned = OwnedProviders(MeterProvider(shutdown_on_exit=False), None)
        assert owned.shutdown(1.0)
        assert owned.shutdown(1.0)


class TestLazyImport:
    def test_importing_the_package_does_not_load_opentelemetry(self) -> None:
        """With OTLP disabled, neither the import nor a SubagentTelemetry loads any opentelemetry module."""
        code = (
            "import sys, subagent_telemetry as st\n"
            "from prometheus_client import CollectorRegistry\n"
            "tel = st.SubagentTelemetry(registry=CollectorRegistry())\n"
            "with tel.execution('a'): pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "[]"

    def test_enabling_otlp_loads_the_sdk(self) -> None:
        """The check above can fail: with OTLP on, the SDK is loaded."""
        code = (
            "import sys, subagent_telemetry as st\n"
            "from prometheus_client import CollectorRegistry\n"
            "cfg = st.Config.model_validate({'telemetry': {'otlp': {'enabled': True,"
            " 'endpoint': 'http://127.0.0.1:9'}}})\n"
            "tel = st.SubagentTelemetry(cfg, registry=CollectorRegistry())\n"
            "print('opentelemetry.sdk' in sys.modules)\n"
            "tel.shutdown(0.1)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "True"

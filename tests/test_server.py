"""The /metrics listener: loopback by default, content negotiation, basic auth and TLS."""

from __future__ import annotations

import base64
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from subagent_telemetry import ConfigError, SubagentTelemetry
from subagent_telemetry._config import PrometheusConfig
from subagent_telemetry.backends._server import serve_metrics
from tests.conftest import make_config


def _get(
    url: str, headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None
) -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, "", ""


def test_default_listener_is_loopback_9464() -> None:
    """By default /metrics binds 127.0.0.1:9464."""
    config = PrometheusConfig()
    assert (config.listen_address, config.port) == ("127.0.0.1", 9464)


def test_serves_the_registry_and_negotiates_openmetrics(registry: CollectorRegistry) -> None:
    """Plain GET gets the text format; Accept: openmetrics gets OpenMetrics."""
    tel = SubagentTelemetry(make_config(), registry=registry)
    server = serve_metrics(registry, PrometheusConfig(port=0))
    try:
        with tel.execution("a"):
            pass
        status, ctype, body = _get(server.url)
        assert status == 200
        assert ctype.startswith("text/plain")
        assert 'subagent_executions_total{depth="1"} 1.0' in body
        _, ctype, body = _get(server.url, {"Accept": "application/openmetrics-text; version=1.0.0"})
        assert ctype.startswith("application/openmetrics-text")
        assert body.rstrip().endswith("# EOF")
    finally:
        server.close()


def test_basic_auth_rejects_missing_and_wrong_credentials(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With basic_auth set, only the right user/password gets metrics."""
    monkeypatch.setenv("METRICS_PASSWORD", "s3cret")
    config = PrometheusConfig.model_validate(
        {"port": 0, "basic_auth": {"username": "prom", "password_env": "METRICS_PASSWORD"}}
    )
    server = serve_metrics(registry, config)
    try:
        assert _get(server.url)[0] == 401
        wrong = base64.b64encode(b"prom:nope").decode()
        assert _get(server.url, {"Authorization": f"Basic {wrong}"})[0] == 401
        right = base64.b64encode(b"prom:s3cret").decode()
        assert _get(server.url, {"Authorization": f"Basic {right}"})[0] == 200
    finally:
        server.close()


def test_basic_auth_without_the_password_variable_is_a_config_error(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing password variable fails early and names it."""
    monkeypatch.delenv("NO_SUCH_PASSWORD", raising=False)
    config = PrometheusConfig.model_validate(
        {"port": 0, "basic_auth": {"username": "prom", "password_env": "NO_SUCH_PASSWORD"}}
    )
    with pytest.raises(ConfigError, match="NO_SUCH_PASSWORD"):
        serve_metrics(registry, config)


def test_serves_https_with_the_configured_certificate(registry: CollectorRegistry, tmp_path: Path) -> None:
    """With tls set, the listener speaks HTTPS with that certificate."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    config = PrometheusConfig.model_validate(
        {"port": 0, "tls": {"cert_file": str(cert), "key_file": str(key)}}
    )
    server = serve_metrics(registry, config)
    try:
        assert server.url.startswith("https://")
        context = ssl.create_default_context(cafile=str(cert))
        assert _get(server.url, context=context)[0] == 200
    finally:
        server.close()


def test_bad_certificate_is_a_config_error(registry: CollectorRegistry, tmp_path: Path) -> None:
    """Unreadable TLS files fail early with the key path."""
    config = PrometheusConfig.model_validate(
        {"port": 0, "tls": {"cert_file": str(tmp_path / "x.pem"), "key_file": str(tmp_path / "y.pem")}}
    )
    with pytest.raises(ConfigError, match=r"telemetry\.prometheus\.tls"):
        serve_metrics(registry, config)


def test_port_in_use_is_a_config_error(registry: CollectorRegistry) -> None:
    """A busy port is reported with the key to change, not an OSError traceback."""
    first = serve_metrics(registry, PrometheusConfig(port=0))
    try:
        with pytest.raises(ConfigError, match=r"telemetry\.prometheus\.port"):
            serve_metrics(registry, PrometheusConfig(port=first.port))
    finally:
        first.close()

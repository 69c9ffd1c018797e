"""The /metrics listener: loopback by default, content negotiation, basic auth and TLS."""

from __future__ import annotations

import base64
import contextlib
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from subagent_telemetry import ConfigError, SubagentTelemetry
from subagent_telemetry import _catalog as cat
from subagent_telemetry._config import PrometheusConfig
from subagent_telemetry.backends._server import MetricsServer, serve_metrics
from tests.conftest import make_config


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed certificate for 127.0.0.1; its key sits beside it as key.pem."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert


def _tls_config(cert: Path, **extra: object) -> PrometheusConfig:
    key = cert.with_name("key.pem")
    return PrometheusConfig.model_validate(
        {"port": 0, "tls": {"cert_file": str(cert), "key_file": str(key)}, **extra}
    )


def _client_context(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


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


def test_serve_after_shutdown_is_refused(registry: CollectorRegistry) -> None:
    """A listener started after shutdown() would never be closed: serve() refuses it instead."""
    tel = SubagentTelemetry(make_config(), registry=registry)
    tel.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        tel.serve()


@pytest.fixture
def auth_server(registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch) -> Iterator[MetricsServer]:
    """A listener that requires user ``prom`` with password ``s3cret``."""
    monkeypatch.setenv("METRICS_PASSWORD", "s3cret")
    config = PrometheusConfig.model_validate(
        {"port": 0, "basic_auth": {"username": "prom", "password_env": "METRICS_PASSWORD"}}
    )
    server = serve_metrics(registry, config)
    yield server
    server.close()


def test_basic_auth_rejects_missing_and_wrong_credentials(auth_server: MetricsServer) -> None:
    """With basic_auth set, only the right user/password gets metrics."""
    assert _get(auth_server.url)[0] == 401
    wrong = base64.b64encode(b"prom:nope").decode()
    assert _get(auth_server.url, {"Authorization": f"Basic {wrong}"})[0] == 401
    right = base64.b64encode(b"prom:s3cret").decode()
    assert _get(auth_server.url, {"Authorization": f"Basic {right}"})[0] == 200


@pytest.mark.parametrize(
    "selected",
    [
        "subagent_executions_total",
        "subagent_duration_seconds_bucket",
        "subagent_quota_used",
        "subagent_quota_rejections_total",
    ],
)
def test_name_filter_selects_our_metrics(
    telemetry_factory: type[SubagentTelemetry], registry: CollectorRegistry, selected: str
) -> None:
    """`/metrics?name[]=x` answers x's series (and only them), for our collectors as for any metric."""
    tel = telemetry_factory()
    server = serve_metrics(registry, PrometheusConfig(port=0))
    try:
        with tel.execution("a"):
            pass
        _, _, body = _get(f"{server.url}?name[]={selected}")
        names = {line.split("{")[0].split(" ")[0] for line in body.splitlines() if not line.startswith("#")}
        assert selected in names
        assert names <= set(cat.by_name(selected).series_names) | {""}
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


def test_serves_https_with_the_configured_certificate(registry: CollectorRegistry, certificate: Path) -> None:
    """With tls set, the listener speaks HTTPS with that certificate."""
    server = serve_metrics(registry, _tls_config(certificate))
    try:
        assert server.url.startswith("https://")
        assert _get(server.url, context=_client_context(certificate))[0] == 200
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


@pytest.mark.parametrize("scheme", ["basic", "BASIC", "bAsIc"])
def test_basic_auth_scheme_is_case_insensitive(auth_server: MetricsServer, scheme: str) -> None:
    """The auth scheme matches in any case (RFC 9110); only the credentials must be exact."""
    right = base64.b64encode(b"prom:s3cret").decode()
    assert _get(auth_server.url, {"Authorization": f"{scheme} {right}"})[0] == 200


class _Large(Collector):
    """About 12 MB of exposition: far more than the socket buffers hold (at most 4 MB each way)."""

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("large_payload", "Filler.", labels=["filler"])
        for i in range(120):
            family.add_metric([f"{i}:" + "x" * 100_000], i)
        yield family


def _idle_client(server: MetricsServer) -> socket.socket:
    """A TCP client that connects and sends nothing."""
    return socket.create_connection((server.host, server.port), timeout=10)


def _seconds_until_closed(sock: socket.socket, limit_seconds: float = 10.0) -> float:
    """Seconds until the server closes `sock` (reads until end-of-file or reset)."""
    started = time.monotonic()
    sock.settimeout(limit_seconds)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - started


@contextlib.contextmanager
def _idle_client_of(
    registry: CollectorRegistry, config: PrometheusConfig
) -> Iterator[tuple[MetricsServer, socket.socket]]:
    """A running listener and one client connected to it that sends nothing."""
    server = serve_metrics(registry, config)
    idle = _idle_client(server)
    try:
        yield server, idle
    finally:
        idle.close()
        server.close()


class TestSlowClients:
    def test_idle_tls_client_does_not_block_other_scrapes(
        self, registry: CollectorRegistry, certificate: Path
    ) -> None:
        """A client that connects and never starts the TLS handshake does not delay another scrape."""
        with _idle_client_of(registry, _tls_config(certificate)) as (server, _):
            started = time.monotonic()
            with urllib.request.urlopen(
                server.url, timeout=3, context=_client_context(certificate)
            ) as response:
                assert response.status == 200
            assert time.monotonic() - started < 2

    def test_close_is_prompt_while_a_tls_client_idles(
        self, registry: CollectorRegistry, certificate: Path
    ) -> None:
        """close() returns within a second although a client holds an unfinished handshake."""
        with _idle_client_of(registry, _tls_config(certificate)) as (server, _):
            time.sleep(0.2)  # Accepted and waiting in the handshake.
            started = time.monotonic()
            server.close()
            assert time.monotonic() - started < 1.5

    def test_idle_client_is_disconnected_after_the_timeout(self, registry: CollectorRegistry) -> None:
        """A connection that sends nothing is closed once timeout_seconds have passed."""
        with _idle_client_of(registry, PrometheusConfig(port=0, timeout_seconds=0.5)) as (_, idle):
            assert _seconds_until_closed(idle) < 2

    def test_idle_tls_client_is_disconnected_after_the_timeout(
        self, registry: CollectorRegistry, certificate: Path
    ) -> None:
        """A TLS connection that never starts the handshake is closed once timeout_seconds have passed."""
        with _idle_client_of(registry, _tls_config(certificate, timeout_seconds=0.5)) as (_, idle):
            assert _seconds_until_closed(idle) < 2

    def test_trickling_request_is_cut_at_the_deadline(self, registry: CollectorRegistry) -> None:
        """A client sending its request a byte at a time is closed at the deadline, progress or not."""
        server = serve_metrics(registry, PrometheusConfig(port=0, timeout_seconds=1.0))
        client = _idle_client(server)
        try:
            started = time.monotonic()
            closed_after = None
            for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200:
                try:
                    client.sendall(bytes([byte]))
                except OSError:
                    closed_after = time.monotonic() - started
                    break
                time.sleep(0.05)
            if closed_after is None:
                closed_after = time.monotonic() - started + _seconds_until_closed(client)
            assert closed_after < 2.5
        finally:
            client.close()
            server.close()

    def test_client_that_stops_reading_the_response_is_cut_at_the_deadline(
        self, registry: CollectorRegistry
    ) -> None:
        """A scraper that asks for a large body and never reads it gives its connection back in time."""
        registry.register(_Large())
        server = serve_metrics(registry, PrometheusConfig(port=0, max_connections=1, timeout_seconds=1.0))
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            stalled.connect((server.host, server.port))
            stalled.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            time.sleep(2.5)  # Past the response deadline: the server gave up writing.
            assert _get(server.url)[0] == 200
        finally:
            stalled.close()
            server.close()

    def test_connections_over_the_cap_are_refused_with_503(self, registry: CollectorRegistry) -> None:
        """With max_connections open, the next client gets 503 and is closed; later ones get in again."""
        server = serve_metrics(registry, PrometheusConfig(port=0, max_connections=2, timeout_seconds=30))
        holders = [_idle_client(server) for _ in range(2)]
        try:
            time.sleep(0.2)
            assert _get(server.url)[0] == 503
            for holder in holders:
                holder.close()
            time.sleep(0.3)
            assert _get(server.url)[0] == 200
        finally:
            for holder in holders:
                holder.close()
            server.close()


_FLOODED_AGENT = """
import os, resource, sys, time
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from subagent_telemetry._config import PrometheusConfig
from subagent_telemetry.backends._server import MetricsServer, serve_metrics

resource.setrlimit(resource.RLIMIT_NOFILE, (96, 96))
server = serve_metrics(CollectorRegistry(), PrometheusConfig(port=0, max_connections=8, timeout_seconds=60))
print(server.port, flush=True)
sys.stdin.readline()  # The test has opened its connections.
files = []
try:
    for _ in range(40):
        files.append(open(os.devnull))
    print("opened", len(files), flush=True)
except OSError as error:
    print("failed", len(files), error, flush=True)
"""


def test_a_connection_flood_cannot_use_up_the_agents_file_descriptors() -> None:
    """300 idle clients against an agent limited to 96 descriptors: the agent can still open files."""
    agent = subprocess.Popen(
        [sys.executable, "-c", _FLOODED_AGENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert agent.stdin is not None
    assert agent.stdout is not None
    clients: list[socket.socket] = []
    try:
        port = int(agent.stdout.readline())
        timeouts = 0
        while len(clients) < 300 and timeouts < 3:  # A full accept queue makes connect() time out.
            try:
                clients.append(socket.create_connection(("127.0.0.1", port), timeout=3))
            except TimeoutError:
                timeouts += 1
        time.sleep(0.5)  # The agent accepts (and refuses) what reached it.
        agent.stdin.write("go\n")
        agent.stdin.flush()
        assert agent.stdout.readline().split()[:2] == ["opened", "40"]
    finally:
        for client in clients:
            client.close()
        agent.kill()
        agent.wait()

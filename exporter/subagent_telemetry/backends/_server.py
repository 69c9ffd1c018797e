"""The /metrics listener: prometheus_client's WSGI app (content negotiation, OpenMetrics, gzip) behind
optional TLS and basic auth, on a threaded server in a daemon thread."""

from __future__ import annotations

import base64
import hmac
import os
import ssl
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from .._config import PrometheusConfig
from .._errors import ConfigError

_WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


def _basic_auth(app: _WsgiApp, username: str, password: str) -> _WsgiApp:
    expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        given = environ.get("HTTP_AUTHORIZATION", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            start_response(
                "401 Unauthorized",
                [("WWW-Authenticate", 'Basic realm="metrics"'), ("Content-Type", "text/plain")],
            )
            return [b"Unauthorized\n"]
        return app(environ, start_response)

    return guarded


class MetricsServer:
    """A running /metrics listener. ``close()`` stops it."""

    def __init__(self, server: WSGIServer, scheme: str) -> None:
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="subagent-metrics", daemon=True)
        self._thread.start()
        host, port = server.server_address[:2]
        self.host = str(host)
        self.port = int(port)
        self.url = f"{scheme}://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(registry: CollectorRegistry, config: PrometheusConfig) -> MetricsServer:
    """Start serving ``registry`` as configured; configuration problems raise ``ConfigError``."""
    app: _WsgiApp = make_wsgi_app(registry)
    if config.basic_auth is not None:
        password = os.environ.get(config.basic_auth.password_env)
        if not password:
            env = config.basic_auth.password_env
            msg = f"telemetry.prometheus.basic_auth.password_env: environment variable {env} is not set"
            raise ConfigError(msg)
        app = _basic_auth(app, config.basic_auth.username, password)
    try:
        server = make_server(
            config.listen_address, config.port, app, _ThreadingServer, handler_class=_QuietHandler
        )
    except OSError as exc:
        where = f"{config.listen_address}:{config.port}"
        msg = (
            f"telemetry.prometheus: cannot listen on {where}: {exc.strerror or exc}; "
            "choose another telemetry.prometheus.port or listen_address"
        )
        raise ConfigError(msg) from None
    scheme = "http"
    if config.tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(str(config.tls.cert_file), str(config.tls.key_file))
        except (OSError, ssl.SSLError) as exc:
            server.server_close()
            msg = (
                f"telemetry.prometheus.tls: cannot load {config.tls.cert_file} / {config.tls.key_file}: {exc}"
            )
            raise ConfigError(msg) from None
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    return MetricsServer(server, scheme)

"""The /metrics listener: prometheus_client's WSGI app (content negotiation, OpenMetrics, gzip) behind
optional TLS and basic auth, on a threaded server in a daemon thread.

Scrapers must never hurt the agent: the accept thread only accepts (the TLS handshake runs in the
connection's own thread), every connection has a deadline for its handshake and request and another for
its response, and at most ``max_connections`` are open at once (more are closed at accept), so idle or
slow clients cannot block scrapes, hang ``close()`` or use up the process's file descriptors.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import io
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, make_wsgi_app

from .._config import PrometheusConfig
from .._errors import ConfigError

_WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_log = logging.getLogger("subagent_telemetry")
#: Largest piece written at once, so a client that reads slowly meets the deadline between pieces.
_WRITE_CHUNK_BYTES = 64 * 1024
_BUSY = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _Deadline:
    """Monotonic time by which a phase of a connection must end."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def restart(self) -> None:
        self.at = time.monotonic() + self.seconds

    def arm(self, sock: socket.socket) -> None:
        """Let the next socket operation wait at most until the deadline; raise once it has passed."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError("connection deadline passed")
        sock.settimeout(left)


class _DeadlineReader(io.RawIOBase):
    """Reads the request; a client that trickles bytes still meets the deadline."""

    def __init__(self, sock: socket.socket, deadline: _Deadline) -> None:
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._deadline.arm(self._sock)
        return self._sock.recv_into(buffer)


class _DeadlineWriter(io.BufferedIOBase):
    """Writes the response within its own deadline, started at the first write."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self._sock = sock
        self._seconds = seconds
        self._deadline: _Deadline | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self._deadline is None:
            self._deadline = _Deadline(self._seconds)
        view = memoryview(data).cast("B")
        try:
            for start in range(0, len(view), _WRITE_CHUNK_BYTES):
                self._deadline.arm(self._sock)
                self._sock.sendall(view[start : start + _WRITE_CHUNK_BYTES])
        except TimeoutError:
            # wsgiref treats an aborted connection as the client's doing: no traceback on stderr.
            raise ConnectionAbortedError("client too slow to read the response") from None
        return len(view)


class _Handler(WSGIRequestHandler):
    server: _Server

    def setup(self) -> None:
        server = self.server
        deadline = _Deadline(server.timeout_seconds)
        conn: socket.socket = self.request
        server.track(self.request, conn)
        if server.tls_context is not None:
            deadline.arm(conn)  # Since 3.5 the socket timeout bounds the whole handshake.
            conn = server.tls_context.wrap_socket(conn, server_side=True)
        self.connection = conn
        server.track(self.request, conn)
        self.rfile = io.BufferedReader(_DeadlineReader(conn, deadline))
        self.wfile = _DeadlineWriter(conn, server.timeout_seconds)

    def finish(self) -> None:
        try:
            with contextlib.suppress(OSError):
                super().finish()
        finally:
            if self.connection is not self.request:  # The TLS socket took over the descriptor.
                self.connection.close()

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False  # close() ends the open connections instead of waiting for them.
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        *,
        timeout_seconds: float,
        max_connections: int,
        tls_context: ssl.SSLContext | None,
    ) -> None:
        self.timeout_seconds = timeout_seconds
        self.tls_context = tls_context
        self._slots = threading.BoundedSemaphore(max_connections)
        self._open: dict[socket.socket, socket.socket] = {}
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # No thread started: it will not give the slot back.
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                self._open.pop(request, None)
            self._slots.release()

    def track(self, request: socket.socket, conn: socket.socket) -> None:
        with self._open_lock:
            self._open[request] = conn

    def _refuse(self, request: socket.socket) -> None:
        """Over the cap: answer 503 when that cannot block (plain HTTP) and close at once."""
        if self.tls_context is None:
            with contextlib.suppress(OSError):
                request.setblocking(False)
                request.send(_BUSY)
        self.shutdown_request(request)

    def close_connections(self) -> None:
        """End every open connection now; their threads see end-of-file or an error and finish."""
        with self._open_lock:
            conns = list(self._open.values())
        for conn in conns:
            # The plain socket call: SSLSocket.shutdown would also drop its TLS state.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(conn, socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that timed out, hung up or failed the handshake is not worth a traceback."""
        _log.debug("subagent_telemetry: /metrics connection from %s ended early", client_address)


def _basic_auth(app: _WsgiApp, username: str, password: str) -> _WsgiApp:
    expected = f"{username}:{password}".encode()

    def authorized(header: str) -> bool:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "basic":  # RFC 9110: the scheme is case-insensitive.
            return False
        try:
            given = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, expected)

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not authorized(environ.get("HTTP_AUTHORIZATION", "")):
            start_response(
                "401 Unauthorized",
                [("WWW-Authenticate", 'Basic realm="metrics"'), ("Content-Type", "text/plain")],
            )
            return [b"Unauthorized\n"]
        return app(environ, start_response)

    return guarded


class MetricsServer:
    """A running /metrics listener. ``close()`` stops it within about a second."""

    def __init__(self, server: _Server, scheme: str) -> None:
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="subagent-metrics", daemon=True
        )
        self._thread.start()
        host, port = server.server_address[:2]
        self.host = str(host)
        self.port = int(port)
        self.url = f"{scheme}://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop listening and close the socket; idempotent."""
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join(timeout=5)


def _tls_context(config: PrometheusConfig) -> ssl.SSLContext | None:
    if config.tls is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(config.tls.cert_file), str(config.tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        msg = f"telemetry.prometheus.tls: cannot load {config.tls.cert_file} / {config.tls.key_file}: {exc}"
        raise ConfigError(msg) from None
    return context


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
    tls_context = _tls_context(config)
    try:
        server = _Server(
            (config.listen_address, config.port),
            timeout_seconds=config.timeout_seconds,
            max_connections=config.max_connections,
            tls_context=tls_context,
        )
    except OSError as exc:
        where = f"{config.listen_address}:{config.port}"
        msg = (
            f"telemetry.prometheus: cannot listen on {where}: {exc.strerror or exc}; "
            "choose another telemetry.prometheus.port or listen_address"
        )
        raise ConfigError(msg) from None
    server.set_app(app)
    return MetricsServer(server, "https" if tls_context is not None else "http")

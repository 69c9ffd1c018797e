"""HTTP to the Pushgateway under one deadline for the whole exchange.

A socket timeout bounds each read, so a gateway that trickles bytes can keep a request busy for ever;
here a timer shuts down every socket the exchange opened once its time is up, and each socket operation
waits at most for the time left.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any


class PushDeadline:
    """One deadline for every request made through ``open()``; ``cancel()`` when done."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._expired = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def left(self) -> float:
        """Seconds left; ``TimeoutError`` once none are."""
        left = self._end - time.monotonic()
        if left <= 0 or self._expired:
            msg = f"no answer within {self.seconds:g}s"
            raise TimeoutError(msg)
        return left

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            expired = self._expired
        if expired:
            _cut(sock)

    def _expire(self) -> None:
        with self._lock:
            self._expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _cut(sock)

    def cancel(self) -> None:
        self._timer.cancel()

    def open(self, request: urllib.request.Request) -> bytes:
        """Send ``request`` and read the whole answer before the deadline; HTTP errors raise."""
        opener = _opener(self)
        try:
            with opener.open(request, timeout=self.left()) as response:
                body: bytes = response.read()
        except OSError:
            self.left()  # Past the deadline, say so rather than "connection reset".
            raise
        self.left()
        return body


def _cut(sock: socket.socket) -> None:
    # The plain socket call works on TLS sockets too: the blocked read in the other thread ends.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _tracked(connection_class: type[http.client.HTTPConnection], deadline: PushDeadline) -> Any:
    class Tracked(connection_class):  # type: ignore[valid-type,misc]
        def connect(self) -> None:
            super().connect()
            deadline.track(self.sock)

    return Tracked


class _Tracking:
    """Makes an urllib handler register every connection it opens with the deadline."""

    deadline: PushDeadline

    def do_open(self, http_class: Any, req: Any, **http_conn_args: Any) -> Any:
        tracked = _tracked(http_class, self.deadline)
        return super().do_open(tracked, req, **http_conn_args)  # type: ignore[misc]


class _TrackedHTTPHandler(_Tracking, urllib.request.HTTPHandler):
    pass


class _TrackedHTTPSHandler(_Tracking, urllib.request.HTTPSHandler):
    pass


def _opener(deadline: PushDeadline) -> urllib.request.OpenerDirector:
    handlers: list[_Tracking] = [_TrackedHTTPHandler(), _TrackedHTTPSHandler()]
    for handler in handlers:
        handler.deadline = deadline
    return urllib.request.build_opener(*handlers)  # type: ignore[arg-type]


def handler_within(deadline: PushDeadline) -> Callable[..., Callable[[], None]]:
    """A prometheus_client push handler whose request ends by ``deadline``."""

    def handler(
        url: str, method: str, timeout: float | None, headers: Sequence[tuple[str, str]], data: bytes
    ) -> Callable[[], None]:
        def send() -> None:
            request = urllib.request.Request(url, data=data, method=method, headers=dict(headers))
            deadline.open(request)

        return send

    return handler

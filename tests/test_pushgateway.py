"""Batch pushes against a misbehaving gateway: the push as a whole keeps its deadline."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from subagent_telemetry import SubagentTelemetry
from subagent_telemetry.fleet import BatchPush
from tests.conftest import make_config

_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Slow: " + b"a" * 100 + b"\r\n\r\n"


@pytest.fixture
def trickling_gateway() -> Iterator[str]:
    """A gateway that answers every request one byte every 0.1 s (about 11 s per answer)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def answer(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            for byte in _RESPONSE:
                if stop.wait(0.1):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    server.join(timeout=5)
    listener.close()


@pytest.mark.parametrize("success", [True, False], ids=["succeeded", "failed"])
def test_push_to_a_trickling_gateway_gives_up_at_timeout_seconds(
    trickling_gateway: str, registry: CollectorRegistry, success: bool
) -> None:
    """timeout_seconds bounds the whole push (the failed run's read-back included), not each read."""
    tel = SubagentTelemetry(make_config(), registry=registry)
    batch = BatchPush(tel, trickling_gateway, "nightly-eval", timeout_seconds=1.0)
    started = time.monotonic()
    assert batch.push(success=success) is False
    assert time.monotonic() - started < 2.0

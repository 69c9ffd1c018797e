"""A loopback TCP proxy for failure tests: lose a reply, go down, add latency, or switch target."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target_port``.

    ``drop_next_reply()``: the next bytes the server sends (optionally: the next containing
    ``containing``) are discarded and the client connection is closed (the server already ran the
    command: a lost reply); with ``then_down`` the proxy goes down at that moment. ``set_down(True)``:
    open connections are closed and new ones are closed as soon as they are accepted (the store is
    unreachable). ``delay_seconds``: each reply is held that long before it is forwarded (latency per
    round trip). ``retarget(port)``: new connections go to another server and open ones are closed (a
    failover behind a stable address).
    """

    def __init__(self, target_port: int, delay_seconds: float = 0.0) -> None:
        self.target_port = target_port
        self.delay_seconds = delay_seconds
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.port: int = self._listener.getsockname()[1]
        self._drop: bytes | None = None
        self._down_after_drop = False
        self.down = False
        self.dropped = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def drop_next_reply(self, containing: bytes = b"", then_down: bool = False) -> None:
        self._down_after_drop = then_down
        self._drop = containing

    def set_down(self, down: bool) -> None:
        self.down = down
        if down:
            self.close_connections()

    def retarget(self, target_port: int) -> None:
        self.target_port = target_port
        self.close_connections()

    def close_connections(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.close_connections()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.down:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2.0)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        try:
            while data := src.recv(65536):
                drop = self._drop
                if replies and drop is not None and drop in data:
                    self._drop = None
                    self.dropped += 1
                    if self._down_after_drop:
                        self.set_down(True)
                    break
                if replies and self.delay_seconds:
                    time.sleep(self.delay_seconds)
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

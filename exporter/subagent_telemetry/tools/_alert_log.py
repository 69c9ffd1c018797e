"""A webhook receiver for Alertmanager that prints one line per alert: the local stack's default receiver.

``python -m subagent_telemetry.tools._alert_log --port 9095`` serves ``POST /alerts`` (Alertmanager's webhook
payload, version 4) and ``GET /-/healthy``. ``subagent-telemetry stack up`` runs the same server in a
thread, so alerts show up in the terminal that started the stack.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO

#: Bodies above this size are refused; Alertmanager batches alerts, but not this many.
MAX_BODY_BYTES = 10 * 1024 * 1024


def format_alert(alert: dict[str, Any]) -> str:
    """``FIRING SubagentHighErrorRate severity=critical job=x: summary`` for one webhook alert."""
    labels = dict(alert.get("labels") or {})
    name = labels.pop("alertname", "?")
    shown = " ".join(f"{key}={value}" for key, value in sorted(labels.items()))
    summary = (alert.get("annotations") or {}).get("summary", "")
    status = str(alert.get("status", "?")).upper()
    return f"{status} {name} {shown}: {summary}".rstrip(": ")


def _handler(emit: Callable[[str], None]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._reply(200 if self.path == "/-/healthy" else 404)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if self.path != "/alerts" or not 0 < length <= MAX_BODY_BYTES:
                self._reply(404 if self.path != "/alerts" else 400)
                return
            try:
                payload = json.loads(self.rfile.read(length))
                alerts = payload["alerts"]
            except (ValueError, KeyError, TypeError):
                self._reply(400)
                return
            for alert in alerts:
                emit(format_alert(alert))
            self._reply(200)

        def _reply(self, code: int) -> None:
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Requests are not worth a log line each; the alerts are printed."""

    return Handler


class AlertLog:
    """A running receiver; ``url`` is what Alertmanager's ``webhook_configs`` should post to."""

    def __init__(self, listen_address: str = "127.0.0.1", port: int = 0, out: TextIO | None = None) -> None:
        stream = out or sys.stdout
        lock = threading.Lock()

        def emit(line: str) -> None:
            with lock:
                print(f"alert: {line}", file=stream, flush=True)

        self._server = ThreadingHTTPServer((listen_address, port), _handler(emit))
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://{listen_address}:{self.port}/alerts"
        self._thread = threading.Thread(target=self._server.serve_forever, name="alert-log", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the alerts Alertmanager sends to this webhook.")
    parser.add_argument("--listen-address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9095)
    args = parser.parse_args(argv)
    log = AlertLog(args.listen_address, args.port)
    print(f"alert-log: listening on {log.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

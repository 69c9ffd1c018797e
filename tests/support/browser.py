"""Headless Chromium for tests, driven over the DevTools protocol on a pipe (no extra Python packages).

``open_page`` loads a URL the way a person would see it, collects every console error, uncaught
exception and error log entry the page produces, evaluates expressions in it, and takes screenshots.
Chromium runs with the flags this machine needs (no sandbox as root, no background networking) and a
fresh profile folder.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.servers import system_tool

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


class Page:
    """One tab of a headless Chromium, attached over the DevTools pipe."""

    def __init__(self, to_browser: int, from_browser: int) -> None:
        self._out = to_browser
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._replies: dict[int, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._next_id = 0
        self._session: str | None = None
        self.console_errors: list[str] = []
        self._loaded = threading.Event()
        self._reader = threading.Thread(target=self._read, args=(from_browser,), daemon=True)
        self._reader.start()

    def _read(self, fd: int) -> None:
        buffer = b""
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                self._dispatch(json.loads(raw))

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "id" in message:
            with self._cond:
                self._replies[message["id"]] = message
                self._cond.notify_all()
            return
        method, params = message.get("method", ""), message.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in {"error", "assert"}:
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console_errors.append(f"console.{params['type']}: {args}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "")
            self.console_errors.append(f"uncaught: {text}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.console_errors.append(f"log: {entry.get('text', '')} {entry.get('url', '')}".strip())
        elif method == "Page.loadEventFired":
            self._loaded.set()

    def send(
        self, method: str, params: dict[str, Any] | None = None, *, timeout_seconds: float = 30.0
    ) -> Any:
        """One DevTools command; its ``result`` (raises on a protocol error)."""
        with self._cond:
            self._next_id += 1
            ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if self._session is not None and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self._session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout_seconds
        with self._cond:
            while ident not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0:
                    msg = f"no reply to {method} in {timeout_seconds}s"
                    raise TimeoutError(msg)
                self._cond.wait(left)
            reply = self._replies.pop(ident)
        if "error" in reply:
            msg = f"{method}: {reply['error']}"
            raise RuntimeError(msg)
        return reply.get("result", {})

    def attach(self, width: int, height: int) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.send(f"{domain}.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def goto(self, url: str, timeout_seconds: float = 30.0) -> None:
        """Navigate and wait for the load event (images and inline scripts done)."""
        self._loaded.clear()
        self.send("Page.navigate", {"url": url})
        if not self._loaded.wait(timeout_seconds):
            msg = f"{url} did not finish loading in {timeout_seconds}s"
            raise TimeoutError(msg)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            msg = f"{expression}: {result['exceptionDetails']}"
            raise RuntimeError(msg)
        return result["result"].get("value")

    def screenshot(self, path: Path, *, full_page: bool = True) -> Path:
        """A PNG of the page (the whole scroll height with ``full_page``)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            height = int(self.evaluate("document.documentElement.scrollHeight"))
            width = int(self.evaluate("document.documentElement.scrollWidth"))
            params["clip"] = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
            params["captureBeyondViewport"] = True
        data = self.send("Page.captureScreenshot", params)["data"]
        path.write_bytes(base64.b64decode(data))
        return path


@contextlib.contextmanager
def open_page(url: str, *, width: int = 1280, height: int = 900) -> Iterator[Page]:
    """A fresh headless Chromium showing ``url``; closed (process reaped, profile deleted) on exit."""
    binary = system_tool(["chromium", "chromium-browser"])
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()
    # Chromium reads commands on fd 3 and writes replies on fd 4. (The originals stay open in the child:
    # closing them could close 3 or 4 themselves when the pipes got those numbers.)
    command = f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w}'
    process = subprocess.Popen(
        ["bash", "-c", command, binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe"],
        pass_fds=(to_browser_r, from_browser_w),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(to_browser_r)
    os.close(from_browser_w)
    page = Page(to_browser_w, from_browser_r)
    try:
        page.attach(width, height)
        page.goto(url)
        yield page
    finally:
        with contextlib.suppress(Exception):
            page.send("Browser.close", timeout_seconds=5)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        os.close(to_browser_w)
        os.close(from_browser_r)
        shutil.rmtree(profile, ignore_errors=True)


def terminal_png(screen: str, path: Path, *, columns: int = 120) -> Path:
    """A PNG of a captured terminal screen (``capture-pane -e`` text with its colours), drawn by
    Chromium from rich's HTML export of the ANSI text."""
    from rich.console import Console
    from rich.terminal_theme import MONOKAI
    from rich.text import Text

    console = Console(
        record=True, width=columns, force_terminal=True, color_system="truecolor", file=io.StringIO()
    )
    console.print(Text.from_ansi(screen.rstrip("\n") + "\n"), end="")
    page_file = path.with_suffix(".html")
    page_file.write_text(
        console.export_html(theme=MONOKAI, inline_styles=True, code_format=_TERMINAL_PAGE),
        encoding="utf-8",
    )
    with open_page(page_file.as_uri(), width=columns * 9 + 40, height=200) as page:
        page.screenshot(path)
    page_file.unlink()
    return path


_TERMINAL_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'>"
    "<style>body{{margin:0;background:{background};color:{foreground}}}"
    "pre{{margin:0;padding:12px;font:14px/1.25 'DejaVu Sans Mono',monospace;display:inline-block}}"
    "</style></head><body><pre><code>{code}</code></pre></body></html>"
)


def screenshot_dir() -> Path | None:
    """Where tests save the screenshots docs/operations.md shows (``SUBAGENT_TELEMETRY_SCREENSHOTS``)."""
    folder = os.environ.get("SUBAGENT_TELEMETRY_SCREENSHOTS")
    if not folder:
        return None
    path = Path(folder).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path

"""A real terminal for tests: a program run in a detached tmux session, typed at and read back.

Each session uses its own tmux server socket (``-L``), so tests never touch a user's tmux; the server
is killed when the session is closed.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from types import TracebackType

from tests.support.servers import system_tool


class TmuxSession:
    """``tmux new-session -d -x WIDTH -y HEIGHT`` running ``command``; closes with the ``with`` block."""

    def __init__(self, command: Sequence[str], *, width: int = 120, height: int = 40) -> None:
        self.tmux = system_tool(["tmux"])
        self.socket = f"subagent-test-{uuid.uuid4().hex[:12]}"
        self.name = "t"
        self.width, self.height = width, height
        # No user config; the pane stays after the program exits only if we ask (we do not).
        self._run(
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            str(width),
            "-y",
            str(height),
            "-s",
            self.name,
            shlex.join(command),
        )

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # COLUMNS/LINES (set by some test runners) would override the terminal's real size.
        env = {k: v for k, v in os.environ.items() if k not in {"COLUMNS", "LINES"}}
        return subprocess.run(
            [self.tmux, "-L", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=check,
            env=env,
        )

    def alive(self) -> bool:
        """Whether the program still runs (tmux ends the session when it exits)."""
        return self._run("has-session", "-t", self.name, check=False).returncode == 0

    def send_keys(self, *keys: str) -> None:
        self._run("send-keys", "-t", self.name, *keys)

    def screen(self, *, ansi: bool = False) -> str:
        """The visible screen, one line per terminal row (``capture-pane -p``; with colours: ``-e``)."""
        return self._run("capture-pane", "-p", *(["-e"] if ansi else []), "-t", self.name).stdout

    def wait_for_screen(self, predicate: Callable[[str], bool], timeout_seconds: float = 20.0) -> str:
        """Poll the screen until ``predicate`` holds; the last screen is in the error otherwise."""
        deadline = time.monotonic() + timeout_seconds
        screen = ""
        while time.monotonic() < deadline:
            if not self.alive():
                msg = f"the program exited; last screen:\n{screen}"
                raise AssertionError(msg)
            screen = self.screen()
            if predicate(screen):
                return screen
            time.sleep(0.2)
        msg = f"screen condition not met after {timeout_seconds}s; last screen:\n{screen}"
        raise AssertionError(msg)

    def wait_for_exit(self, timeout_seconds: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if not self.alive():
                return True
            time.sleep(0.1)
        return False

    def close(self) -> None:
        self._run("kill-server", check=False)

    def __enter__(self) -> TmuxSession:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

"""Start real servers (Prometheus, Alertmanager, VictoriaMetrics, Pushgateway, Redis) for tests.

Binaries come from `scripts/install-tools.sh` (``$SUBAGENT_TELEMETRY_TOOLS/bin``, default
``<repo>/.tools/bin``), then PATH. Every server listens on a free 127.0.0.1 port and keeps its data
and log under the test's ``tmp_path``; no process outlives the test session.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_COMMAND = "bash scripts/install-tools.sh  (or: make tools)"

# Debian installs some binaries under a prefixed name; install-tools.sh links the short one.
_SYSTEM_NAMES = {
    "alertmanager": ("alertmanager", "prometheus-alertmanager"),
    "pushgateway": ("pushgateway", "prometheus-pushgateway"),
}

T = TypeVar("T")


class ServerStartError(RuntimeError):
    """A managed process exited or did not become ready in time."""


class PromQueryError(RuntimeError):
    """The Prometheus HTTP API answered with a non-success status."""


def tools_dir() -> Path:
    """Folder that install-tools.sh fills (its binaries are in ``bin/``)."""
    return Path(os.environ.get("SUBAGENT_TELEMETRY_TOOLS", str(REPO_ROOT / ".tools")))


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"true", "1"}


def tool(name: str) -> str:
    """Path of the tool `name`; skips the test when missing (fails it in CI, which must have it)."""
    local = tools_dir() / "bin" / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    for candidate in _SYSTEM_NAMES.get(name, (name,)):
        found = shutil.which(candidate)
        if found:
            return found
    msg = f"{name} not found in {local.parent} or on PATH; install it with: {INSTALL_COMMAND}"
    if _in_ci():
        pytest.fail(msg)
    pytest.skip(msg)


def system_tool(names: Sequence[str]) -> str:
    """Path of a Debian package's binary (the first of ``names`` on PATH); skips the test when missing
    (fails it in CI, where scripts/install-system-deps.sh installs it)."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    msg = f"{names[0]} not found on PATH; install it with: bash scripts/install-system-deps.sh (as root)"
    if _in_ci():
        pytest.fail(msg)
    pytest.skip(msg)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return 200 <= int(response.status) < 300
    except (OSError, ValueError):  # URLError and HTTPError are OSErrors.
        return False


def redis_ping(port: int, host: str = "127.0.0.1") -> bool:
    """True when a Redis server on `port` answers PING with PONG."""
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


_live: set[ManagedProcess] = set()


class ManagedProcess:
    """A child process with its output in a log file; stopped on `stop()`, `with` exit or at exit."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        workdir: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Start `args` in `workdir` (created), with `env` added to the current environment."""
        self.name = name
        self.args = list(args)
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.args,
                cwd=workdir,
                env={**os.environ, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _live.add(self)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _failure(self, what: str) -> ServerStartError:
        msg = f"{self.name} (pid {self.pid}) {what}; command: {self.args}\n--- log tail ---\n"
        return ServerStartError(msg + self.log_tail())

    def wait_ready(
        self,
        url: str | None = None,
        tcp_port: int | None = None,
        timeout_seconds: float = 30.0,
        probe: Callable[[], bool] | None = None,
    ) -> None:
        """Poll until `url` answers 2xx, `tcp_port` accepts, or `probe()` is true (all given ones)."""
        checks: list[Callable[[], bool]] = []
        if url is not None:
            checks.append(lambda: _http_ok(url))
        if tcp_port is not None:
            checks.append(lambda: _tcp_open(tcp_port))
        if probe is not None:
            checks.append(probe)
        if not checks:
            msg = "wait_ready needs url, tcp_port or probe"
            raise ValueError(msg)
        deadline = time.monotonic() + timeout_seconds
        while True:
            if not self.running():
                raise self._failure(f"exited with code {self.process.returncode}")
            if all(check() for check in checks):
                return
            if time.monotonic() > deadline:
                raise self._failure(f"not ready after {timeout_seconds}s")
            time.sleep(0.1)

    def stop(self, timeout_seconds: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after `timeout_seconds`; reaps the pid and returns the exit code."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_seconds)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self.process.wait()
        _live.discard(self)
        return self.process.returncode

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    for process in list(_live):
        process.stop(timeout_seconds=5.0)


@dataclass(frozen=True)
class RunningServer:
    """A started server: its process, its port on 127.0.0.1 and its base URL (no trailing slash)."""

    process: ManagedProcess
    port: int
    url: str

    @property
    def workdir(self) -> Path:
        return self.process.workdir

    def stop(self) -> int:
        return self.process.stop()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _workdir(tmp_path: Path, name: str) -> Path:
    # One folder per start, so a test may run two servers of a kind.
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=tmp_path))


def _start(
    name: str,
    args: Sequence[str],
    *,
    workdir: Path,
    port: int,
    url: str,
    ready: Callable[[ManagedProcess], None],
) -> RunningServer:
    process = ManagedProcess(name, args, workdir=workdir)
    try:
        ready(process)
    except BaseException:
        process.stop()
        raise
    return RunningServer(process=process, port=port, url=url)


def start_prometheus(
    tmp_path: Path, config_yaml: str, extra_args: Sequence[str] = (), data_dir: Path | None = None
) -> RunningServer:
    """Prometheus with `config_yaml`, lifecycle API on (POST /-/reload), ready on /-/ready; its TSDB in
    `data_dir` when given (e.g. blocks backfilled by promtool), else in a fresh folder."""
    binary = tool("prometheus")
    workdir = _workdir(tmp_path, "prometheus")
    config = workdir / "prometheus.yml"
    config.write_text(config_yaml)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={data_dir or workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        *extra_args,
    ]
    return _start(
        "prometheus",
        args,
        workdir=workdir,
        port=port,
        url=url,
        ready=lambda p: p.wait_ready(f"{url}/-/ready"),
    )


def start_alertmanager(tmp_path: Path, config_yaml: str, extra_args: Sequence[str] = ()) -> RunningServer:
    """Alertmanager with `config_yaml`, clustering off, ready on /-/ready."""
    binary = tool("alertmanager")
    workdir = _workdir(tmp_path, "alertmanager")
    config = workdir / "alertmanager.yml"
    config.write_text(config_yaml)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        binary,
        f"--config.file={config}",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # Empty disables gossip, which would take another port.
        *extra_args,
    ]
    return _start(
        "alertmanager",
        args,
        workdir=workdir,
        port=port,
        url=url,
        ready=lambda p: p.wait_ready(f"{url}/-/ready"),
    )


def start_victoria_metrics(tmp_path: Path, extra_args: Sequence[str] = ()) -> RunningServer:
    """Single-node VictoriaMetrics, ready on /health; samples are queryable at once."""
    binary = tool("victoria-metrics")
    workdir = _workdir(tmp_path, "victoria-metrics")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        binary,
        f"-storageDataPath={workdir / 'data'}",
        f"-httpListenAddr=127.0.0.1:{port}",
        # By default queries hide the last 30s, so freshly written samples would not be seen.
        "-search.latencyOffset=0s",
        *extra_args,
    ]
    return _start(
        "victoria-metrics",
        args,
        workdir=workdir,
        port=port,
        url=url,
        ready=lambda p: p.wait_ready(f"{url}/health"),
    )


def start_pushgateway(tmp_path: Path, extra_args: Sequence[str] = ()) -> RunningServer:
    """Prometheus Pushgateway, ready on /-/ready."""
    binary = tool("pushgateway")
    workdir = _workdir(tmp_path, "pushgateway")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [binary, f"--web.listen-address=127.0.0.1:{port}", *extra_args]
    return _start(
        "pushgateway",
        args,
        workdir=workdir,
        port=port,
        url=url,
        ready=lambda p: p.wait_ready(f"{url}/-/ready"),
    )


def start_redis(tmp_path: Path, extra_args: Sequence[str] = ()) -> RunningServer:
    """Redis without persistence; `url` is ``redis://127.0.0.1:PORT``; ready when PING gets PONG."""
    binary = tool("redis-server")
    workdir = _workdir(tmp_path, "redis")
    port = free_port()
    args = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        *extra_args,
    ]
    return _start(
        "redis",
        args,
        workdir=workdir,
        port=port,
        url=f"redis://127.0.0.1:{port}",
        ready=lambda p: p.wait_ready(probe=lambda: redis_ping(port)),
    )


def _redis_info(port: int, section: str) -> dict[str, str]:
    """``INFO section`` (or ``CLUSTER INFO`` for "cluster") of the Redis on ``port``, as a dict."""
    command = b"CLUSTER INFO\r\n" if section == "cluster" else f"INFO {section}\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
        sock.sendall(command)
        header = b""
        while not header.endswith(b"\r\n"):
            header += sock.recv(1)
        size = int(header[1:-2])
        body = b""
        while len(body) < size + 2:
            body += sock.recv(size + 2 - len(body))
    pairs = (line.split(":", 1) for line in body.decode().splitlines() if ":" in line)
    return dict(pairs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class RunningCluster:
    """A Redis Cluster on 127.0.0.1: ``nodes`` (masters first, then one replica per master at start)."""

    nodes: list[RunningServer]
    masters: int

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL (any node: the client discovers the others)."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def ready(self) -> bool:
        """Every node sees the cluster ok, and every replica's link to its master is up."""
        for node in self.nodes:
            if not node.process.running():
                return False
            if _redis_info(node.port, "cluster").get("cluster_state") != "ok":
                return False
            replication = _redis_info(node.port, "replication")
            if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                return False
        return True

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RunningCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_redis_cluster(tmp_path: Path, masters: int = 3, replicas: int = 1) -> RunningCluster:
    """Redis Cluster: ``masters`` masters with ``replicas`` replicas each, every node on free loopback
    ports (client and cluster bus), created with ``redis-cli --cluster create``; ready when every node
    reports ``cluster_state:ok`` and every replica is in sync."""
    binary, cli = tool("redis-server"), tool("redis-cli")
    nodes: list[RunningServer] = []
    try:
        for _ in range(masters * (1 + replicas)):
            workdir = _workdir(tmp_path, "redis-cluster")
            port, bus = free_port(), free_port()
            args = [
                binary, "--port", str(port), "--cluster-port", str(bus), "--bind", "127.0.0.1",
                "--cluster-enabled", "yes", "--cluster-config-file", str(workdir / "nodes.conf"),
                "--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no",
                "--repl-diskless-sync-delay", "0", "--dir", str(workdir),
            ]  # fmt: skip
            nodes.append(
                _start(
                    "redis",
                    args,
                    workdir=workdir,
                    port=port,
                    url=f"redis://127.0.0.1:{port}",
                    ready=lambda p, port=port: p.wait_ready(probe=lambda: redis_ping(port)),
                )
            )
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        created = subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", str(replicas), "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if created.returncode != 0:
            msg = (
                f"redis-cli --cluster create failed ({created.returncode}):\n{created.stdout}{created.stderr}"
            )
            raise ServerStartError(msg)
        cluster = RunningCluster(nodes=nodes, masters=masters)
        wait_for(cluster.ready, 30.0, 0.1)
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return cluster


def promtool_check_metrics(text: str) -> tuple[int, str]:
    """Run `promtool check metrics` on `text`; return its exit code and combined output."""
    result = subprocess.run(
        [tool("promtool"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def _api_get(base_url: str, path: str, params: Mapping[str, str], timeout_seconds: float) -> dict[str, Any]:
    url = f"{base_url.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_seconds) as response:
            body = response.read()
    except urllib.error.HTTPError as err:
        # Bad queries come back as 400/422 with the reason in a JSON body.
        body = err.read()
        if not body:
            msg = f"GET {url}: HTTP {err.code} {err.reason}"
            raise PromQueryError(msg) from None
    try:
        payload = json.loads(body)
    except json.JSONDecodeError:
        msg = f"GET {url}: not JSON: {body[:200]!r}"
        raise PromQueryError(msg) from None
    if payload.get("status") != "success":
        msg = f"GET {url}: {payload.get('errorType', '?')}: {payload.get('error', payload)}"
        raise PromQueryError(msg)
    data: dict[str, Any] = payload["data"]
    return data


def _series(data: dict[str, Any]) -> list[dict[str, Any]]:
    result = data["result"]
    if data.get("resultType") in {"scalar", "string"}:
        # A scalar is one bare [time, "value"] pair; give it the shape of a vector sample.
        return [{"metric": {}, "value": result}]
    series: list[dict[str, Any]] = result
    return series


def prom_query(
    base_url: str,
    expr: str,
    *,
    time_unix_seconds: float | None = None,
    timeout_seconds: float = 10.0,
) -> list[dict[str, Any]]:
    """Instant query; each item has ``metric`` (labels) and ``value`` ([time, "value"])."""
    params = {"query": expr}
    if time_unix_seconds is not None:
        params["time"] = str(time_unix_seconds)
    return _series(_api_get(base_url, "/api/v1/query", params, timeout_seconds))


def prom_query_range(
    base_url: str,
    expr: str,
    *,
    start_unix_seconds: float,
    end_unix_seconds: float,
    step_seconds: float,
    timeout_seconds: float = 10.0,
) -> list[dict[str, Any]]:
    """Range query; each item has ``metric`` (labels) and ``values`` ([[time, "value"], ...])."""
    params = {
        "query": expr,
        "start": str(start_unix_seconds),
        "end": str(end_unix_seconds),
        "step": str(step_seconds),
    }
    return _series(_api_get(base_url, "/api/v1/query_range", params, timeout_seconds))


def wait_for(
    predicate: Callable[[], T],
    timeout_seconds: float = 30.0,
    interval_seconds: float = 0.2,
) -> T:
    """Call `predicate` until it returns a truthy value, and return that value.

    Connection errors and PromQueryError count as "not yet" (a server may still be starting);
    the last one is reported on timeout.
    """
    deadline = time.monotonic() + timeout_seconds
    last: object = None
    while True:
        try:
            value = predicate()
        except (OSError, PromQueryError) as err:
            last = err
        else:
            if value:
                return value
            last = value
        if time.monotonic() > deadline:
            msg = f"condition not met after {timeout_seconds}s; last result: {last!r}"
            raise TimeoutError(msg)
        time.sleep(interval_seconds)

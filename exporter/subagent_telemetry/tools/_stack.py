"""The local stack without Docker: the demo agent, Prometheus and Alertmanager on loopback ports.

It runs the compose stack's own configs (``compose/prometheus/prometheus.yml``,
``compose/alertmanager/alertmanager.yml``) with the compose service names rewritten to 127.0.0.1 ports
and the compose bind mounts resolved to repository paths, so what runs here is what ``docker compose up``
runs, minus Grafana. Prometheus and Alertmanager come from the project's tools folder
(``$SUBAGENT_TELEMETRY_TOOLS/bin``, default ``.tools/bin``; ``make tools``), then PATH. Alertmanager's
default webhook receiver (the compose ``alert-log`` service) runs in this process and prints each alert.

OTLP is left out here: Debian's Prometheus builds lack the OTLP receiver the compose image has, so the
demo is scraped. (To try the OTLP path without Docker, push to VictoriaMetrics; see docs.)
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from .._config import Config
from ._alert_log import AlertLog

LOOPBACK = "127.0.0.1"
TOOLS_ENV = "SUBAGENT_TELEMETRY_TOOLS"
#: The compose services this stack runs, and the port each listens on inside its container.
SERVICE_PORTS: Mapping[str, int] = {"demo": 9464, "prometheus": 9090, "alertmanager": 9093, "alert-log": 9095}
#: Debian installs some binaries under a prefixed name.
_TOOL_ALIASES: Mapping[str, tuple[str, ...]] = {"alertmanager": ("alertmanager", "prometheus-alertmanager")}
_REPO_ROOT = Path(__file__).resolve().parents[3]


class StackError(RuntimeError):
    """The stack could not start: a missing tool or file, or a process that did not become ready."""


@dataclass(frozen=True)
class StackOptions:
    """What ``subagent-telemetry stack up`` starts; a port of 0 means any free port."""

    config_path: Path | None = None
    preset: str | None = None
    compose_dir: Path | None = None
    tools_dir: Path | None = None
    #: Logs, rendered rules and data go here; None = a temporary folder removed on stop.
    workdir: Path | None = None
    demo_port: int = SERVICE_PORTS["demo"]
    prometheus_port: int = SERVICE_PORTS["prometheus"]
    alertmanager_port: int = SERVICE_PORTS["alertmanager"]
    alert_log_port: int = SERVICE_PORTS["alert-log"]
    error_rate: float = 0.05
    rate_per_second: float = 2.0
    session_seconds: float = 120.0
    seed: int | None = None
    #: Override the compose config's global intervals (Prometheus durations), e.g. "1s" in tests.
    scrape_interval: str | None = None
    evaluation_interval: str | None = None
    ready_timeout_seconds: float = 60.0


# --------------------------------------------------------------------------------------------------
# Finding things.


def find_compose_dir(explicit: Path | None = None) -> Path:
    """``explicit``, else ``./compose``, else the checkout this package runs from."""
    candidates = [explicit] if explicit is not None else [Path.cwd() / "compose", _REPO_ROOT / "compose"]
    for candidate in candidates:
        if (candidate / "docker-compose.yml").is_file():
            return candidate.resolve()
    msg = (
        f"no docker-compose.yml in {', '.join(str(c) for c in candidates)}; run from a checkout of the "
        "repository or pass --compose-dir"
    )
    raise StackError(msg)


def tools_dir(explicit: Path | None = None) -> Path:
    """``explicit``, else ``$SUBAGENT_TELEMETRY_TOOLS``, else ``.tools`` in the checkout."""
    if explicit is not None:
        return explicit
    return Path(os.environ.get(TOOLS_ENV) or _REPO_ROOT / ".tools")


def find_tool(name: str, tools: Path) -> str:
    """Path of binary ``name`` in ``tools/bin``, then on PATH."""
    local = tools / "bin" / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    for candidate in _TOOL_ALIASES.get(name, (name,)):
        found = shutil.which(candidate)
        if found:
            return found
    msg = f"{name} not found in {local.parent} or on PATH; install it with `make tools`"
    raise StackError(msg)


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def pick_port(preferred: int) -> int:
    """``preferred`` when it is free, otherwise (or when 0) a free port on 127.0.0.1."""
    if preferred and port_is_free(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------------------------------
# The compose configs, rewritten for loopback.


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def bind_mounts(compose: Mapping[str, Any], service: str, compose_dir: Path) -> dict[str, Path]:
    """The host path of each bind mount of ``service``, keyed by its path in the container."""
    mounts: dict[str, Path] = {}
    for volume in compose["services"][service].get("volumes", ()):
        source, target = str(volume).split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = (compose_dir / source).resolve()
    return mounts


def rewrite_hosts(node: Any, addresses: Mapping[str, str]) -> Any:
    """``node`` with every ``service:port`` in its strings replaced by ``addresses[service:port]``."""
    if isinstance(node, dict):
        return {key: rewrite_hosts(value, addresses) for key, value in node.items()}
    if isinstance(node, list):
        return [rewrite_hosts(item, addresses) for item in node]
    if isinstance(node, str):
        for old, new in addresses.items():
            node = re.sub(rf"(?<![\w.-]){re.escape(old)}(?![0-9])", new, node)
    return node


def _host_path(container_path: str, mounts: Mapping[str, Path]) -> str:
    for target, source in sorted(mounts.items(), key=lambda item: -len(item[0])):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return str(source / Path(container_path).relative_to(target))
    msg = f"{container_path} is not inside a bind mount of the prometheus service"
    raise StackError(msg)


def prometheus_config(
    compose_dir: Path,
    addresses: Mapping[str, str],
    *,
    rules_dir: Path | None = None,
    scrape_interval: str | None = None,
    evaluation_interval: str | None = None,
) -> dict[str, Any]:
    """compose/prometheus/prometheus.yml for loopback; ``rules_dir`` replaces the mounted ``../alerts``."""
    compose = load_yaml(compose_dir / "docker-compose.yml")
    mounts = bind_mounts(compose, "prometheus", compose_dir)
    if rules_dir is not None:
        alerts = (compose_dir / ".." / "alerts").resolve()
        mounts = {target: rules_dir if source == alerts else source for target, source in mounts.items()}
    config: dict[str, Any] = rewrite_hosts(
        load_yaml(compose_dir / "prometheus" / "prometheus.yml"), addresses
    )
    config["rule_files"] = [_host_path(path, mounts) for path in config.get("rule_files", ())]
    config.setdefault("global", {})
    if scrape_interval:
        config["global"]["scrape_interval"] = scrape_interval
    if evaluation_interval:
        config["global"]["evaluation_interval"] = evaluation_interval
    return config


def alertmanager_config(compose_dir: Path, addresses: Mapping[str, str]) -> dict[str, Any]:
    """compose/alertmanager/alertmanager.yml for loopback."""
    config: dict[str, Any] = rewrite_hosts(
        load_yaml(compose_dir / "alertmanager" / "alertmanager.yml"), addresses
    )
    return config


def render_rules_into(config: Config, dest: Path) -> Path:
    """Render ``config``'s Prometheus rule file into ``dest``, named as in the repository's ``alerts/``.

    Only the file Prometheus loads: the other formats and the promtool tests are not needed here.
    """
    from ..render._rules_yaml import dump_yaml as dump_rules  # noqa: PLC0415 - render-only deps
    from ..render.rules import RULES_FILE, rule_groups  # noqa: PLC0415

    groups = rule_groups(config)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / RULES_FILE.name).write_text(
        dump_rules({"groups": [groups.recording, groups.alerting]}), encoding="utf-8"
    )
    return dest


# --------------------------------------------------------------------------------------------------
# Processes.


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return 200 <= int(response.status) < 300
    except (OSError, ValueError):
        return False


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ready_url: str

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


@dataclass
class Stack:
    """The running stack; ``start()`` then ``stop()`` (or use it as a context manager)."""

    options: StackOptions = field(default_factory=StackOptions)
    children: list[_Child] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    workdir: Path = field(init=False)
    _alert_log: AlertLog | None = None
    _own_workdir: bool = False

    @property
    def prometheus_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['prometheus']}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['alertmanager']}"

    @property
    def demo_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['demo']}/metrics"

    def pids(self) -> dict[str, int]:
        return {child.name: child.process.pid for child in self.children}

    def start(self, out: TextIO | None = None) -> None:
        """Start everything and wait until each answers; on any failure stop what started and raise."""
        try:
            self._start(out or sys.stdout)
        except BaseException:
            self.stop()
            raise

    def _start(self, out: TextIO) -> None:
        opts = self.options
        compose_dir = find_compose_dir(opts.compose_dir)
        tools = tools_dir(opts.tools_dir)
        binaries = {name: find_tool(name, tools) for name in ("prometheus", "alertmanager")}
        if opts.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="subagent-stack-"))
            self._own_workdir = True
        else:
            self.workdir = opts.workdir
            self.workdir.mkdir(parents=True, exist_ok=True)
        self._alert_log = AlertLog(LOOPBACK, pick_port(opts.alert_log_port), out=out)
        self.ports = {
            "alert-log": self._alert_log.port,
            "demo": pick_port(opts.demo_port),
            "prometheus": pick_port(opts.prometheus_port),
            "alertmanager": pick_port(opts.alertmanager_port),
        }
        addresses = {f"{svc}:{port}": f"{LOOPBACK}:{self.ports[svc]}" for svc, port in SERVICE_PORTS.items()}
        rules_dir = None
        if opts.config_path is not None or opts.preset is not None:
            rules_dir = render_rules_into(self._config(), self.workdir / "rules")
        prom_yml = self.workdir / "prometheus.yml"
        prom_yml.write_text(
            dump_yaml(
                prometheus_config(
                    compose_dir,
                    addresses,
                    rules_dir=rules_dir,
                    scrape_interval=opts.scrape_interval,
                    evaluation_interval=opts.evaluation_interval,
                )
            )
        )
        am_yml = self.workdir / "alertmanager.yml"
        am_yml.write_text(dump_yaml(alertmanager_config(compose_dir, addresses)))
        self._spawn(
            "alertmanager",
            [
                binaries["alertmanager"],
                f"--config.file={am_yml}",
                f"--storage.path={self.workdir / 'alertmanager-data'}",
                f"--web.listen-address={LOOPBACK}:{self.ports['alertmanager']}",
                "--cluster.listen-address=",  # No gossip: one instance, and no extra port.
            ],
            f"{self.alertmanager_url}/-/ready",
        )
        self._spawn(
            "prometheus",
            [
                binaries["prometheus"],
                f"--config.file={prom_yml}",
                f"--storage.tsdb.path={self.workdir / 'prometheus-data'}",
                f"--web.listen-address={LOOPBACK}:{self.ports['prometheus']}",
                "--web.enable-lifecycle",
            ],
            f"{self.prometheus_url}/-/ready",
        )
        self._spawn("demo", self._demo_command(), self.demo_url)
        self._wait_ready()

    def _config(self) -> Config:
        from .._config import load_config  # noqa: PLC0415

        if self.options.config_path is not None:
            return load_config(self.options.config_path)
        return Config.preset(self.options.preset or "balanced")

    def _demo_command(self) -> list[str]:
        opts = self.options
        command = [sys.executable, "-m", "subagent_telemetry.cli", "demo"]
        if opts.config_path is not None:
            command += ["--config", str(opts.config_path)]
        elif opts.preset is not None:
            command += ["--preset", opts.preset]
        command += ["--listen-address", LOOPBACK, "--port", str(self.ports["demo"])]
        command += ["--error-rate", str(opts.error_rate), "--rate", str(opts.rate_per_second)]
        command += ["--session-seconds", str(opts.session_seconds)]
        if opts.seed is not None:
            command += ["--seed", str(opts.seed)]
        return command

    def _spawn(self, name: str, args: list[str], ready_url: str) -> None:
        log_path = self.workdir / f"{name}.log"
        with log_path.open("wb") as log:
            # A session of its own: Ctrl-C reaches only this process, which then stops each child in turn.
            process = subprocess.Popen(
                args,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.children.append(_Child(name, process, log_path, ready_url))

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.options.ready_timeout_seconds
        pending = list(self.children)
        while pending:
            for child in list(pending):
                if child.process.poll() is not None:
                    msg = f"{child.name} exited with code {child.process.returncode}:\n{child.log_tail()}"
                    raise StackError(msg)
                if _http_ok(child.ready_url):
                    pending.remove(child)
            if pending and time.monotonic() > deadline:
                names = ", ".join(c.name for c in pending)
                msg = f"not ready after {self.options.ready_timeout_seconds}s: {names}"
                raise StackError(msg)
            time.sleep(0.1)

    def exited(self) -> list[str]:
        """Descriptions of children that stopped on their own (empty while all run)."""
        return [
            f"{c.name} exited with code {c.process.returncode}:\n{c.log_tail()}"
            for c in self.children
            if c.process.poll() is not None
        ]

    def stop(self, timeout_seconds: float = 10.0) -> None:
        """Stop the children by pid (demo first): SIGTERM, then SIGKILL after ``timeout_seconds``."""
        for child in reversed(self.children):
            _terminate(child.process, timeout_seconds)
        self.children.clear()
        if self._alert_log is not None:
            self._alert_log.close()
            self._alert_log = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self._own_workdir = False

    def describe(self) -> str:
        """Where to look, one line each."""
        pids = self.pids()
        lines = [
            f"demo agent    {self.demo_url}  (pid {pids.get('demo')})",
            f"prometheus    {self.prometheus_url}  (pid {pids.get('prometheus')}; alerts: "
            f"{self.prometheus_url}/alerts)",
            f"alertmanager  {self.alertmanager_url}  (pid {pids.get('alertmanager')})",
            f"alert log     http://{LOOPBACK}:{self.ports['alert-log']}/alerts (alerts are printed here)",
            f"logs          {self.workdir}",
            "Grafana runs only in the compose stack (cd compose && docker compose up).",
        ]
        return "\n".join(lines)

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _terminate(process: subprocess.Popen[bytes], timeout_seconds: float) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_stack(
    options: StackOptions,
    out: TextIO | None = None,
    *,
    keep_running: Callable[[], bool] = lambda: True,
) -> int:
    """``stack up``: start, print where to look, run until Ctrl-C or SIGTERM, stop. Returns an exit code."""
    stream = out or sys.stdout
    # SIGINT too: a shell starts background jobs with SIGINT ignored, and Ctrl-C must still stop us.
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    stack = Stack(options)
    try:
        stack.start(stream)
        print(stack.describe(), file=stream)
        print("stack ready; Ctrl-C stops it", file=stream, flush=True)
        while keep_running():
            failed = stack.exited()
            if failed:
                print("\n".join(failed), file=sys.stderr)
                return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("stopping", file=stream, flush=True)
    finally:
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("stopped", file=stream, flush=True)
    return 0

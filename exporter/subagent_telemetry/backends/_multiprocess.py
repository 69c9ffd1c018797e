"""Prometheus multiprocess mode for pre-fork servers (gunicorn, uWSGI): ``PROMETHEUS_MULTIPROC_DIR``.

Each worker writes its counters, histograms and gauges to memory-mapped files in that directory; the
process that answers a scrape merges them (``MultiProcessCollector``), following each gauge's
``multiprocess_mode`` from the catalog (``subagent_active_count`` is ``livesum``: only live workers
count). The quota gauges are not files: the answering process's ``QuotaCollector`` reads the budget
(for a Redis store, the fleet's) at scrape time, so each session's budget is exported once per scrape.

Pitfalls: one directory per server instance, wiped before the workers start (stale files from an older
run would be summed in); call ``mark_process_dead`` for each worker that exits (gunicorn: ``child_exit``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client import multiprocess as _mp

if TYPE_CHECKING:
    from .._telemetry import SubagentTelemetry

ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> Path | None:
    """The directory of ``PROMETHEUS_MULTIPROC_DIR``, or ``None`` when multiprocess mode is off."""
    value = os.environ.get(ENV_VAR)
    return Path(value) if value else None


def prepare_multiprocess_dir(path: str | Path | None = None) -> Path:
    """Create the directory empty (call once in the master, before any worker starts)."""
    folder = Path(path) if path is not None else multiprocess_dir()
    if folder is None:
        msg = f"set {ENV_VAR} (or pass path=) to use Prometheus multiprocess mode"
        raise ValueError(msg)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def multiprocess_registry(tel: SubagentTelemetry | None = None) -> CollectorRegistry:
    """A registry for one scrape of every worker: the merged files, plus ``tel``'s quota gauges."""
    registry = CollectorRegistry()
    _mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    collector = getattr(tel, "_quota_collector", None)
    if collector is not None:
        registry.register(collector)
    return registry


def mark_process_dead(pid: int, path: str | Path | None = None) -> None:
    """Forget a worker that exited: its ``livesum`` gauges (active executions) stop counting."""
    folder = Path(path) if path is not None else multiprocess_dir()
    if folder is not None:
        _mp.mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]


def child_exit(server: Any, worker: Any) -> None:
    """The gunicorn hook: ``from subagent_telemetry.fleet import child_exit`` in gunicorn.conf.py."""
    mark_process_dead(worker.pid)

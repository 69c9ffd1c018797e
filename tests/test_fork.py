"""Fork safety: a child forked while executions run in other threads starts clean (real os.fork())."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from subagent_telemetry import Config, SubagentTelemetry
from tests.conftest import make_config

pytest.importorskip("opentelemetry.sdk")

from tests.support.otlp_receiver import http_receiver


def _in_child(body: Callable[[], None]) -> tuple[int, int]:
    """Fork; the child runs ``body`` and exits 0 if it returned, 1 if it raised. Returns (pid, exit code)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        code = 1
        try:
            body()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return pid, os.waitstatus_to_exitcode(status)


def test_a_child_forked_while_threads_hold_every_slot_starts_with_all_slots_free(
    telemetry_factory: type[SubagentTelemetry],
) -> None:
    """Slots held by the parent's other threads are not used in the child: it can run max_concurrency."""
    tel = telemetry_factory(make_config(max_concurrency=2, concurrency_timeout=0.1))
    entered = threading.Barrier(3)
    release = threading.Event()

    def hold() -> None:
        with tel.execution("held"):
            entered.wait(5)
            release.wait(10)

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for holder in holders:
        holder.start()
    entered.wait(5)
    try:

        def two_at_once() -> None:
            with tel.execution("a"), tel.execution("b"):
                pass

        assert _in_child(two_at_once)[1] == 0
    finally:
        release.set()
        for holder in holders:
            holder.join()


def test_a_forked_child_exports_under_its_own_instance_id_from_zero() -> None:
    """Over OTLP the child is its own instance (its pid) with its own counts; the parent's stay its own."""
    with contextlib.contextmanager(http_receiver)() as receiver:
        config = Config.model_validate(
            {
                "telemetry": {
                    "log_executions": False,
                    "otlp": {"enabled": True, "endpoint": receiver.endpoint, "export_interval_seconds": 60},
                }
            }
        )
        tel = SubagentTelemetry(config, registry=CollectorRegistry())
        for _ in range(2):
            with tel.execution("parent"):
                pass

        def one_and_flush() -> None:
            with tel.execution("child"):
                pass
            tel.shutdown(timeout_seconds=5)

        child_pid, code = _in_child(one_and_flush)
        assert code == 0
        tel.shutdown(timeout_seconds=5)

    host = socket.gethostname()
    executions: dict[str, float] = {}
    for resource, name, _, value in receiver.received.sums:
        if name == "subagent.executions":
            instance = resource["service.instance.id"]
            executions[instance] = executions.get(instance, 0.0) + value
    assert executions == {f"{host}:{os.getpid()}": 2, f"{host}:{child_pid}": 1}
    span_instances = {
        (s.attributes.get("gen_ai.agent.name"), s.resource["service.instance.id"])
        for s in receiver.received.spans
    }
    assert span_instances == {("parent", f"{host}:{os.getpid()}"), ("child", f"{host}:{child_pid}")}

"""Names that are not encodable text (lone surrogates, controls) through the real exporters: the /metrics
listener keeps answering 200 and the OTLP span batch holding them is delivered whole (issue 11 item 7)."""

from __future__ import annotations

import contextlib
import urllib.request
from collections.abc import Callable, Iterator

import pytest

pytest.importorskip("opentelemetry.proto")

from prometheus_client import CollectorRegistry

from subagent_telemetry import Config, SubagentTelemetry
from tests.support.otlp_receiver import Receiver, grpc_receiver, http_receiver
from tests.support.servers import wait_for

pytestmark = pytest.mark.integration

UNSAFE_NAMES = ["lone \ud800 surrogate", "tail \udfff", "line\nbreak", "nul\x00byte", "sep\u2028ara\x85tor"]
RECEIVERS: dict[str, Callable[[], Iterator[Receiver]]] = {
    "grpc": grpc_receiver,
    "http/protobuf": http_receiver,
}


def _workload(tel: SubagentTelemetry) -> None:
    for name in UNSAFE_NAMES:
        with tel.execution(name) as run:
            run.record_response(input=3, output=1, model=name, provider=name)
            run.set_output(name * 2000)
        tel.start(name, model=name).finish()


def test_every_scrape_answers_200_after_unsafe_names() -> None:
    """With the agent label on, a real scrape of the /metrics listener succeeds before and after."""
    config = Config.model_validate(
        {
            "telemetry": {
                "log_executions": False,
                "agent_label": {"enabled": True},
                "prometheus": {"port": 0},
            }
        }
    )
    tel = SubagentTelemetry(config, registry=CollectorRegistry())
    server = tel.serve()
    try:
        with urllib.request.urlopen(server.url, timeout=5) as response:
            assert response.status == 200
        _workload(tel)
        for _ in range(3):
            with urllib.request.urlopen(server.url, timeout=5) as response:
                assert response.status == 200
                body = response.read().decode("utf-8")
        assert 'agent="lone \ufffd surrogate"' in body
        assert 'agent="line\ufffdbreak"' in body
    finally:
        tel.shutdown(timeout_seconds=2)


@pytest.mark.parametrize("protocol", sorted(RECEIVERS))
def test_the_span_batch_with_unsafe_names_is_delivered(protocol: str) -> None:
    """Every span (and its name, agent and model attributes) reaches the OTLP receiver."""
    with contextlib.contextmanager(RECEIVERS[protocol])() as receiver:
        otlp = {"enabled": True, "endpoint": receiver.endpoint, "protocol": protocol, "metrics": False}
        config = Config.model_validate(
            {"telemetry": {"log_executions": False, "prometheus": {"enabled": False}, "otlp": otlp}}
        )
        tel = SubagentTelemetry(config, registry=CollectorRegistry())
        _workload(tel)
        with tel.execution("plain"):
            pass
        tel.shutdown(timeout_seconds=5)
        wait_for(lambda: len(receiver.received.spans) >= 2 * len(UNSAFE_NAMES) + 1, 5.0, 0.05)
        spans = {s.name: s for s in receiver.received.spans}
    assert "invoke_agent plain" in spans
    assert "invoke_agent lone \ufffd surrogate" in spans
    span = spans["invoke_agent line\ufffdbreak"]
    assert span.attributes["gen_ai.agent.name"] == "line\ufffdbreak"
    assert len(receiver.received.spans) == 2 * len(UNSAFE_NAMES) + 1

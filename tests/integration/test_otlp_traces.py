"""Spans as the exporters put them on the wire, decoded by in-test OTLP/gRPC and OTLP/HTTP receivers."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest

pytest.importorskip("opentelemetry.proto")

from prometheus_client import CollectorRegistry

from subagent_telemetry._errors import DepthLimitExceeded
from subagent_telemetry._telemetry import SubagentTelemetry
from tests.support.expected_series import parity_config
from tests.support.otlp_receiver import ReceivedSpan, Receiver, grpc_receiver, http_receiver

pytestmark = pytest.mark.integration

SPAN_KIND_INTERNAL = 1
STATUS_CODE_ERROR = 2
RECEIVERS: dict[str, Callable[[], Iterator[Receiver]]] = {
    "grpc": grpc_receiver,
    "http/protobuf": http_receiver,
}


@pytest.fixture(scope="module", params=sorted(RECEIVERS))
def spans(request: pytest.FixtureRequest) -> Iterator[dict[str, ReceivedSpan]]:
    """A 3-level run (with a depth refusal and a failing sibling) exported over one protocol."""
    protocol: str = request.param
    with contextlib.contextmanager(RECEIVERS[protocol])() as receiver:
        config = parity_config(
            service_name="traces-test",
            prometheus={"enabled": False},
            otlp={"enabled": True, "endpoint": receiver.endpoint, "protocol": protocol, "metrics": False},
        )
        tel = SubagentTelemetry(config, registry=CollectorRegistry())
        with tel.execution("planner") as planner:
            planner.record_tokens(input=100, output=10)
            with tel.execution("worker") as worker:
                worker.record_tokens(input=20, output=2)
                worker.set_output("y" * 4096)
                with tel.execution("reviewer") as reviewer:
                    reviewer.record_turn()
                    reviewer.record_tokens(input=3, output=1)
                    with contextlib.suppress(DepthLimitExceeded), tel.execution("too-deep"):
                        pass
            with contextlib.suppress(ValueError), tel.execution("flaky"):
                raise ValueError("bad")
        tel.shutdown()
        yield {s.name: s for s in receiver.received.spans}


class TestSpanTreeOnTheWire:
    def test_names_and_count(self, spans: dict[str, ReceivedSpan]) -> None:
        """One ``invoke_agent {name}`` span per execution, refused ones included."""
        assert set(spans) == {
            "invoke_agent planner",
            "invoke_agent worker",
            "invoke_agent reviewer",
            "invoke_agent too-deep",
            "invoke_agent flaky",
        }

    def test_parent_ids_follow_nesting(self, spans: dict[str, ReceivedSpan]) -> None:
        """Each span's parent is the enclosing execution's span, all in one trace."""
        parent_of = {name.split()[1]: s.parent_span_id for name, s in spans.items()}
        id_of = {name.split()[1]: s.span_id for name, s in spans.items()}
        assert parent_of == {
            "planner": "",
            "worker": id_of["planner"],
            "reviewer": id_of["worker"],
            "too-deep": id_of["reviewer"],
            "flaky": id_of["planner"],
        }
        assert len({s.trace_id for s in spans.values()}) == 1

    def test_kind_and_genai_attributes(self, spans: dict[str, ReceivedSpan]) -> None:
        """INTERNAL spans with gen_ai.* usage and subagent.* attributes, subtree totals on the root."""
        planner = spans["invoke_agent planner"]
        assert planner.kind == SPAN_KIND_INTERNAL
        assert (
            planner.attributes.items()
            >= {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": "planner",
                "gen_ai.usage.input_tokens": 100,
                "gen_ai.usage.output_tokens": 10,
                "subagent.depth": 1,
                "subagent.status": "complete",
                "subagent.subtree.total_tokens": 136,
                "subagent.subtree.executions": 4,
            }.items()
        )
        assert spans["invoke_agent reviewer"].attributes["subagent.turns"] == 1

    def test_events(self, spans: dict[str, ReceivedSpan]) -> None:
        """Truncation and refusal arrive as span events with their figures."""
        assert spans["invoke_agent worker"].events == [
            (
                "subagent.output_truncated",
                {"subagent.output.size_bytes": 4096, "subagent.output.limit_bytes": 1024},
            )
        ]
        (refusal,) = spans["invoke_agent too-deep"].events
        assert refusal[0] == "subagent.quota_refused"
        assert refusal[1]["subagent.quota.resource"] == "depth"

    def test_failures_are_errors(self, spans: dict[str, ReceivedSpan]) -> None:
        """Failed and refused executions carry error.type and status ERROR."""
        assert spans["invoke_agent flaky"].status_code == STATUS_CODE_ERROR
        assert spans["invoke_agent flaky"].attributes["error.type"] == "execution_failed"
        assert spans["invoke_agent too-deep"].attributes["error.type"] == "max_depth_reached"
        assert spans["invoke_agent planner"].status_code != STATUS_CODE_ERROR

    def test_resource_names_the_service(self, spans: dict[str, ReceivedSpan]) -> None:
        """The resource carries service.name and service.instance.id."""
        resource = spans["invoke_agent planner"].resource
        assert resource["service.name"] == "traces-test"
        assert resource["service.instance.id"]

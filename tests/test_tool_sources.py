"""What the operator tools read: /metrics text into readings, and quantiles as Prometheus computes them."""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from subagent_telemetry import SubagentTelemetry, cli
from subagent_telemetry import _catalog as cat
from subagent_telemetry.tools._sources import (
    PrometheusAPI,
    SourceError,
    delta_buckets,
    http_get,
    parse_metrics_text,
    quantile,
)
from subagent_telemetry.tools._tune import nearest_rank, nice_up, session_peaks
from tests.conftest import make_config


class TestQuantile:
    @pytest.mark.parametrize(
        ("q", "expected"),
        [(0.5, 1.5), (0.25, 1.0), (0.75, 2.0), (1.0, 4.0)],
    )
    def test_interpolates_inside_the_bucket_like_histogram_quantile(self, q: float, expected: float) -> None:
        """Linear interpolation within the bucket that holds rank q * count (Prometheus' rule)."""
        buckets = [(1.0, 2.0), (2.0, 6.0), (4.0, 8.0), (float("inf"), 8.0)]
        assert quantile(q, buckets) == pytest.approx(expected)

    def test_rank_in_the_inf_bucket_gives_the_highest_finite_bound(self) -> None:
        """Observations above the last bound answer with that bound, as histogram_quantile does."""
        assert quantile(0.99, [(1.0, 1.0), (5.0, 2.0), (float("inf"), 10.0)]) == 5.0

    def test_no_observations_give_none(self) -> None:
        """An empty histogram has no quantile."""
        assert quantile(0.5, [(1.0, 0.0), (float("inf"), 0.0)]) is None

    def test_delta_buckets_never_go_negative(self) -> None:
        """A counter reset between two readings counts as nothing happened, not as negative."""
        assert delta_buckets([(1.0, 1.0), (float("inf"), 3.0)], [(1.0, 5.0), (float("inf"), 2.0)]) == [
            (1.0, 0.0),
            (float("inf"), 1.0),
        ]


class TestParse:
    def test_reads_the_catalog_series_of_a_real_exposition(self) -> None:
        """The exposition of a real SubagentTelemetry gives its counts per depth and its quota limits."""
        registry = CollectorRegistry()
        tel = SubagentTelemetry(make_config(max_executions=5), registry=registry)
        try:
            with tel.execution("a"), tel.execution("b"):
                pass
            readings = parse_metrics_text(generate_latest(registry).decode())
        finally:
            tel.shutdown(timeout_seconds=1)
        assert readings.by(cat.EXECUTIONS.name, "depth") == {"1": 1.0, "2": 1.0, "3": 0.0}
        assert readings.by(cat.QUOTA_LIMIT.name, "resource", agg="max") == {"executions": 5.0}

    def test_ignores_metrics_outside_the_catalog(self) -> None:
        """Other metrics on the same /metrics page are left out."""
        readings = parse_metrics_text("# TYPE other_total counter\nother_total 3\n")
        assert dict(readings.series) == {}

    def test_garbage_is_a_source_error(self) -> None:
        """A page that is not an exposition raises SourceError (shown by the tools), nothing else."""
        with pytest.raises(SourceError):
            parse_metrics_text("<html>not metrics{</html>\n")


@contextmanager
def answering(
    write: Callable[[http.server.BaseHTTPRequestHandler], None], status: int = 200
) -> Iterator[str]:
    """A real HTTP server on a free loopback port whose every GET is answered by ``write``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.end_headers()
            with contextlib.suppress(OSError):  # The client gave up: what the tests want.
                write(self)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def body(text: bytes) -> Callable[[http.server.BaseHTTPRequestHandler], None]:
    return lambda handler: handler.wfile.write(text)


class TestHostileSources:
    def test_a_dripping_answer_is_cut_at_the_timeout(self) -> None:
        """A server sending a byte every 0.1 s cannot hold a read past --timeout (it is a total deadline)."""

        def drip(handler: http.server.BaseHTTPRequestHandler) -> None:
            for _ in range(200):
                handler.wfile.write(b"#")
                handler.wfile.flush()
                time.sleep(0.1)

        with answering(drip) as url:
            started = time.monotonic()
            with pytest.raises(SourceError, match=r"within 0\.5s"):
                http_get(url, 0.5)
        assert time.monotonic() - started < 3

    def test_a_huge_answer_is_refused_past_the_size_cap(self) -> None:
        """An endless body is a SourceError once past the cap, not the machine's memory."""

        def flood(handler: http.server.BaseHTTPRequestHandler) -> None:
            while True:
                handler.wfile.write(b"#" * 65536 + b"\n")

        with answering(flood) as url, pytest.raises(SourceError, match="larger than 1 MiB"):
            http_get(url, 10, max_bytes=2**20)

    @pytest.mark.parametrize(
        "answer",
        [
            b"[]",
            b"null",
            b'"text"',
            b'{"status": "success"}',
            b'{"status": "success", "data": []}',
            b'{"status": "success", "data": {"resultType": "vector", "result": [{"x": 1}]}}',
            b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":3}]}}',
            b"\xff\xfe{",
        ],
    )
    def test_json_that_is_not_a_prometheus_answer_is_a_source_error(self, answer: bytes) -> None:
        """Any JSON (or non-UTF-8) answer that is not a Prometheus API result is one SourceError."""
        with answering(body(answer)) as url:
            api = PrometheusAPI(url, timeout_seconds=5)
            with pytest.raises(SourceError, match="Prometheus"):
                api.query("up")
            with pytest.raises(SourceError, match="Prometheus"):
                api.query_range("up", 0, 60, 15)

    def test_a_histogram_answer_without_le_is_a_source_error(self) -> None:
        """A compatible server answering a by (le) query without le is a SourceError, not a KeyError."""
        answer = (
            b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"2"]}]}}'
        )
        with answering(body(answer)) as url, pytest.raises(SourceError, match="malformed"):
            PrometheusAPI(url, timeout_seconds=5).histogram("sum by (le) (x_bucket)")

    def test_a_refused_query_shows_prometheus_own_error(self) -> None:
        """An HTTP 400 from the query API names what Prometheus found wrong (e.g. a bad --selector)."""
        answer = b'{"status":"error","errorType":"bad_data","error":"1:50: parse error: unexpected }"}'
        with answering(body(answer), status=400) as url, pytest.raises(SourceError) as refused:
            PrometheusAPI(url, timeout_seconds=5).query("up")
        assert "HTTP 400 Bad Request: 1:50: parse error: unexpected }" in str(refused.value)

    def test_report_into_a_path_that_is_a_file_prints_one_error(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """report --out naming a file exits 1 with one line naming --out, not a NotADirectoryError."""
        taken = tmp_path / "taken"
        taken.write_text("")
        empty = b'{"status":"success","data":{"resultType":"vector","result":[]}}'
        with answering(body(empty)) as url:
            assert cli.main(["report", url, "--out", str(taken)]) == 1
        err = capsys.readouterr().err
        assert f"cannot write the report under --out {taken}" in err
        assert "Traceback" not in err

    def test_top_shows_hostile_label_values_as_plain_text(self, capsys: pytest.CaptureFixture[str]) -> None:
        """An agent label holding rich markup ("tool[/v2]", a valid name) or terminal escapes (any target
        can expose one) is printed as text: no MarkupError, no escape sequence reaching the terminal."""
        exposition = (
            "# TYPE subagent_executions_total counter\n"
            'subagent_executions_total{depth="1",agent="tool[/v2]"} 5\n'
            'subagent_executions_total{depth="1",agent="\x1b]0;PWNED\x07\x1b[2Jx"} 3\n'
        )
        with answering(body(exposition.encode())) as url:
            assert cli.main(["top", f"{url}/metrics", "--once"]) == 0
        out = capsys.readouterr().out
        assert "tool[/v2]" in out
        assert "\x1b]0;" not in out
        assert "\x1b[2J" not in out

    @pytest.mark.parametrize("command", [["tune"], ["report", "--out", "{tmp}"]])
    def test_tune_and_report_against_a_non_prometheus_json_answer_print_one_error(
        self, command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """tune/report against a URL answering foreign JSON exit 1 with one line naming the URL."""
        with answering(body(b'{"status": "success", "data": {"hello": 1}}')) as url:
            args = [a.replace("{tmp}", str(tmp_path / "out")) for a in command]
            assert cli.main([args[0], url, *args[1:]]) == 1
        err = capsys.readouterr().err
        assert url in err
        assert "Traceback" not in err


class TestTuneArithmetic:
    @pytest.mark.parametrize(
        ("value", "expected"), [(74_300, 75_000), (75_000, 75_000), (7.43, 8), (99_393.8, 100_000), (0, 0)]
    )
    def test_nice_up_rounds_up_to_two_significant_digits(self, value: float, expected: int) -> None:
        """Budgets are rounded up (never down) to two significant digits, at least to a whole number."""
        assert nice_up(value) == expected

    def test_nearest_rank_takes_a_value_that_occurred(self) -> None:
        """p95 of six sessions is the sixth (ceil(0.95 x 6) = 6), not an interpolation."""
        assert nearest_rank([10, 60, 20, 50, 30, 40], 0.95) == 60
        assert nearest_rank([10, 60, 20, 50, 30, 40], 0.5) == 30

    def test_session_peaks_are_the_values_before_each_drop_and_the_last(self) -> None:
        """A quota gauge that drops starts a new session; the value before the drop is the old one's peak."""
        assert session_peaks([0, 2, 5, 1, 3, 0, 0, 4]) == [5, 3, 4]

"""`subagent-telemetry tune` against real Prometheus holding a known hour of agent data (promtool backfill).

The hour is built so every figure tune reads is known exactly: 6 sessions whose token use peaks at
10k..60k, a mean of 1500 tokens per execution, turns whose p99 is 3.94, depth 2 at most, 3 executions
running at once at the peak, and 10 executions refused by an execution limit of 20. The proposals must
follow the arithmetic docs/tuning.md documents.
"""

from __future__ import annotations

import io
import math
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import yaml

from subagent_telemetry import _catalog as cat
from subagent_telemetry._config import load_config_text
from subagent_telemetry.tools._tune import TuneOptions, nearest_rank, nice_up, run_tune
from tests.support.servers import RunningServer, start_prometheus, tool

pytestmark = pytest.mark.integration

STEP_SECONDS = 15
POINTS = 240  # one hour
SESSION_POINTS = 40  # a session lasts 10 minutes
TOKEN_PEAKS = [10_000, 20_000, 30_000, 40_000, 50_000, 60_000]
EXECUTION_PEAKS = [5, 10, 15, 20, 25, 30]
TIME_PEAK = 600.0
EXECUTIONS = 600  # over the hour: 400 at depth 1, 200 at depth 2
MEAN_TOKENS = 1500.0
REFUSED = 10
TRUNCATED = 6
LABELS = 'job="agent",instance="a:9464"'


def _sawtooth(peaks: list[float], k: int) -> float:
    session, step = divmod(k, SESSION_POINTS)
    return peaks[session] * (step + 1) / SESSION_POINTS


def _openmetrics(start: int) -> str:
    """One hour of the catalog's series, every 15 s, in OpenMetrics for promtool."""
    lines: list[str] = []
    ts = [start + k * STEP_SECONDS for k in range(POINTS)]

    def ramp(total: float, k: int) -> float:
        return total * (k + 1) / POINTS

    def family(spec: cat.MetricSpec, series: list[tuple[str, str, object]]) -> None:
        kind = spec.kind.value
        lines.append(f"# TYPE {spec.base_name} {kind}")
        for suffix, labels, value_of in series:
            for k, t in enumerate(ts):
                value = value_of(k)  # type: ignore[operator]
                lines.append(f"{spec.base_name}{suffix}{{{LABELS}{labels}}} {value} {t}")

    family(
        cat.EXECUTIONS,
        [("_total", ',depth="1"', lambda k: ramp(400, k)), ("_total", ',depth="2"', lambda k: ramp(200, k))],
    )
    family(
        cat.COMPLETIONS,
        [
            ("_total", ',depth="1",status="complete"', lambda k: ramp(380, k)),
            ("_total", ',depth="1",status="incomplete"', lambda k: ramp(10, k)),
            ("_total", ',depth="2",status="complete"', lambda k: ramp(200, k)),
            ("_total", ',depth="3",status="complete"', lambda k: 0),
        ],
    )
    family(cat.OUTPUT_TRUNCATIONS, [("_total", ',depth="1"', lambda k: ramp(TRUNCATED, k))])
    family(cat.QUOTA_REJECTIONS, [("_total", ',resource="executions"', lambda k: ramp(REFUSED, k))])
    token_buckets = [("1000", 300), ("2500", 600), ("+Inf", 600)]
    family(
        cat.TOKENS,
        [
            *(("_bucket", f',le="{le}"', lambda k, n=n: ramp(n, k)) for le, n in token_buckets),
            ("_count", "", lambda k: ramp(600, k)),
            ("_sum", "", lambda k: ramp(600 * MEAN_TOKENS, k)),
        ],
    )
    turn_buckets = [("1", 100), ("2", 300), ("3", 500), ("4", 600), ("+Inf", 600)]
    family(
        cat.TURNS,
        [
            *(("_bucket", f',le="{le}"', lambda k, n=n: ramp(n, k)) for le, n in turn_buckets),
            ("_count", "", lambda k: ramp(600, k)),
            ("_sum", "", lambda k: ramp(1500, k)),
        ],
    )
    family(cat.ACTIVE, [("", ',depth="1"', lambda k: k % 4)])
    family(cat.MAX_CONCURRENCY, [("", "", lambda k: 5)])
    family(
        cat.QUOTA_LIMIT,
        [
            ("", ',resource="executions",session="default"', lambda k: 20),
            ("", ',resource="tokens",session="default"', lambda k: 200_000),
            ("", ',resource="time_seconds",session="default"', lambda k: 3600),
        ],
    )
    family(
        cat.QUOTA_USED,
        [
            ("", ',resource="executions",session="default"', lambda k: _sawtooth(EXECUTION_PEAKS, k)),
            ("", ',resource="tokens",session="default"', lambda k: _sawtooth(TOKEN_PEAKS, k)),
            ("", ',resource="time_seconds",session="default"', lambda k: _sawtooth([TIME_PEAK] * 6, k)),
        ],
    )
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, float]]:
    """Prometheus started on a TSDB that promtool filled with the known hour (ending 30 min ago)."""
    tmp = tmp_path_factory.mktemp("tune")
    start = (int(time.time()) - 5400) // STEP_SECONDS * STEP_SECONDS
    source = tmp / "agent.om"
    source.write_text(_openmetrics(start))
    data = tmp / "data"
    subprocess.run(
        [tool("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    prometheus = start_prometheus(tmp, "global:\n  scrape_interval: 15s\n", data_dir=data)
    end = start + (POINTS - 1) * STEP_SECONDS
    try:
        yield prometheus, float(end)
    finally:
        prometheus.stop()


def _tune(url: str, end: float, **options: object) -> tuple[int, str]:
    out = io.StringIO()
    code = run_tune(TuneOptions(url=url, window="1h", end_unix_seconds=end, out=out, **options))  # type: ignore[arg-type]
    return code, out.getvalue()


def _proposal(text: str) -> dict[str, int]:
    values: dict[str, int] = yaml.safe_load(text)["agent"]["subagent"]
    return values


class TestArithmetic:
    def test_token_budget_is_p95_of_session_peaks_plus_margin(
        self, backfilled: tuple[RunningServer, float]
    ) -> None:
        """max_total_tokens = p95 (nearest rank) of sessions' token peaks x 1.25, rounded up to 2 digits."""
        prometheus, end = backfilled
        _, text = _tune(prometheus.url, end)
        expected = nice_up(nearest_rank(TOKEN_PEAKS, 0.95) * 1.25)
        assert expected == 75_000
        assert _proposal(text)["max_total_tokens"] == expected

    def test_executions_are_the_budget_divided_by_the_average_task(
        self, backfilled: tuple[RunningServer, float]
    ) -> None:
        """max_executions = floor(max_total_tokens / (mean tokens per execution x 1.25))."""
        prometheus, end = backfilled
        _, text = _tune(prometheus.url, end)
        assert _proposal(text)["max_executions"] == math.floor(75_000 / (MEAN_TOKENS * 1.25)) == 40

    def test_a_given_token_budget_drives_max_executions(
        self, backfilled: tuple[RunningServer, float]
    ) -> None:
        """--token-budget is taken as max_total_tokens and divided by the average task."""
        prometheus, end = backfilled
        _, text = _tune(prometheus.url, end, token_budget=30_000)
        proposal = _proposal(text)
        assert proposal["max_total_tokens"] == 30_000
        assert proposal["max_executions"] == math.floor(30_000 / (MEAN_TOKENS * 1.25)) == 16

    def test_per_execution_limits_follow_p99_and_peaks(self, backfilled: tuple[RunningServer, float]) -> None:
        """Turns = ceil(p99 x 1.25), depth = deepest that completed, concurrency = ceil(peak x 1.25)."""
        prometheus, end = backfilled
        _, text = _tune(prometheus.url, end)
        proposal = _proposal(text)
        p99_turns = 3 + (0.99 * 600 - 500) / 100  # inside the (3, 4] bucket, as histogram_quantile does
        assert proposal["default_max_turns"] == math.ceil(p99_turns * 1.25) == 5
        assert proposal["max_depth"] == 2
        assert proposal["max_concurrency"] == math.ceil(3 * 1.25) == 4
        assert proposal["max_total_time"] == nice_up(TIME_PEAK * 1.25) == 750

    def test_every_value_has_a_reasoning_line_and_the_block_loads(
        self, backfilled: tuple[RunningServer, float]
    ) -> None:
        """Each proposed key is preceded by a comment, and the printed YAML is a valid configuration."""
        prometheus, end = backfilled
        code, text = _tune(prometheus.url, end)
        assert code == 0
        lines = text.splitlines()
        for key in _proposal(text):
            index = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{key}:"))
            assert lines[index - 1].strip().startswith("#"), key
        assert load_config_text(text).subagent.max_total_tokens == 75_000

    def test_header_reports_per_execution_quantiles(self, backfilled: tuple[RunningServer, float]) -> None:
        """The header states p50/p95/p99 of tokens and turns per execution read from the histograms."""
        prometheus, end = backfilled
        _, text = _tune(prometheus.url, end)
        # Tokens: half the executions <= 1000, all <= 2500; turns: 100/300/500/600 at 1/2/3/4.
        assert "# per execution p50/p95/p99: tokens 1000/2350/2470;" in text
        assert "turns 2/3.7/3.94" in text


class TestFlags:
    def test_a_limit_far_above_use_never_binds(self, backfilled: tuple[RunningServer, float]) -> None:
        """The 200k token limit against a 60k highest session is flagged as never binding."""
        prometheus, end = backfilled
        _, text = _tune(prometheus.url, end)
        assert (
            "# ! max_total_tokens never binds: the highest use was 60000 of the current 200000 (30%)" in text
        )
        assert "# ! max_total_time never binds" in text

    def test_a_limit_that_refuses_what_use_needs_is_flagged(
        self, backfilled: tuple[RunningServer, float]
    ) -> None:
        """10 refusals by an execution limit of 20, below the proposed 40, are flagged as refusing work."""
        prometheus, end = backfilled
        _, text = _tune(prometheus.url, end)
        assert "# ! max_executions refuses healthy work: 10 refused or stopped (2% of executions)" in text
        assert "max_concurrency never binds" not in text
        assert "max_concurrency refuses" not in text

    def test_truncated_outputs_are_flagged_not_proposed(
        self, backfilled: tuple[RunningServer, float]
    ) -> None:
        """Truncations are counted and flagged on output_max_size, which is left as it is."""
        prometheus, end = backfilled
        _, text = _tune(prometheus.url, end)
        assert "# ! output_max_size truncates: 6 outputs cut short (1% of executions)" in text
        assert "output_max_size" not in _proposal(text)


class TestCommand:
    def test_cli_prints_the_block(self, backfilled: tuple[RunningServer, float]) -> None:
        """The command line prints the same proposal and exits 0."""
        prometheus, end = backfilled
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "subagent_telemetry.cli",
                "tune",
                prometheus.url,
                "--window",
                "1h",
                "--end",
                str(end),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert _proposal(result.stdout)["max_total_tokens"] == 75_000

    def test_no_data_is_an_error_not_a_proposal(self, backfilled: tuple[RunningServer, float]) -> None:
        """A selector that matches nothing exits 1 with a message instead of proposing from nothing."""
        prometheus, end = backfilled
        code, text = _tune(prometheus.url, end, selector='job="nope"')
        assert code == 1
        assert text == ""

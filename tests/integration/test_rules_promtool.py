"""The rendered rules under real promtool 3.x: lint-clean in every format, and the generated unit tests
pass for the default config and for non-default ones (and fail when a rule is broken)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from subagent_telemetry._config import Config, Matcher
from subagent_telemetry.render import write_files
from subagent_telemetry.render.rules import (
    MIMIR_FILE,
    PROMETHEUS_RULE_FILE,
    RULES_FILE,
    TESTS_DIR,
    render_rules,
)
from tests.support.servers import tool
from tests.test_rules import ADVERSARIAL_VALUES

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ACTIVE = "job_instance:subagent_active_count:sum"
REDIS_STORE = "redis://redis.example:6379/0"
CUSTOM: dict[str, Any] = {
    "selector": 'job="my-agent", cluster="prod"',
    "group_by": ["cluster"],
    "rate_window": "10m",
    "dashboard_url": "https://grafana.example/d/subagent-overview",
    "high_error_rate": {"threshold": 0.1, "for": "3m"},
    "quota_nearly_exhausted": {"threshold": 0.9, "for": "2m"},
    "active_over_max_concurrency": {"threshold": 1, "for": "10m"},
    "slow_executions": {"threshold": 45, "for": "4m"},
    "quota_rejections": {"threshold": 0.5, "for": "3m"},
    "metrics_absent": {"for": "5m"},
}
SECONDS: dict[str, Any] = {
    "rate_window": "150s",
    "high_error_rate": {"for": "90s"},
    "quota_nearly_exhausted": {"for": "45s"},
    "active_over_max_concurrency": {"for": "2m30s"},
    "slow_executions": {"for": "100s", "threshold": 2.5},
    "quota_rejections": {"for": "30s"},
    "metrics_absent": {"for": "75s"},
}
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "custom": CUSTOM,
    "escaped": {"selector": r'job="my \"quoted\" agent\\x"', "high_error_rate": {"for": "0m"}},
    "relabelled": {
        "selector": 'service=~"agent-.*"',
        "job_label": "service",
        "instance_label": "pod",
        "slow_executions": {"threshold": 2.5, "for": "2m"},
        "quota_rejections": {"threshold": 0.02},
    },
    "fleet": {},
    "fleet-custom": {**CUSTOM, "instance_label": "pod"},
    # Second resolution: each alert's tests step at the gcd of its for, the window and a minute.
    "seconds": SECONDS,
    # Quotes, backslashes, YAML and Jinja syntax, non-ASCII and invisible characters in label values.
    "adversarial": {
        "selector": ", ".join(
            Matcher(name="job" if i == 0 else f"l{i}", op="=", value=value).render()
            for i, value in enumerate(ADVERSARIAL_VALUES)
        ),
    },
}
#: Configs whose budget lives in a shared (Redis) store, so max_concurrency holds across the fleet.
FLEET = {"fleet", "fleet-custom"}


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(params=sorted(CONFIGS))
def rendered(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The rule files of one config, rendered into a fresh directory."""
    config = Config.model_validate(
        {
            "agent": {"subagent": {"max_concurrency": 3}},
            "alerts": CONFIGS[request.param],
            "quota": {"store": REDIS_STORE if request.param in FLEET else "memory"},
        }
    )
    write_files(render_rules(config), tmp_path)
    return tmp_path


def groups_only(groups: list[Any], target: Path) -> Path:
    target.write_text(yaml.safe_dump({"groups": groups}))
    return target


def broken_rule_tests(
    config: Config, original: str, broken: str, alert: str, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """promtool on one alert's generated tests after ``original`` is replaced in the rendered rules."""
    write_files(render_rules(config), tmp_path)
    rules = tmp_path / RULES_FILE
    text = rules.read_text()
    assert original in text
    rules.write_text(text.replace(original, broken, 1))
    return promtool("test", "rules", f"{alert}.yaml", cwd=tmp_path / TESTS_DIR)


def test_plain_rule_file_passes_strict_lint(rendered: Path) -> None:
    """promtool check rules --lint=all --lint-fatal accepts alerts/rules.yaml."""
    result = promtool("check", "rules", "--lint=all", "--lint-fatal", rendered / RULES_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_rule_groups_pass_strict_lint(rendered: Path, tmp_path: Path) -> None:
    """The PrometheusRule's spec.groups pass promtool's strict lint."""
    spec = yaml.safe_load((rendered / PROMETHEUS_RULE_FILE).read_text())["spec"]
    extracted = groups_only(spec["groups"], tmp_path / "operator.yaml")
    result = promtool("check", "rules", "--lint=all", "--lint-fatal", extracted)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mimir_groups_pass_strict_lint(rendered: Path, tmp_path: Path) -> None:
    """The Mimir/Cortex namespace file's groups pass promtool's strict lint."""
    data = yaml.safe_load((rendered / MIMIR_FILE).read_text())
    extracted = groups_only(data["groups"], tmp_path / "mimir.yaml")
    result = promtool("check", "rules", "--lint=all", "--lint-fatal", extracted)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_unit_tests_pass(rendered: Path) -> None:
    """promtool test rules passes every generated test of the config."""
    files = sorted((rendered / TESTS_DIR).glob("*.yaml"))
    result = promtool("test", "rules", *files, cwd=rendered / TESTS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


def test_committed_unit_tests_pass() -> None:
    """The committed alerts/tests pass against the committed alerts/rules.yaml."""
    files = sorted((REPO / TESTS_DIR).glob("*.yaml"))
    assert len(files) == 7
    result = promtool("test", "rules", *files, cwd=REPO / TESTS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("alert", "original", "broken"),
    [
        ("SubagentHighErrorRate", "> 0.05", "> 0.052"),  # threshold moved just past the "above" level
        ("SubagentQuotaNearlyExhausted", "for: 1m", "for: 0m"),  # fires a minute early
        # min_over_time needs the whole window above the limit: fires too late.
        ("SubagentActiveOverMaxConcurrency", f"max_over_time({ACTIVE}", f"min_over_time({ACTIVE}"),
        ("SubagentSlowExecutions", "histogram_quantile(0.95", "histogram_quantile(0.5"),
        ("SubagentQuotaRejections", "rate5m{job=~\".+\"} > 0\n", "rate5m{job=~\".+\"} > 0.02\n"),
        ("SubagentMetricsAbsent", "(up{job=~\".+\"}) == 0", "(up{job=~\".+\"}) == 2"),
        # The horizon moved just below the seconds left at the "above" level (3600 x 60/61 = 3541 s).
        ("SubagentCostBudgetBurn", "< 3600", "< 3540"),
        ("SubagentCostBudgetBurn", "cost:rate5m{job=~\".+\"} > 0)", "cost:rate5m{job=~\".+\"} > 1e9)"),
    ],
)  # fmt: skip
def test_generated_unit_tests_catch_a_broken_rule(
    alert: str, original: str, broken: str, tmp_path: Path
) -> None:
    """With one rule broken, that alert's generated tests fail (they are not vacuous)."""
    result = broken_rule_tests(Config.default(), original, broken, alert, tmp_path)
    assert result.returncode != 0, result.stdout


@pytest.mark.parametrize(
    ("store", "original", "broken", "failing"),  # failing: the tests that must fail, and only they
    [
        # The fleet's sum on every instance's series: separate in-memory processes would fire.
        (
            "memory",
            'sum by (job, instance) (subagent_active_count{job=~".+"})',
            'sum by (job, instance) (subagent_active_count{job=~".+"}) * 0 + on (job) group_left '
            'sum by (job) (subagent_active_count{job=~".+"})',
            ("each within its own limit, together above it, do not fire",),
        ),
        # The busiest series instead of the fleet's sum: instances each below the limit never fire.
        (
            REDIS_STORE,
            'sum by (job) (subagent_active_count{job=~".+"})',
            'max by (job) (subagent_active_count{job=~".+"})',
            ("(just above 0.0) fires after 5m", "keeps firing through", "resolves within"),
        ),
    ],
    ids=["memory-summed-over-the-fleet", "fleet-per-instance"],
)
def test_concurrency_tests_catch_the_wrong_scope(
    store: str, original: str, broken: str, failing: tuple[str, ...], tmp_path: Path
) -> None:
    """Comparing the wrong scope (fleet vs instance) fails the test that tells the two apart."""
    config = Config.model_validate({"quota": {"store": store}})
    result = broken_rule_tests(config, original, broken, "SubagentActiveOverMaxConcurrency", tmp_path)
    assert result.returncode != 0, result.stdout
    output = result.stdout + result.stderr
    failed = {line.strip() for line in output.splitlines() if line.strip().startswith("name: ")}
    assert all(any(part in name for name in failed) for part in failing), failed
    assert all(any(part in name for part in failing) for name in failed), failed


def alert_tests_pass(config: Config, alert: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Render ``config`` into a fresh folder under ``tmp_path`` and run promtool on one alert's tests."""
    out = Path(tempfile.mkdtemp(dir=tmp_path))
    write_files(render_rules(config), out)
    return promtool("test", "rules", f"{alert}.yaml", cwd=out / TESTS_DIR)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(threshold=st.floats(min_value=0.1, max_value=1199))
@example(threshold=0.1)
@example(threshold=0.995)
@example(threshold=9.995)
@example(threshold=59.99)
@example(threshold=1198.9999)
@example(threshold=1199)
def test_any_accepted_slow_threshold_renders_tests_that_pass(threshold: float, tmp_path: Path) -> None:
    """Every slow_executions.threshold the config accepts renders promtool tests that pass."""
    config = Config.model_validate({"alerts": {"slow_executions": {"threshold": threshold}}})
    result = alert_tests_pass(config, "SubagentSlowExecutions", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    limit=st.integers(min_value=1, max_value=1_000_000),
    headroom=st.floats(min_value=0, max_value=1_000_000),
    store=st.sampled_from(["memory", REDIS_STORE]),
)
@example(limit=1, headroom=1_000_000, store="memory")
@example(limit=1, headroom=1_000_000, store=REDIS_STORE)
@example(limit=1_000_000, headroom=1_000_000, store=REDIS_STORE)
def test_any_accepted_concurrency_headroom_renders_tests_that_pass(
    limit: int, headroom: float, store: str, tmp_path: Path
) -> None:
    """Every max_concurrency and headroom the config accepts renders promtool tests that pass."""
    config = Config.model_validate(
        {
            "agent": {"subagent": {"max_concurrency": limit}},
            "quota": {"store": store},
            "alerts": {"active_over_max_concurrency": {"threshold": headroom}},
        }
    )
    result = alert_tests_pass(config, "SubagentActiveOverMaxConcurrency", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("alert", "original", "broken"),
    [
        ("SubagentHighErrorRate", "for: 90s", "for: 60s"),  # fires one 30s step early
        ("SubagentQuotaRejections", "for: 30s", "for: 0s"),  # fires one 30s step early
        ("SubagentMetricsAbsent", "for: 75s", "for: 90s"),  # fires one 15s step late
    ],
)
def test_second_resolution_tests_catch_a_for_off_by_one_step(
    alert: str, original: str, broken: str, tmp_path: Path
) -> None:
    """At second resolution a `for` one step off fails that alert's generated tests."""
    result = broken_rule_tests(Config.model_validate({"alerts": SECONDS}), original, broken, alert, tmp_path)
    assert result.returncode != 0, result.stdout


def test_one_second_steps_render_tests_that_pass(tmp_path: Path) -> None:
    """A for of 61s with a 121s window (1s steps) renders tests that pass."""
    alerts = {
        key: {"enabled": False} for key in ("quota_nearly_exhausted", "slow_executions", "metrics_absent")
    }
    alerts |= {"rate_window": "121s", "high_error_rate": {"for": "61s"}, "quota_rejections": {"for": "7s"}}
    write_files(render_rules(Config.model_validate({"alerts": alerts})), tmp_path)
    files = sorted((tmp_path / TESTS_DIR).glob("*.yaml"))
    assert yaml.safe_load(files[0].read_text())["evaluation_interval"] == "1s"
    result = promtool("test", "rules", *files, cwd=tmp_path / TESTS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr

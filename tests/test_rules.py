"""Alert and recording rules: structure, config, escaping, catalog coverage, runbooks, generated tests."""

from __future__ import annotations

import importlib.resources
import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from subagent_telemetry import _catalog as cat
from subagent_telemetry._catalog import DURATION_BUCKETS
from subagent_telemetry._config import ALERT_KEYS, MAX_TEST_STEPS, Config, Matcher
from subagent_telemetry.render import drifted_files
from subagent_telemetry.render._rules_gotemplate import (
    expand,
    humanize,
    humanize_duration,
    humanize_percentage,
)
from subagent_telemetry.render._rules_template import ALERTING_GROUP, RECORDING_GROUP
from subagent_telemetry.render._rules_tests import (
    _SPECS,
    MAX_INSTANCES,
    TRAFFIC,
    _p95_increments,
    _setup,
)
from subagent_telemetry.render.rules import (
    ALERT_NAMES,
    MIMIR_FILE,
    PROMETHEUS_RULE_FILE,
    RULES_FILE,
    RUNBOOKS_DOC,
    TESTS_DIR,
    render_rules,
    rule_groups,
    runbook_anchor,
)

REPO = Path(__file__).resolve().parents[1]
QUOTE_AND_BACKSLASH = r'job="my \"quoted\" agent\\x"'
CUSTOM: dict[str, Any] = {
    "selector": 'job="my-agent", cluster="prod"',
    "group_by": ["cluster"],
    "rate_window": "10m",
    "dashboard_url": "https://grafana.example/d/subagent-overview",
    "high_error_rate": {"threshold": 0.1, "for": "3m", "severity": "warning"},
    "quota_nearly_exhausted": {"threshold": 0.9, "for": "2m"},
    "active_over_max_concurrency": {"threshold": 1, "for": "10m"},
    "slow_executions": {"threshold": 45, "for": "4m"},
    "quota_rejections": {"threshold": 0.5, "for": "3m", "severity": "info"},
    "metrics_absent": {"for": "5m", "severity": "warning"},
}
CONFIGS = {
    "default": {},
    "custom": CUSTOM,
    "escaped": {"selector": QUOTE_AND_BACKSLASH},
    "relabelled": {"selector": 'service=~"agent-.*"', "job_label": "service", "instance_label": "pod"},
    "fleet": CUSTOM,
}
#: Configs rendered with a shared (Redis) quota store: max_concurrency is enforced fleet-wide.
FLEET = {"fleet"}
REDIS_STORE = "redis://redis.example:6379/0"
OPS = {"=": "Equal", "!=": "NotEqual", "=~": "Re", "!~": "NotRe"}


def config_with(**alerts: Any) -> Config:
    """The default config with these ``alerts:`` keys."""
    return Config.model_validate({"alerts": alerts})


def fleet_with(**alerts: Any) -> Config:
    """Like ``config_with``, with the budget in a shared (Redis) store."""
    return Config.model_validate({"alerts": alerts, "quota": {"store": REDIS_STORE}})


def all_rules(config: Config) -> list[dict[str, Any]]:
    groups = rule_groups(config)
    return [*groups.recording["rules"], *groups.alerting["rules"]]


def alerts_by_name(config: Config) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in rule_groups(config).alerting["rules"]}


def selectors(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(metric name, [(label, op, value)]) of every vector selector in ``expr``, parsed by promql-parser."""
    found: list[tuple[str, list[tuple[str, str, str]]]] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = [(m.name, str(m.op).removeprefix("MatchOp."), m.value) for m in node.matchers.matchers]
            found.append((node.name, matchers))

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def matches(m: Matcher, value: str) -> bool:
    """Whether a label value satisfies a matcher (Prometheus regexes are fully anchored)."""
    if m.op == "=":
        return value == m.value
    if m.op == "!=":
        return value != m.value
    return (re.fullmatch(m.value, value) is not None) == (m.op == "=~")


def wanted(matchers: tuple[Matcher, ...]) -> list[tuple[str, str, str]]:
    return [(m.name, OPS[m.op], m.value) for m in matchers]


@pytest.fixture(params=sorted(CONFIGS))
def config(request: pytest.FixtureRequest) -> Config:
    make = fleet_with if request.param in FLEET else config_with
    return make(**CONFIGS[request.param])


class TestFiles:
    def test_renders_three_formats_and_a_test_file_per_alert(self) -> None:
        """Plain rules, PrometheusRule, Mimir namespace file and one promtool file per alert."""
        files = render_rules(Config.default())
        tests = {TESTS_DIR / f"{name}.yaml" for name in ALERT_NAMES.values()}
        assert set(files) == {RULES_FILE, PROMETHEUS_RULE_FILE, MIMIR_FILE, *tests}

    def test_committed_alerts_match_the_renderer(self) -> None:
        """alerts/ holds exactly what the default config renders (re-render after a change)."""
        assert drifted_files(render_rules(Config.default()), REPO) == []

    def test_the_three_formats_carry_the_same_groups(self) -> None:
        """Prometheus, prometheus-operator and Mimir get identical rule groups."""
        files = render_rules(Config.default())
        plain = yaml.safe_load(files[RULES_FILE])["groups"]
        assert yaml.safe_load(files[PROMETHEUS_RULE_FILE])["spec"]["groups"] == plain
        assert yaml.safe_load(files[MIMIR_FILE])["groups"] == plain

    def test_prometheus_rule_metadata_comes_from_config(self) -> None:
        """metadata name, namespace and labels are the configured ones."""
        meta = {"name": "agents", "namespace": "obs", "labels": {"release": "prom", "team": "ai"}}
        files = render_rules(config_with(prometheus_rule=meta))
        manifest = yaml.safe_load(files[PROMETHEUS_RULE_FILE])
        assert (manifest["apiVersion"], manifest["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
        assert manifest["metadata"] == meta

    def test_mimir_file_names_the_configured_namespace(self) -> None:
        """The Mimir/Cortex file's namespace is alerts.mimir_namespace."""
        files = render_rules(config_with(mimir_namespace="agents-prod"))
        assert yaml.safe_load(files[MIMIR_FILE])["namespace"] == "agents-prod"

    def test_template_ships_inside_the_package(self) -> None:
        """The Jinja2 template is package data, so an installed wheel can render."""
        template = importlib.resources.files("subagent_telemetry.render") / "templates" / "rules.yaml.j2"
        assert template.is_file()

    def test_generated_tests_load_the_plain_rule_file_in_group_order(self) -> None:
        """Each test file points at ../rules.yaml and evaluates recording rules before alerts."""
        for path, text in render_rules(Config.default()).items():
            if path.parent == TESTS_DIR:
                data = yaml.safe_load(text)
                assert data["rule_files"] == ["../rules.yaml"]
                assert data["group_eval_order"] == [RECORDING_GROUP, ALERTING_GROUP]


class TestRecordingRules:
    def test_names_are_level_metric_operations(self, config: Config) -> None:
        """Every recorded name is level:metric:operations, the level starting with the job label."""
        level = "_".join([config.alerts.job_label, *config.alerts.group_by])
        for rule in rule_groups(config).recording["rules"]:
            assert re.fullmatch(r"[a-z_]+:subagent_[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule["record"]
            assert rule["record"].startswith(level), rule["record"]

    def test_group_by_labels_are_kept_and_named_in_the_level(self) -> None:
        """group_by: [cluster] aggregates by job and cluster and names the level job_cluster."""
        rules = rule_groups(config_with(group_by=["cluster"])).recording["rules"]
        executions = next(r for r in rules if r["record"].endswith(":subagent_executions:rate5m"))
        assert executions["record"] == "job_cluster:subagent_executions:rate5m"
        assert "sum by (job, cluster)" in executions["expr"]

    def test_groups_hold_at_most_20_rules(self, config: Config) -> None:
        """Each group stays within 20 rules."""
        groups = rule_groups(config)
        assert len(groups.recording["rules"]) <= 20
        assert len(groups.alerting["rules"]) <= 20

    def test_error_ratio_divides_only_by_a_positive_rate(self) -> None:
        """The denominator of the error ratio is filtered with > 0 (no NaN on an idle system)."""
        rule = next(r for r in all_rules(Config.default()) if ":subagent_error_ratio:" in r.get("record", ""))
        division = promql_parser.parse(rule["expr"])
        assert str(division.op) == "/"
        assert re.fullmatch(r"\(job:subagent_executions:rate5m\{.*\} > 0\)", str(division.rhs))

    def test_quota_gauges_are_never_summed(self) -> None:
        """Quota expressions take max per series (every process exports the shared budget)."""
        for rule in all_rules(Config.default()):
            if "subagent_quota_used" in rule["expr"] or "subagent_quota_limit" in rule["expr"]:
                assert "sum" not in rule["expr"], rule["expr"]
                assert "max by" in rule["expr"], rule["expr"]


class TestAlerts:
    def test_alert_names_are_the_fixed_ones(self) -> None:
        """The six alerts carry their fixed CamelCase names, prefixed and at most 40 characters."""
        names = list(alerts_by_name(Config.default()))
        assert names == list(ALERT_NAMES.values())
        assert all(re.fullmatch(r"Subagent[A-Za-z]+", n) and len(n) <= 40 for n in names)

    def test_severity_and_for_come_from_config(self) -> None:
        """Each alert's severity label and for: are the configured ones."""
        alerts = alerts_by_name(config_with(**CUSTOM))
        assert alerts["SubagentQuotaRejections"]["labels"] == {"severity": "info"}
        assert alerts["SubagentHighErrorRate"]["for"] == "3m"

    def test_thresholds_come_from_config(self) -> None:
        """Each threshold appears in its alert's comparison."""
        alerts = alerts_by_name(config_with(**CUSTOM))
        assert alerts["SubagentHighErrorRate"]["expr"].endswith("> 0.1")
        assert alerts["SubagentSlowExecutions"]["expr"].endswith("> 45")
        assert alerts["SubagentActiveOverMaxConcurrency"]["expr"].endswith("+ 1")

    def test_summaries_are_static_sentences(self, config: Config) -> None:
        """summary has no template and ends with a period."""
        for rule in alerts_by_name(config).values():
            summary = rule["annotations"]["summary"]
            assert "{{" not in summary, summary
            assert summary.endswith("."), summary

    def test_descriptions_use_labels_and_value(self, config: Config) -> None:
        """description names the job and, except for absent metrics, shows the humanized $value."""
        for name, rule in alerts_by_name(config).items():
            description = rule["annotations"]["description"]
            assert f"$labels.{config.alerts.job_label}" in description, name
            if name != "SubagentMetricsAbsent":
                assert re.search(r"\$value \| (humanize\w*|printf)", description), name

    def test_runbook_url_is_the_base_url_and_the_anchor(self) -> None:
        """runbook_url = alerts.runbook_base_url + '#' + the lower-cased alert name."""
        alerts = alerts_by_name(config_with(runbook_base_url="https://wiki.example/runbooks"))
        for name, rule in alerts.items():
            assert rule["annotations"]["runbook_url"] == f"https://wiki.example/runbooks#{name.lower()}"

    def test_every_runbook_anchor_exists(self) -> None:
        """docs/runbooks.md has a heading for every alert's anchor."""
        headings = (REPO / RUNBOOKS_DOC).read_text().splitlines()
        slugs = {
            re.sub(r"[^a-z0-9 _-]", "", h.lstrip("#").strip().lower()).replace(" ", "-") for h in headings
        }
        for rule in alerts_by_name(Config.default()).values():
            anchor = rule["annotations"]["runbook_url"].rpartition("#")[2]
            assert anchor == runbook_anchor(rule["alert"])
            assert anchor in slugs, anchor

    def test_dashboard_url_is_added_only_when_configured(self) -> None:
        """dashboard_url annotation appears with alerts.dashboard_url and not without."""
        with_url = alerts_by_name(config_with(dashboard_url="https://grafana.example/d/x"))
        without = alerts_by_name(Config.default())
        assert all(
            r["annotations"]["dashboard_url"] == "https://grafana.example/d/x" for r in with_url.values()
        )
        assert all("dashboard_url" not in r["annotations"] for r in without.values())

    def test_disabled_alerts_are_neither_rendered_nor_tested(self) -> None:
        """enabled: false drops the alert and its promtool test file."""
        config = config_with(slow_executions={"enabled": False})
        assert "SubagentSlowExecutions" not in alerts_by_name(config)
        assert TESTS_DIR / "SubagentSlowExecutions.yaml" not in render_rules(config)

    def test_absent_uses_absent_only_with_equality_matchers(self) -> None:
        """absent() joins SubagentMetricsAbsent only when every matcher is an equality."""
        regex = alerts_by_name(Config.default())["SubagentMetricsAbsent"]["expr"]
        equal = alerts_by_name(config_with(selector='job="my-agent"'))["SubagentMetricsAbsent"]["expr"]
        assert "absent(" not in regex
        assert 'absent(subagent_max_concurrency{job="my-agent"})' in equal


def recording_rule(config: Config, suffix: str) -> dict[str, Any]:
    (rule,) = [r for r in rule_groups(config).recording["rules"] if r["record"].endswith(suffix)]
    return rule


def aggregation(expr: str) -> tuple[str, list[str], str]:
    """(operator, by labels, metric) of ``op by (labels) (metric{...})``."""
    node = promql_parser.parse(expr)
    assert isinstance(node, promql_parser.AggregateExpr), expr
    return str(node.op), list(node.modifier.labels), node.expr.name


def compared(expr: str) -> tuple[str, str, float]:
    """(left series, right series, headroom) of ``max_over_time(a[w]) > max_over_time(b[w]) (+ h)``."""
    node = promql_parser.parse(expr)
    assert str(node.op) == ">", expr
    rhs, headroom = node.rhs, 0.0
    if isinstance(rhs, promql_parser.BinaryExpr):
        assert str(rhs.op) == "+", expr
        rhs, headroom = rhs.lhs, float(str(rhs.rhs))
    series = []
    for call in (node.lhs, rhs):
        assert call.func.name == "max_over_time", expr
        series.append(call.args[0].vector_selector.name)
    return series[0], series[1], headroom


class TestConcurrencyScope:
    """In-memory store: max_concurrency per process; shared store: one limit for the fleet."""

    def test_in_memory_store_compares_each_instance_with_its_limit(self) -> None:
        """Active executions summed per instance against that instance's max_concurrency."""
        config = Config.default()
        active = recording_rule(config, ":subagent_active_count:sum")
        limit = recording_rule(config, ":subagent_max_concurrency:max")
        assert aggregation(active["expr"]) == ("sum", ["job", "instance"], "subagent_active_count")
        assert aggregation(limit["expr"]) == ("max", ["job", "instance"], "subagent_max_concurrency")
        alert = alerts_by_name(config)["SubagentActiveOverMaxConcurrency"]
        assert compared(alert["expr"]) == (active["record"], limit["record"], 0.0)
        assert active["record"] == "job_instance:subagent_active_count:sum"

    def test_shared_store_compares_the_fleet_sum_with_one_limit(self) -> None:
        """Active executions summed over the job's instances against the max (not sum) of the limit."""
        config = fleet_with(active_over_max_concurrency={"threshold": 2})
        active = recording_rule(config, ":subagent_active_count:sum")
        limit = recording_rule(config, ":subagent_max_concurrency:max")
        assert (active["record"], limit["record"]) == (
            "job:subagent_active_count:sum",
            "job:subagent_max_concurrency:max",
        )
        assert aggregation(active["expr"]) == ("sum", ["job"], "subagent_active_count")
        assert aggregation(limit["expr"]) == ("max", ["job"], "subagent_max_concurrency")
        alert = alerts_by_name(config)["SubagentActiveOverMaxConcurrency"]
        assert compared(alert["expr"]) == (active["record"], limit["record"], 2.0)

    def test_shared_store_keeps_the_job_and_group_by_labels(self) -> None:
        """With group_by: [cluster] and another job label the fleet is summed per service and cluster."""
        config = fleet_with(group_by=["cluster"], job_label="service", selector='service=~".+"')
        active = recording_rule(config, ":subagent_active_count:sum")
        assert active["record"] == "service_cluster:subagent_active_count:sum"
        assert aggregation(active["expr"]) == ("sum", ["service", "cluster"], "subagent_active_count")

    @pytest.mark.parametrize("make", [config_with, fleet_with], ids=["memory", "fleet"])
    def test_max_concurrency_is_never_summed(self, make: Any) -> None:
        """Every aggregation over subagent_max_concurrency is a max (each process exports the limit)."""
        found: list[str] = []

        def visit(node: Any) -> None:
            if isinstance(node, promql_parser.AggregateExpr):
                names = [name for name, _ in selectors(str(node.expr))]
                if "subagent_max_concurrency" in names or any(
                    ":subagent_max_concurrency:" in n for n in names
                ):
                    found.append(str(node.op))

        for rule in all_rules(make(group_by=["cluster"])):
            promql_parser.walk(promql_parser.parse(rule["expr"]), visit)
        assert found
        assert set(found) == {"max"}

    def test_descriptions_name_the_instance_only_per_instance(self) -> None:
        """The in-memory alert names the instance; the fleet alert speaks of the job's instances."""
        memory = alerts_by_name(Config.default())["SubagentActiveOverMaxConcurrency"]["annotations"]
        fleet = alerts_by_name(fleet_with())["SubagentActiveOverMaxConcurrency"]["annotations"]
        assert "$labels.instance" in memory["description"]
        assert "$labels.instance" not in fleet["description"]
        assert "fleet-wide max_concurrency" in fleet["description"]


class TestExpressions:
    def test_every_expression_parses(self, config: Config) -> None:
        """promql-parser accepts every recording and alerting expression."""
        for rule in all_rules(config):
            promql_parser.parse(rule["expr"])

    def test_every_selector_on_our_metrics_carries_the_matchers(self, config: Config) -> None:
        """Each vector selector on a catalog metric (or up) has exactly the configured matchers."""
        expected = wanted(config.alerts.matchers)
        for rule in all_rules(config):
            for name, matchers in selectors(rule["expr"]):
                if ":" not in name:
                    # The money rules select the quota gauges' cost series (resource="cost") as well.
                    mine = [m for m in matchers if m != ("resource", "Equal", "cost")]
                    assert mine == expected, (rule.get("record") or rule["alert"], name)

    def test_recorded_series_are_read_with_the_matchers_they_keep(self, config: Config) -> None:
        """Reads of recorded series carry the matchers on the job label and group_by labels."""
        kept = {config.alerts.job_label, *config.alerts.group_by}
        expected = wanted(tuple(m for m in config.alerts.matchers if m.name in kept))
        for rule in all_rules(config):
            for name, matchers in selectors(rule["expr"]):
                if ":" in name:
                    assert matchers == expected, name

    def test_every_metric_named_is_exported_or_recorded(self, config: Config) -> None:
        """Expressions read only catalog series, Prometheus's up, or series recorded here."""
        recorded = {r["record"] for r in rule_groups(config).recording["rules"]}
        exported = {series for spec in cat.CATALOG for series in spec.series_names}
        for rule in all_rules(config):
            for name, _ in selectors(rule["expr"]):
                assert name in exported | recorded | {"up"}, name

    def test_a_quote_and_backslash_in_a_selector_value_reach_promql_intact(self) -> None:
        """A job value with a quote and backslash is escaped: the parser reads back the exact value."""
        config = config_with(selector=QUOTE_AND_BACKSLASH)
        for rule in all_rules(config):
            for _, matchers in selectors(rule["expr"]):
                assert ("job", "Equal", 'my "quoted" agent\\x') in matchers

    def test_a_selector_value_cannot_inject_promql(self) -> None:
        """A value crafted to close the selector stays one label value; no vector() call appears."""
        crafted = 'x"}) or vector(1) or up{job="y'
        config = config_with(selector=r'job="x\"}) or vector(1) or up{job=\"y"')
        calls: list[str] = []

        def visit(node: Any) -> None:
            if isinstance(node, promql_parser.Call):
                calls.append(node.func.name)

        for rule in all_rules(config):
            promql_parser.walk(promql_parser.parse(rule["expr"]), visit)
        assert "vector" not in calls
        for rule in all_rules(config):
            assert all(
                [m for m in matchers if m != ("resource", "Equal", "cost")] == [("job", "Equal", crafted)]
                for _, matchers in selectors(rule["expr"])
            )


class TestGeneratedTests:
    def test_rate_window_under_two_minutes_is_refused_with_the_key(self) -> None:
        """A rate window too short for two 1m scrapes is refused by the config, naming the key."""
        with pytest.raises(ValueError, match=r"alerts\.rate_window"):
            render_rules(config_with(rate_window="90s"))

    def test_second_resolution_for_steps_the_tests_to_match(self) -> None:
        """for: 90s with a 150s window: the alert's tests sample and evaluate every 30s."""
        config = config_with(rate_window="150s", high_error_rate={"for": "90s"})
        tests = yaml.safe_load(render_rules(config)[TESTS_DIR / "SubagentHighErrorRate.yaml"])
        assert tests["evaluation_interval"] == "30s"
        assert {t["interval"] for t in tests["tests"]} == {"30s"}
        firing = tests["tests"][0]
        assert firing["name"].endswith("fires after 90s, not 30s before")
        times = [c["eval_time"] for c in firing["alert_rule_test"]]
        # Quiet until traffic starts (step 5), above the threshold from step 7, firing 3 steps later.
        assert times == ["150s", "270s", "5m"]

    def test_minute_resolution_keeps_minute_steps(self) -> None:
        """Whole-minute for and window keep the 1m step (the committed tests are unchanged)."""
        tests = yaml.safe_load(render_rules(Config.default())[TESTS_DIR / "SubagentQuotaRejections.yaml"])
        assert tests["evaluation_interval"] == "1m"

    def test_long_spans_are_checked_at_a_bounded_number_of_points(self) -> None:
        """A 1s-step test over many minutes probes both ends and a spread, not every second."""
        config = config_with(rate_window="121s", quota_rejections={"for": "1301s"})
        tests = yaml.safe_load(render_rules(config)[TESTS_DIR / "SubagentQuotaRejections.yaml"])["tests"]
        assert tests[0]["interval"] == "1s"
        assert max(len(t["alert_rule_test"]) for t in tests) <= 60

    @settings(max_examples=12, deadline=None)
    @given(window=st.integers(min_value=100, max_value=400), hold=st.integers(min_value=0, max_value=1500))
    def test_any_accepted_for_and_window_render_tests_at_a_matching_step(
        self, window: int, hold: int
    ) -> None:
        """Whatever whole-second for and window the config accepts, the tests step at a divisor of both."""
        only = {key: {"enabled": False} for key in ALERT_NAMES if key != "quota_rejections"}
        try:
            config = config_with(rate_window=f"{window}s", quota_rejections={"for": f"{hold}s"}, **only)
        except ValueError:
            assert window < 120 or (window + hold) / math.gcd(window, hold, 60) > MAX_TEST_STEPS
            return
        tests = yaml.safe_load(render_rules(config)[TESTS_DIR / "SubagentQuotaRejections.yaml"])
        step = int(tests["evaluation_interval"].removesuffix("s").removesuffix("m")) * (
            60 if tests["evaluation_interval"].endswith("m") else 1
        )
        assert window % step == 0
        assert hold % step == 0
        assert 60 % step == 0

    def test_the_config_and_the_renderer_list_the_same_alerts(self) -> None:
        """The config's alert keys (bounded there) are the renderer's, in the same order."""
        assert tuple(ALERT_NAMES) == ALERT_KEYS

    @pytest.mark.parametrize("threshold", [1200, 1199.01, 1500, 0.09])
    def test_slow_threshold_beyond_the_buckets_is_refused(self, threshold: float) -> None:
        """A p95 threshold the histogram cannot tell apart is refused by the config, before rendering."""
        with pytest.raises(ValueError, match=r"slow_executions[\s\S]*(1199|0\.1)"):
            config_with(slow_executions={"threshold": threshold})

    @settings(max_examples=100, deadline=None)
    @given(st.floats(min_value=0.1, max_value=1199))
    def test_every_accepted_slow_threshold_gets_expressible_levels(self, threshold: float) -> None:
        """For any accepted threshold the tests' levels straddle it and the histogram can produce both."""
        config = config_with(slow_executions={"threshold": threshold})
        above, below = _SPECS["slow_executions"].levels(_setup(config, rule_groups(config)), threshold)
        assert below <= threshold < above <= DURATION_BUCKETS[-1]
        assert below >= 0.95 * DURATION_BUCKETS[0]
        for level in (above, below):
            increments = _p95_increments(level)
            assert all(0 <= v <= TRAFFIC for v in increments.values())

    @pytest.mark.parametrize("store", ["memory", REDIS_STORE])
    def test_the_largest_concurrency_headroom_renders_a_bounded_test(self, store: str) -> None:
        """Headroom 1e6 over max_concurrency 1 spreads over a few instances, not a million."""
        config = Config.model_validate(
            {
                "agent": {"subagent": {"max_concurrency": 1}},
                "quota": {"store": store},
                "alerts": {"active_over_max_concurrency": {"threshold": 1_000_000}},
            }
        )
        text = render_rules(config)[CONCURRENCY_TESTS]
        assert len(text) < 200_000
        for test in yaml.safe_load(text)["tests"]:
            last = len(test["input_series"][0]["values"].split()) - 1
            assert len(active_per_instance(test, last, "instance")) <= MAX_INSTANCES

    def test_concurrency_headroom_above_the_bound_is_refused(self) -> None:
        """A headroom over a million concurrent executions is refused at load."""
        with pytest.raises(ValueError, match=r"active_over_max_concurrency\.threshold"):
            config_with(active_over_max_concurrency={"threshold": 1_000_001})

    def test_series_carry_labels_that_satisfy_the_selector(self, config: Config) -> None:
        """Every input series of the generated tests matches the configured selector."""
        for path, text in render_rules(config).items():
            if path.parent != TESTS_DIR:
                continue
            for test in yaml.safe_load(text)["tests"]:
                for series in test["input_series"]:
                    (_, matchers), *_ = selectors(series["series"])
                    labels = {label: value for label, _, value in matchers}
                    for m in config.alerts.matchers:
                        assert matches(m, labels[m.name]), (series["series"], m.render())


CONCURRENCY_TESTS = TESTS_DIR / "SubagentActiveOverMaxConcurrency.yaml"


def concurrency_tests(config: Config) -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = yaml.safe_load(render_rules(config)[CONCURRENCY_TESTS])["tests"]
    return tests


def active_per_instance(test: dict[str, Any], minute: int, instance_label: str) -> dict[str, float]:
    """Active executions of each instance (all depths) at ``minute`` of a generated test."""
    totals: dict[str, float] = defaultdict(float)
    for series in test["input_series"]:
        ((name, matchers),) = selectors(series["series"])
        if name == "subagent_active_count":
            labels = {label: value for label, _, value in matchers}
            totals[labels[instance_label]] += float(series["values"].split()[minute])
    return dict(totals)


def minutes(eval_time: str) -> int:
    return int(eval_time.removesuffix("m"))


class TestGeneratedConcurrencyTests:
    """The generated tests pin the case that tells the modes apart: instances each within the limit,
    together above it."""

    @pytest.mark.parametrize("alerts", [{}, CUSTOM], ids=["default", "custom"])
    def test_fleet_fires_on_instances_each_within_the_limit(self, alerts: dict[str, Any]) -> None:
        """For a shared store, the firing test spreads the load: every instance below max_concurrency."""
        config = fleet_with(**alerts)
        limit = config.subagent.max_concurrency
        headroom = config.alerts.active_over_max_concurrency.threshold
        test = next(t for t in concurrency_tests(config) if "just above" in t["name"])
        firing = next(c for c in test["alert_rule_test"] if c["exp_alerts"])
        active = active_per_instance(test, minutes(firing["eval_time"]), config.alerts.instance_label)
        assert len(active) >= 2
        assert all(value < limit for value in active.values()), active
        assert sum(active.values()) > limit + headroom
        assert firing["exp_alerts"][0]["exp_labels"].keys() == {"job", *config.alerts.group_by, "severity"}

    @pytest.mark.parametrize("alerts", [{}, CUSTOM], ids=["default", "custom"])
    def test_in_memory_does_not_fire_on_the_same_spread(self, alerts: dict[str, Any]) -> None:
        """For the in-memory store, instances each within their limit, together above it, never fire."""
        config = config_with(**alerts)
        limit = config.subagent.max_concurrency
        headroom = config.alerts.active_over_max_concurrency.threshold
        test = next(t for t in concurrency_tests(config) if "each within its own limit" in t["name"])
        assert all(check["exp_alerts"] == [] for check in test["alert_rule_test"])
        last = minutes(test["alert_rule_test"][-1]["eval_time"])
        active = active_per_instance(test, last, config.alerts.instance_label)
        assert len(active) >= 2
        assert all(value < limit for value in active.values()), active
        assert sum(active.values()) > limit + headroom

    def test_fleet_without_a_second_instance_value_is_refused(self) -> None:
        """A selector pinning one instance leaves no room for a fleet's test; the error says so."""
        with pytest.raises(ValueError, match="several instances"):
            render_rules(fleet_with(selector='job=~".+", instance="agent-0:9464"'))


class TestHumanize:
    @pytest.mark.parametrize(
        ("value", "text"),
        [(121.5, "2m 1s"), (30.25, "30.25s"), (0.5, "500ms"), (90061.0, "1d 1h 1m 1s"), (3600.0, "1h 0m 0s")],
    )
    def test_humanize_duration_matches_prometheus(self, value: float, text: str) -> None:
        """humanize_duration formats like Prometheus's humanizeDuration."""
        assert humanize_duration(value) == text

    @pytest.mark.parametrize(
        ("value", "text"), [(6.0, "6"), (1234.0, "1.234k"), (0.0123, "12.3m"), (0.0, "0")]
    )
    def test_humanize_matches_prometheus(self, value: float, text: str) -> None:
        """humanize formats like Prometheus's humanize (SI prefixes, 4 significant digits)."""
        assert humanize(value) == text

    def test_humanize_percentage_matches_prometheus(self) -> None:
        """humanize_percentage formats like Prometheus's humanizePercentage."""
        assert humanize_percentage(0.051) == "5.1%"

    def test_expand_fills_labels_with_blocks_and_values(self) -> None:
        """expand fills $labels, {{- with }} blocks and $value pipelines."""
        text = (
            "From {{ $labels.job }} {{- with $labels.instance }} at {{ . }}{{ end }}: "
            '{{ $value | printf "%.2f" }}'
        )
        assert expand(text, {"job": "a", "instance": "i"}, 0.125) == "From a at i: 0.12"
        assert expand(text, {"job": "a"}, 0.5) == "From a: 0.50"

    def test_expand_refuses_an_unknown_form(self) -> None:
        """A template form expand does not know raises instead of producing a wrong expectation."""
        with pytest.raises(ValueError, match="unsupported template form"):
            expand("{{ $value | humanize1024 }}", {}, 1.0)


#: Selector values that must reach every rendered file exactly as configured (after PromQL escapes).
ADVERSARIAL_VALUES = (
    'x"}) or vector(1) or up{job="y',
    "a\\b\\\\c",
    "key: value # not a comment",
    "- item\n".strip(),
    "|\n".strip() + " > & * ! % @ ` '",
    "é 😀 \u00a0 \u200b \u202e \ufeff \uffff end",
    "<< sel >> <% if %> {# x #}",
)


def _vector_selectors_in_every_output(config: Config) -> list[tuple[str, str, list[tuple[str, str, str]]]]:
    """(file, metric, matchers) of every vector selector in every rendered file, each file parsed back."""
    from subagent_telemetry.render import render_files

    found = []
    for path, text in render_files(config).items():
        exprs = []
        if path.suffix == ".json":
            exprs = _json_exprs(json.loads(text))
        for data in yaml.safe_load_all(text) if path.suffix == ".yaml" else ():
            if path.parent == TESTS_DIR:
                exprs += [s["series"] for t in data["tests"] for s in t["input_series"]]
            elif data.get("kind") == "ConfigMap":  # dashboards for the Grafana sidecar
                exprs += [
                    e for v in data["data"].values() if v.startswith("{") for e in _json_exprs(json.loads(v))
                ]
            elif "groups" in data or "groups" in data.get("spec", {}):
                groups = data["spec"]["groups"] if "spec" in data else data["groups"]
                exprs += [r["expr"] for g in groups for r in g["rules"]]
        for expr in exprs:
            grafana = expr.replace("$__rate_interval", "5m").replace("$__range", "1h")
            found += [(str(path), name, matchers) for name, matchers in selectors(grafana)]
    return found


def _json_exprs(node: Any) -> list[str]:
    """Every PromQL expression in a dashboard: targets' expr and query variables' query."""
    if isinstance(node, dict):
        own = [v for k, v in node.items() if k in ("expr", "query") and isinstance(v, str) and "{" in v]
        own = [re.sub(r"^label_values\((.*), \w+\)$", r"\1", v) for v in own]
        return own + [e for v in node.values() for e in _json_exprs(v)]
    if isinstance(node, list):
        return [e for v in node for e in _json_exprs(v)]
    return []


class TestAdversarialSelectors:
    """Selector values reach rules, PrometheusRule, Mimir file, promtool tests and dashboards intact."""

    def test_every_output_format_reads_back_the_configured_values(self) -> None:
        """Parsed back from every rendered file, each selector carries exactly the configured values."""
        wanted = [("job" if i == 0 else f"l{i}", value) for i, value in enumerate(ADVERSARIAL_VALUES)]
        selector = ", ".join(Matcher(name=n, op="=", value=v).render() for n, v in wanted)
        config = config_with(selector=selector + ', x!="y"')
        assert [m.value for m in config.alerts.matchers] == [*ADVERSARIAL_VALUES, "y"]
        found = _vector_selectors_in_every_output(config)
        from subagent_telemetry.render import render_files

        files = render_files(config).items()
        with_queries = {str(p) for p, text in files if re.search(r"subagent_\w+\{", text)}
        assert {where for where, _, _ in found} == with_queries  # every file holding a query was read
        for where, name, matchers in found:
            if name.startswith("subagent_") or name == "up":
                for label, value in wanted:
                    assert (label, "Equal", value) in matchers, (where, name, matchers)

    @settings(max_examples=10, deadline=None)
    @given(st.text(min_size=1, max_size=12))
    def test_any_accepted_value_reads_back_exactly(self, value: str) -> None:
        """Any text either is refused at load or reaches every output format unchanged."""
        selector = Matcher.model_construct(name="job", op="=", value=value).render()
        disabled = {key: {"enabled": False} for key in ALERT_NAMES if key != "high_error_rate"}
        try:
            config = config_with(selector=selector, **disabled)
        except ValueError:
            return
        for where, name, matchers in _vector_selectors_in_every_output(config):
            if name.startswith("subagent_") or name == "up":
                assert ("job", "Equal", value) in matchers, (where, name)

    @pytest.mark.parametrize("value", ["$job", "${instance}", "[[job]]", "$__all"])
    def test_grafana_variables_in_a_selector_value_are_refused(self, value: str) -> None:
        """A value Grafana would replace in a dashboard query is refused at load."""
        with pytest.raises(ValueError, match="Grafana would replace"):
            config_with(selector=f'job="{value}"')

    @pytest.mark.parametrize("key", ["runbook_base_url", "dashboard_url"])
    def test_template_actions_in_annotation_urls_are_refused(self, key: str) -> None:
        """A URL holding {{ }} would be expanded by Prometheus; it is refused at load."""
        with pytest.raises(ValueError, match="expand as a template"):
            config_with(**{key: "https://x.example/{{ $labels.job }}"})

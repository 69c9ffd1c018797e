"""Dashboards: the dashboard-linter rule set, the config-driven values and the committed JSON.

The Go dashboard-linter cannot be installed here, so its rules are specified as tests over the rendered
JSON: a datasource variable, job/instance variables, title/description/unit/datasource on every panel,
$__rate_interval in every rate, aggregated counters, read-only, pinned schemaVersion and UIDs. Every
expression is parsed with a real PromQL parser after Grafana's variable substitution.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("grafana_foundation_sdk")

import promql_parser

from subagent_telemetry._catalog import CATALOG, QUOTA_LIMIT, QUOTA_USED, Kind, by_name
from subagent_telemetry._config import Config
from subagent_telemetry.render.dashboards import DASHBOARD_PATHS, render_dashboards
from tests.support.grafana import (
    NO_QUERY_PANEL_TYPES,
    PanelQuery,
    Variables,
    format_interval,
    panel_queries,
    panels,
    rate_interval_seconds,
    regex_escape,
)

REPO = Path(__file__).resolve().parents[1]
#: The schemaVersion grafana-foundation-sdk 1769699379!11.6.0 emits (Grafana 11.6).
SCHEMA_VERSION = 41
#: A $__rate_interval value no other part of an expression uses, to find where it ended up.
SENTINEL_RATE_INTERVAL = Variables(scrape_interval_seconds=4.25, interval_seconds=0.0)
#: Functions whose range must be $__rate_interval (deriv: the quota forecast's slope).
RATE_FUNCTIONS = {"rate", "irate", "increase", "deriv"}

CUSTOM = Config.model_validate(
    {
        "alerts": {
            "selector": 'job="my-agent", cluster=~"prod-.*"',
            "job_label": "service_name",
            "instance_label": "pod",
            "group_by": ["cluster"],
            "rate_window": "10m",
            "high_error_rate": {"threshold": 0.125},
            "quota_nearly_exhausted": {"threshold": 0.9},
            "slow_executions": {"threshold": 45},
        },
        "dashboards": {
            "title_prefix": "Agents",
            "tags": ["agents"],
            "uid_prefix": "agents",
            "refresh": "1m",
            "datasource_uid": "mimir",
        },
    }
)


def render(config: Config) -> dict[str, dict[str, Any]]:
    """Rendered dashboards keyed by their UID suffix (``overview``, ``quotas``)."""
    files = render_dashboards(config)
    return {slug: json.loads(files[path]) for slug, path in DASHBOARD_PATHS.items()}


DEFAULT = render(Config.default())
BOARDS = list(DEFAULT.values())
BOARD_IDS = list(DEFAULT)
#: A fleet sharing its budget in Redis, with alert headroom: the concurrency panel differs.
FLEET_CONFIG = Config.model_validate(
    {
        "quota": {"store": "redis://redis.example:6379/0"},
        "alerts": {"active_over_max_concurrency": {"threshold": 2}},
    }
)
FLEET = render(FLEET_CONFIG)
LINTED = [*BOARDS, *FLEET.values()]
LINTED_IDS = [*BOARD_IDS, *(f"fleet-{slug}" for slug in FLEET)]


def data_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in panels(board) if p["type"] != "row"]


def queries(board: dict[str, Any]) -> list[PanelQuery]:
    return panel_queries(board)


def all_queries(boards: dict[str, dict[str, Any]]) -> list[PanelQuery]:
    return [q for board in boards.values() for q in panel_queries(board)]


def parse(expr: str, variables: Variables | None = None) -> Any:
    return promql_parser.parse((variables or Variables()).substitute(expr))


def children(node: Any) -> list[Any]:
    if isinstance(node, promql_parser.BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, promql_parser.Call):
        return list(node.args)
    if isinstance(node, promql_parser.MatrixSelector):
        return [node.vector_selector]
    if isinstance(node, promql_parser.AggregateExpr):
        return [node.expr] + ([node.param] if node.param is not None else [])
    if isinstance(node, promql_parser.ParenExpr | promql_parser.UnaryExpr | promql_parser.SubqueryExpr):
        return [node.expr]
    return []


def walk(node: Any, parents: tuple[Any, ...] = ()) -> Iterator[tuple[Any, tuple[Any, ...]]]:
    """Every node with its ancestors (nearest last)."""
    yield node, parents
    for child in children(node):
        yield from walk(child, (*parents, node))


def selectors(node: Any) -> list[Any]:
    return [n for n, _ in walk(node) if isinstance(n, promql_parser.VectorSelector)]


def matcher_triples(vector_selector: Any) -> set[tuple[str, str, str]]:
    ops = {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}
    return {(m.name, ops[str(m.op).split(".")[-1]], m.value) for m in vector_selector.matchers.matchers}


def step_values(panel: dict[str, Any]) -> list[float]:
    steps = panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])
    return [s["value"] for s in steps if s["value"] is not None]


def by_title(board: dict[str, Any], title: str) -> dict[str, Any]:
    matches = [p for p in panels(board) if p["title"] == title]
    assert len(matches) == 1, f"{len(matches)} panels titled {title!r}"
    return matches[0]


class TestRendering:
    def test_two_dashboards_are_rendered(self) -> None:
        """The default config renders exactly the Overview and the Quotas dashboards."""
        assert set(render_dashboards(Config.default())) == set(DASHBOARD_PATHS.values())

    def test_rendering_is_deterministic(self) -> None:
        """Two renders of the same config are byte-identical (the drift check relies on it)."""
        assert render_dashboards(Config.default()) == render_dashboards(Config.default())

    def test_committed_json_matches_the_renderer(self) -> None:
        """dashboards/*.json in the repository is what the default config renders."""
        for path, text in render_dashboards(Config.default()).items():
            assert (REPO / path).read_text(encoding="utf-8") == text, f"{path} drifted; run make render"

    @pytest.mark.parametrize(
        ("slug", "uid", "title"),
        [
            ("overview", "subagent-overview", "Subagents / Overview"),
            ("quotas", "subagent-quotas", "Subagents / Quotas"),
        ],
    )
    def test_uids_and_titles_are_pinned(self, slug: str, uid: str, title: str) -> None:
        """UIDs are stable (links and provisioning depend on them) and titles carry the prefix."""
        assert DEFAULT[slug]["uid"] == uid
        assert DEFAULT[slug]["title"] == title

    def test_panel_ids_are_unique(self) -> None:
        """Panel ids are unique within each dashboard (Grafana links to panels by id)."""
        for board in BOARDS:
            ids = [p["id"] for p in panels(board)]
            assert len(ids) == len(set(ids))

    def test_panels_fit_the_grid(self) -> None:
        """No panel is wider than Grafana's 24-column grid."""
        for board in BOARDS:
            for panel in panels(board):
                pos = panel["gridPos"]
                assert pos["x"] + pos["w"] <= 24, panel["title"]


@pytest.mark.parametrize("board", LINTED, ids=LINTED_IDS)
class TestLinterRules:
    def test_schema_version_is_pinned(self, board: dict[str, Any]) -> None:
        """The pinned SDK emits schemaVersion 41; a new SDK must be a deliberate change."""
        assert board["schemaVersion"] == SCHEMA_VERSION

    def test_read_only(self, board: dict[str, Any]) -> None:
        """Dashboards are generated, so they are not editable in Grafana."""
        assert board["editable"] is False

    def test_datasource_variable(self, board: dict[str, Any]) -> None:
        """A Prometheus ``datasource`` variable labelled "Data source" defaults to the configured UID."""
        (var,) = [v for v in board["templating"]["list"] if v["name"] == "datasource"]
        assert var["type"] == "datasource"
        assert var["query"] == "prometheus"
        assert var["label"] == "Data source"
        assert var["current"]["value"] == "prometheus"

    @pytest.mark.parametrize(("name", "label"), [("job", "job"), ("instance", "instance")])
    def test_job_and_instance_variables(self, board: dict[str, Any], name: str, label: str) -> None:
        """job/instance are multi-value with All = ``.+``, queried from ``$datasource``."""
        (var,) = [v for v in board["templating"]["list"] if v["name"] == name]
        assert var["type"] == "query"
        assert var["multi"] is True
        assert var["includeAll"] is True
        assert var["allValue"] == ".+"
        assert var["datasource"]["uid"] == "${datasource}"
        assert var["query"].startswith("label_values(")
        assert var["query"].endswith(f", {label})")

    def test_instance_variable_follows_job(self, board: dict[str, Any]) -> None:
        """Instances are listed for the selected jobs only."""
        (var,) = [v for v in board["templating"]["list"] if v["name"] == "instance"]
        assert 'job=~"$job"' in var["query"]

    def test_every_panel_has_title_description_unit_and_datasource(self, board: dict[str, Any]) -> None:
        """Each panel has a title, a description, a unit and the ``${datasource}`` data source."""
        for panel in data_panels(board):
            assert panel.get("title"), panel
            assert panel.get("description"), panel["title"]
            assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]

    def test_every_target_uses_the_datasource_variable(self, board: dict[str, Any]) -> None:
        """Each target queries ``${datasource}``, never a fixed data source."""
        for panel in data_panels(board):
            for target in panel.get("targets", []):
                assert target["datasource"]["uid"] == "${datasource}", panel["title"]

    def test_every_query_panel_has_targets(self, board: dict[str, Any]) -> None:
        """Only rows and the alert list go without PromQL targets."""
        for panel in data_panels(board):
            if panel["type"] not in NO_QUERY_PANEL_TYPES:
                assert panel.get("targets"), panel["title"]

    def test_every_expression_parses(self, board: dict[str, Any]) -> None:
        """Every target is valid PromQL once Grafana's variables are substituted."""
        for query in queries(board):
            try:
                parse(query.expr)
            except (ValueError, SyntaxError) as err:  # The parser raises ValueError.
                pytest.fail(f"{query.name}: {err}\n{query.expr}")

    def test_every_rate_uses_rate_interval(self, board: dict[str, Any]) -> None:
        """rate/irate/increase/deriv ranges are ``$__rate_interval``, nothing else."""
        sentinel = SENTINEL_RATE_INTERVAL.rate_interval_seconds
        for query in queries(board):
            for node, _ in walk(parse(query.expr, SENTINEL_RATE_INTERVAL)):
                if isinstance(node, promql_parser.Call) and node.func.name in RATE_FUNCTIONS:
                    (matrix,) = node.args
                    assert matrix.range.total_seconds() == sentinel, query.name

    def test_counters_are_aggregated_with_sum_by(self, board: dict[str, Any]) -> None:
        """A counter is only read through ``sum by (...) (rate(...))``; never raw or unaggregated."""
        counters = {m.name for m in CATALOG if m.kind is Kind.COUNTER}
        counters |= {f"{m.name}_bucket" for m in CATALOG if m.kind is Kind.HISTOGRAM}
        for query in queries(board):
            for node, parents in walk(parse(query.expr)):
                if not (isinstance(node, promql_parser.VectorSelector) and node.name in counters):
                    continue
                matrix, call, agg = parents[-1], parents[-2], parents[-3]
                assert isinstance(matrix, promql_parser.MatrixSelector), query.name
                assert isinstance(call, promql_parser.Call), query.name
                assert call.func.name in {"rate", "irate", "increase"}, query.name
                assert isinstance(agg, promql_parser.AggregateExpr), query.name
                assert str(agg.op) == "sum", query.name
                assert str(agg.modifier.type).endswith("By"), query.name
                assert agg.modifier.labels, query.name

    def test_quota_gauges_are_combined_with_max_never_sum(self, board: dict[str, Any]) -> None:
        """Quota gauges go through ``max by (..., session, resource)``: a fleet exports one budget N times."""
        quota = {QUOTA_LIMIT.name, QUOTA_USED.name}
        for query in queries(board):
            for node, parents in walk(parse(query.expr)):
                if isinstance(node, promql_parser.VectorSelector) and node.name in quota:
                    aggs = [p for p in parents if isinstance(p, promql_parser.AggregateExpr)]
                    assert aggs, query.name
                    assert str(aggs[-1].op) == "max", query.name
                    assert {"session", "resource"} <= set(aggs[-1].modifier.labels), query.name

    def test_only_catalog_metrics_are_queried(self, board: dict[str, Any]) -> None:
        """Every metric name in a panel or variable query exists in the metric catalog."""
        exprs = [q.expr for q in queries(board)]
        exprs += [
            v["query"].removeprefix("label_values(").rsplit(",", 1)[0]
            for v in board["templating"]["list"]
            if v["type"] == "query"
        ]
        for expr in exprs:
            for vs in selectors(parse(expr)):
                by_name(vs.name)  # Raises KeyError for a metric outside the catalog.

    def test_every_selector_has_the_config_and_variable_matchers(self, board: dict[str, Any]) -> None:
        """Each vector selector carries the configured selector and the job/instance variables."""
        for query in queries(board):
            for vs in selectors(parse(query.expr)):
                triples = matcher_triples(vs)
                assert ("job", "=~", ".+") in triples, query.name
                assert triples >= {("job", "=~", ".+"), ("instance", "=~", ".+")}, query.name

    def test_variables_are_regex_matched(self, board: dict[str, Any]) -> None:
        """$job/$instance appear only in ``=~`` matchers, so All (``.+``) and ``(a|b)`` work."""
        for query in queries(board):
            for var in ("$job", "$instance"):
                assert f'=~"{var}"' in query.expr, query.name
                assert query.expr.count(var) == query.expr.count(f'=~"{var}"'), query.name


class TestThresholds:
    """The dashboards draw the alert rules' numbers, read from the same config fields."""

    @pytest.mark.parametrize("config", [Config.default(), CUSTOM], ids=["default", "custom"])
    def test_error_ratio_panels_use_the_high_error_rate_threshold(self, config: Config) -> None:
        """Every error-ratio panel has exactly alerts.high_error_rate.threshold as its red step."""
        overview = render(config)["overview"]
        titles = ["Error ratio", "Error ratio by depth"]
        ratio_panels = [p for p in panels(overview) if p["title"] in titles]
        assert len(ratio_panels) == 3  # Stat and time series share a title.
        for panel in ratio_panels:
            assert step_values(panel) == [config.alerts.high_error_rate.threshold], panel["title"]

    @pytest.mark.parametrize("config", [Config.default(), CUSTOM], ids=["default", "custom"])
    def test_duration_panels_use_the_slow_executions_threshold(self, config: Config) -> None:
        """Duration p95 panels mark alerts.slow_executions.threshold."""
        overview = render(config)["overview"]
        for title in ["Duration p95", "Duration p50 / p95 / p99", "Duration p95 by depth"]:
            assert step_values(by_title(overview, title)) == [config.alerts.slow_executions.threshold]

    @pytest.mark.parametrize("config", [Config.default(), CUSTOM], ids=["default", "custom"])
    def test_threshold_lines_are_drawn(self, config: Config) -> None:
        """Time series with thresholds show them as dashed lines."""
        for board in render(config).values():
            for panel in panels(board):
                if panel["type"] == "timeseries" and step_values(panel):
                    style = panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]
                    assert style["mode"] == "dashed", panel["title"]

    @pytest.mark.parametrize("config", [Config.default(), CUSTOM], ids=["default", "custom"])
    def test_quota_gauge_uses_the_nearly_exhausted_threshold(self, config: Config) -> None:
        """The budget gauge turns orange at alerts.quota_nearly_exhausted.threshold and red at 100 %."""
        gauge = by_title(render(config)["quotas"], "Budget used")
        assert gauge["type"] == "gauge"
        assert step_values(gauge) == [config.alerts.quota_nearly_exhausted.threshold, 1.0]
        assert gauge["fieldConfig"]["defaults"]["max"] == 1.0

    @pytest.mark.parametrize("config", [Config.default(), CUSTOM], ids=["default", "custom"])
    def test_usage_panels_draw_the_warning_level(self, config: Config) -> None:
        """Each used-vs-limit panel draws limit * quota_nearly_exhausted.threshold."""
        threshold = config.alerts.quota_nearly_exhausted.threshold
        quotas = render(config)["quotas"]
        for title in ["Executions used vs limit", "Tokens used vs limit", "Wall-clock time used vs limit"]:
            exprs = [t["expr"] for t in by_title(quotas, title)["targets"]]
            assert any(e.startswith(f"{threshold} * max by") for e in exprs), title

    def test_table_columns_use_the_thresholds(self) -> None:
        """The per-depth table colours the error and duration columns at the alert thresholds."""
        alerts = CUSTOM.alerts
        table = by_title(render(CUSTOM)["overview"], "Per-depth breakdown")
        found = {}
        for override in table["fieldConfig"]["overrides"]:
            for prop in override["properties"]:
                if prop["id"] == "thresholds":
                    found[override["matcher"]["options"]] = [
                        s["value"] for s in prop["value"]["steps"] if s["value"] is not None
                    ]
        assert found == {
            "Error ratio": [alerts.high_error_rate.threshold],
            "Duration p95": [alerts.slow_executions.threshold],
        }


class TestConfigDriven:
    """A non-default config changes the output accordingly."""

    custom = render(CUSTOM)

    def test_titles_uids_tags_and_refresh(self) -> None:
        """Title prefix, UID prefix, tags and refresh come from the dashboards section."""
        assert {b["uid"] for b in self.custom.values()} == {"agents-overview", "agents-quotas"}
        assert {b["title"] for b in self.custom.values()} == {"Agents / Overview", "Agents / Quotas"}
        for board in self.custom.values():
            assert board["tags"] == ["agents"]
            assert board["refresh"] == "1m"
            assert board["links"][0]["tags"] == ["agents"]

    def test_datasource_default(self) -> None:
        """The datasource variable defaults to dashboards.datasource_uid."""
        for board in self.custom.values():
            (var,) = [v for v in board["templating"]["list"] if v["name"] == "datasource"]
            assert var["current"]["value"] == "mimir"

    def test_variables_use_the_configured_labels(self) -> None:
        """job/instance variables list alerts.job_label / alerts.instance_label values."""
        for board in self.custom.values():
            variables = {v["name"]: v for v in board["templating"]["list"]}
            assert variables["job"]["query"].endswith(", service_name)")
            assert variables["instance"]["query"].endswith(", pod)")
            assert 'service_name=~"$job"' in variables["instance"]["query"]
            assert 'job="my-agent"' in variables["job"]["query"]

    def test_every_selector_carries_the_configured_matchers(self) -> None:
        """Every vector selector has the configured selector and the variables on the configured labels."""
        for query in all_queries(self.custom):
            for vs in selectors(parse(query.expr)):
                triples = matcher_triples(vs)
                expected = {
                    ("job", "=", "my-agent"),
                    ("cluster", "=~", "prod-.*"),
                    ("service_name", "=~", ".+"),
                    ("pod", "=~", ".+"),
                }
                assert expected <= triples, query.name

    def test_group_by_labels_are_kept(self) -> None:
        """Aggregations keep alerts.group_by labels (and the job label) so fleets can be split."""
        for query in all_queries(self.custom):
            for node, _ in walk(parse(query.expr)):
                if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
                    labels = set(node.modifier.labels)
                    if labels == {"le"}:
                        continue  # Heatmaps: one series per bucket.
                    assert "cluster" in labels, query.name

    def test_default_and_custom_differ_only_where_config_says(self) -> None:
        """Panel layout and titles do not depend on the config."""
        for slug, board in self.custom.items():
            assert [p["title"] for p in panels(board)] == [p["title"] for p in panels(DEFAULT[slug])]


def concurrency_targets(config: Config) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = by_title(render(config)["overview"], "Active vs max concurrency")[
        "targets"
    ]
    return targets


def outer_aggregation(expr: str) -> tuple[str, list[str], str]:
    """(operator, by labels, metric) of the first aggregation in ``expr``."""
    node = next(n for n, _ in walk(parse(expr)) if isinstance(n, promql_parser.AggregateExpr))
    return str(node.op), list(node.modifier.labels), node.expr.name


def override_colors(panel: dict[str, Any]) -> dict[str, str]:
    """Series regexp → fixed colour of the panel's overrides."""
    return {
        o["matcher"]["options"]: prop["value"]["fixedColor"]
        for o in panel["fieldConfig"]["overrides"]
        for prop in o["properties"]
        if prop["id"] == "color"
    }


class TestConcurrencyPanel:
    """In-memory store: each instance against its own limit; shared store: the fleet against one limit."""

    def test_in_memory_store_draws_each_instance(self) -> None:
        """Active and max_concurrency are per job and instance."""
        active, limit = concurrency_targets(Config.default())
        assert outer_aggregation(active["expr"]) == ("sum", ["job", "instance"], "subagent_active_count")
        assert outer_aggregation(limit["expr"]) == ("max", ["job", "instance"], "subagent_max_concurrency")

    def test_shared_store_draws_the_fleet_sum_against_one_limit(self) -> None:
        """Active is summed over the instances; the limit is the max (every process exports it)."""
        active, limit, _ = concurrency_targets(FLEET_CONFIG)
        assert outer_aggregation(active["expr"]) == ("sum", ["job"], "subagent_active_count")
        assert outer_aggregation(limit["expr"]) == ("max", ["job"], "subagent_max_concurrency")
        assert "{{instance}}" not in active["legendFormat"]

    def test_shared_store_keeps_group_by_and_the_job_label(self) -> None:
        """A fleet split by group_by keeps those labels and the configured job label."""
        config = CUSTOM.model_copy(update={"quota": FLEET_CONFIG.quota})
        active, _ = concurrency_targets(config)
        assert outer_aggregation(active["expr"])[:2] == ("sum", ["service_name", "cluster"])

    @pytest.mark.parametrize("config", [Config.default(), FLEET_CONFIG], ids=["memory", "fleet"])
    def test_the_alert_line_is_the_limit_plus_headroom(self, config: Config) -> None:
        """With headroom the alert line (dashed red) is max_concurrency + threshold; without, the limit is."""
        panel = by_title(render(config)["overview"], "Active vs max concurrency")
        headroom = config.alerts.active_over_max_concurrency.threshold
        exprs = [t["expr"] for t in panel["targets"]]
        if headroom:
            assert exprs[2] == f"{exprs[1]} + {headroom:g}"
            assert panel["targets"][2]["legendFormat"].endswith(" alert")
            assert override_colors(panel) == {".* max$": "orange", ".* alert$": "red"}
        else:
            assert len(exprs) == 2
            assert override_colors(panel) == {".* max$": "red"}

    @pytest.mark.parametrize("boards", [DEFAULT, FLEET], ids=["memory", "fleet"])
    def test_max_concurrency_is_never_summed(self, boards: dict[str, dict[str, Any]]) -> None:
        """Every aggregation over subagent_max_concurrency is a max."""
        ops = [
            str(node.op)
            for query in all_queries(boards)
            for node, _ in walk(parse(query.expr))
            if isinstance(node, promql_parser.AggregateExpr)
            and any(vs.name == "subagent_max_concurrency" for vs in selectors(node.expr))
        ]
        assert ops
        assert set(ops) == {"max"}


class TestSelectorEscaping:
    def test_a_quote_in_a_selector_value_is_escaped(self) -> None:
        """A selector value with a quote and a backslash stays one matcher value in every expression."""
        config = Config.model_validate({"alerts": {"selector": r'job="my \"quoted\" agent\\x"'}})
        boards = render(config)
        for query in all_queries(boards):
            assert r'job="my \"quoted\" agent\\x"' in query.expr, query.name
            for vs in selectors(parse(query.expr)):
                assert ("job", "=", r'my "quoted" agent\x') in matcher_triples(vs), query.name


class TestAlertList:
    def test_alert_list_has_no_targets_and_filters_the_rules(self) -> None:
        """The firing-alerts panel reads Grafana's alert state for the rendered rules, not PromQL."""
        panel = by_title(DEFAULT["overview"], "Firing alerts")
        assert panel["type"] == "alertlist"
        assert "targets" not in panel
        assert panel["options"]["alertName"] == "Subagent"
        assert panel["options"]["stateFilter"]["firing"] is True


class TestGrafanaSubstitution:
    """The test-side stand-in for Grafana's variable interpolation (used by the live test too)."""

    @pytest.mark.parametrize(
        ("interval", "scrape", "expected"),
        [(15, 15, 60), (1, 1, 4), (60, 15, 75), (30, 1, 31)],
    )
    def test_rate_interval(self, interval: float, scrape: float, expected: float) -> None:
        """$__rate_interval = max($__interval + scrape interval, 4 * scrape interval)."""
        assert rate_interval_seconds(interval, scrape) == expected

    @pytest.mark.parametrize(
        ("seconds", "text"), [(60, "1m"), (75, "75s"), (3600, "1h"), (0.5, "500ms"), (4, "4s")]
    )
    def test_format_interval(self, seconds: float, text: str) -> None:
        """Durations are written in the largest whole unit, as Grafana formats them."""
        assert format_interval(seconds) == text

    def test_all_becomes_the_all_value(self) -> None:
        """With All selected, ``$job`` is the variable's allValue ``.+`` verbatim."""
        assert Variables().substitute('x{job=~"$job", i=~"${instance}"}') == 'x{job=~".+", i=~".+"}'

    def test_selected_values_are_regex_escaped_and_joined(self) -> None:
        """Several values become ``(a|b)`` with regex metacharacters escaped for a PromQL string."""
        variables = Variables(values={"job": ["a.b", "c"]})
        assert variables.substitute('x{job=~"$job"}') == r'x{job=~"(a\\.b|c)"}'
        assert regex_escape("a+b") == r"a\\+b"

    def test_builtins(self) -> None:
        """$__interval, $__rate_interval and $__range variants are substituted."""
        variables = Variables(scrape_interval_seconds=1, interval_seconds=2, range_seconds=300)
        assert variables.substitute("$__rate_interval $__interval $__range $__range_s $__range_ms") == (
            "4s 2s 5m 300 300000"
        )

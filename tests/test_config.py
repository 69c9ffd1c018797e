"""Configuration: the original design's documents load; bad input gets one precise ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

from subagent_telemetry import Config, ConfigError, load_config
from subagent_telemetry._config import PRESETS, load_config_text, parse_selector

#: The original design's documents, each a whole YAML file, verbatim.
DESIGN_DOCUMENTS = (
    Path(__file__).with_name("design_documents.yaml").read_text(encoding="utf-8").strip().splitlines()
)


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, source="agent.yaml")
    return str(info.value)


class TestDesignDocuments:
    @pytest.mark.parametrize("document", DESIGN_DOCUMENTS)
    def test_loads_unchanged_from_a_file(self, tmp_path: Path, document: str) -> None:
        """Each YAML document of the original design loads as a whole file, values kept."""
        path = tmp_path / "agent.yaml"
        path.write_text(document + "\n")
        expected = __import__("yaml").safe_load(document)["agent"]["subagent"]
        sub = load_config(path).subagent
        for key, value in expected.items():
            assert getattr(sub, key) == value

    @pytest.mark.parametrize(
        ("name", "document"),
        [("cost-optimized", 0), ("performance-optimized", 1), ("balanced", 2)],
    )
    def test_presets_equal_the_first_three_documents(self, name: str, document: int) -> None:
        """The named presets are exactly the first three design documents."""
        assert Config.preset(name) == load_config_text(DESIGN_DOCUMENTS[document])

    def test_default_is_the_balanced_preset(self) -> None:
        """The production default is `balanced`."""
        assert Config.default() == Config.preset("balanced")

    def test_unknown_preset_lists_the_choices(self) -> None:
        """An unknown preset name says which exist."""
        with pytest.raises(ConfigError, match="cost-optimized, performance-optimized, balanced"):
            Config.preset("cheap")

    def test_limits_absent_or_null_mean_unlimited(self) -> None:
        """The three session limits default to unlimited and accept an explicit null."""
        sub = load_config_text("agent: {subagent: {max_executions: null}}").subagent
        assert (sub.max_executions, sub.max_total_tokens, sub.max_total_time) == (None, None, None)

    def test_field_defaults_match_the_design(self) -> None:
        """Defaults: depth 3, 10 turns, 1 MiB output, concurrency 5."""
        sub = load_config_text("").subagent
        assert (sub.max_depth, sub.default_max_turns, sub.output_max_size, sub.max_concurrency) == (
            3,
            10,
            1_048_576,
            5,
        )

    def test_presets_table_has_three_entries(self) -> None:
        """Exactly the three documented presets exist."""
        assert set(PRESETS) == {"cost-optimized", "performance-optimized", "balanced"}


class TestErrors:
    def test_out_of_range_names_key_value_range_and_line(self) -> None:
        """An out-of-range value names the key path, the value, the whole allowed range and the line."""
        message = _error("agent:\n  subagent:\n    max_depth: 42\n")
        assert "agent.subagent.max_depth" in message
        assert "42" in message
        assert ">= 1 and <= 10" in message
        assert "line 3" in message

    @pytest.mark.parametrize(
        ("key", "value"),
        [
            ("default_max_turns", 0),
            ("default_max_turns", 101),
            ("output_max_size", 1023),
            ("max_concurrency", 0),
            ("max_executions", 0),
            ("max_total_tokens", -5),
            ("max_total_time", 0),
        ],
    )
    def test_each_bound_is_enforced(self, key: str, value: int) -> None:
        """Every documented bound rejects the first value outside it."""
        message = _error(f"agent:\n  subagent:\n    {key}: {value}\n")
        assert f"agent.subagent.{key}" in message

    def test_optional_limits_mention_null(self) -> None:
        """The fix for a bad optional limit mentions null = unlimited."""
        assert "null for unlimited" in _error("agent: {subagent: {max_executions: 0}}")

    def test_unknown_key_suggests_the_close_one(self) -> None:
        """A misspelt key gets a did-you-mean with the right name."""
        message = _error("agent:\n  subagent:\n    max_total_token: 5\n")
        assert "unknown key `agent.subagent.max_total_token`" in message
        assert "did you mean `max_total_tokens`?" in message
        assert "line 3" in message

    def test_unknown_top_level_key_is_rejected(self) -> None:
        """Typos in section names are caught too."""
        assert "did you mean `telemetry`?" in _error("telemetri: {}\n")

    def test_yaml_syntax_error_names_the_line(self) -> None:
        """A YAML syntax error is a ConfigError with the line, not a yaml exception."""
        message = _error("agent:\n  subagent:\n    max_depth: [1,\n")
        assert "YAML syntax error at line" in message

    def test_non_mapping_document_is_rejected(self) -> None:
        """A document that is a list is refused with an explanation."""
        assert "must be a mapping" in _error("- 1\n- 2\n")

    def test_several_problems_are_reported_together(self) -> None:
        """All problems of a file come in one error."""
        message = _error("agent:\n  subagent:\n    max_depth: 0\n    max_executions: 0\n")
        assert "max_depth" in message
        assert "max_executions" in message

    def test_missing_file_is_a_config_error(self, tmp_path: Path) -> None:
        """A missing file is reported as a ConfigError naming the path."""
        with pytest.raises(ConfigError, match=r"nope\.yaml"):
            load_config(tmp_path / "nope.yaml")

    def test_bad_duration_is_explained(self) -> None:
        """Alert `for:` must be a Prometheus duration."""
        assert "not a Prometheus duration" in _error("alerts: {high_error_rate: {for: 5 minutes}}")

    def test_ratio_threshold_outside_zero_one_is_rejected(self) -> None:
        """Ratio thresholds are between 0 and 1."""
        assert "alerts.high_error_rate.threshold" in _error("alerts: {high_error_rate: {threshold: 5}}")

    def test_bad_store_url_is_rejected(self) -> None:
        """quota.store is `memory` or a redis URL."""
        assert "quota.store" in _error("quota: {store: 'postgres://x'}")


class TestSelector:
    def test_parses_and_renders_escaped(self) -> None:
        """A value with a quote and a backslash is kept and re-escaped on render."""
        (matcher,) = parse_selector(r'job="my \"agent\" \\ x"')
        assert matcher.value == 'my "agent" \\ x'
        assert matcher.render() == r'job="my \"agent\" \\ x"'

    @pytest.mark.parametrize("text", ['job="a" or vector(1)', 'job="a"} or {x="1"', "job=a", ""])
    def test_rejects_anything_but_matchers(self, text: str) -> None:
        """Injection attempts and malformed selectors do not parse."""
        with pytest.raises(ValueError):  # noqa: PT011 - the message varies by input
            parse_selector(text)

    def test_rejects_selector_matching_everything(self) -> None:
        """PromQL needs one matcher that does not match the empty string."""
        assert "empty string" in _error("alerts: {selector: 'job=~\".*\"'}")


class TestAlertDefaults:
    def test_partially_configured_alert_keeps_its_own_defaults(self) -> None:
        """Setting only `for:` keeps that alert's default threshold and severity."""
        alerts = load_config_text("alerts: {high_error_rate: {for: 10m}}").alerts
        assert (alerts.high_error_rate.threshold, alerts.high_error_rate.severity) == (0.05, "critical")
        assert alerts.high_error_rate.for_ == "10m"

    def test_default_thresholds_are_the_documented_ones(self) -> None:
        """Error rate 5 %, quota use 80 %, p95 over 120 s."""
        alerts = Config.default().alerts
        assert alerts.high_error_rate.threshold == 0.05
        assert alerts.quota_nearly_exhausted.threshold == 0.8
        assert alerts.slow_executions.threshold == 120

    def test_alert_for_must_be_whole_minutes(self) -> None:
        """`for: 30s` is refused early, naming the key, because rendered tests step by minutes."""
        message = _error("alerts: {quota_rejections: {for: 30s}}")
        assert "alerts.quota_rejections.for" in message
        assert "whole number of minutes" in message

    def test_slow_threshold_must_fit_the_buckets(self) -> None:
        """A p95 threshold outside the duration buckets cannot be measured and is refused."""
        assert "alerts.slow_executions.threshold" in _error("alerts: {slow_executions: {threshold: 5000}}")

    def test_rate_window_must_hold_two_samples(self) -> None:
        """A 1m rate window is refused: rate() needs two scrapes inside it."""
        assert "alerts.rate_window" in _error("alerts: {rate_window: 1m}")

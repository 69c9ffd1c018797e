"""Configuration: the original design's documents load; bad input gets one precise ConfigError."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subagent_telemetry import Config, ConfigError, load_config
from subagent_telemetry._config import MAX_TEST_STEPS, PRESETS, load_config_text, parse_selector
from subagent_telemetry._config_yaml import MAX_CONFIG_BYTES

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

    def test_presets_table_has_the_documented_entries(self) -> None:
        """The three design presets and the three common patterns of docs/tuning.md exist, no others."""
        assert set(PRESETS) == {
            "cost-optimized",
            "performance-optimized",
            "balanced",
            "cost-limited-exploration",
            "time-boxed-analysis",
            "safety-first-delegation",
        }

    @pytest.mark.parametrize(
        ("name", "document"),
        [("cost-limited-exploration", 3), ("time-boxed-analysis", 4), ("safety-first-delegation", 5)],
    )
    def test_common_pattern_presets_equal_the_last_three_documents(self, name: str, document: int) -> None:
        """Each common-pattern preset is exactly its design document (docs/tuning.md's ready configs)."""
        assert Config.preset(name) == load_config_text(DESIGN_DOCUMENTS[document])

    @pytest.mark.parametrize(
        "name", ["cost-limited-exploration", "time-boxed-analysis", "safety-first-delegation"]
    )
    def test_common_pattern_loads_by_name_from_a_file(self, name: str) -> None:
        """`preset: NAME` under agent.subagent loads each common pattern."""
        loaded = load_config_text(f"agent:\n  subagent:\n    preset: {name}\n").subagent
        for key, value in PRESETS[name].items():
            assert getattr(loaded, key) == value

    @pytest.mark.parametrize(
        "name", ["cost-limited-exploration", "time-boxed-analysis", "safety-first-delegation"]
    )
    def test_tuning_guide_shows_each_common_pattern_as_its_preset(self, name: str) -> None:
        """docs/tuning.md names each common-pattern preset and its YAML loads to that preset."""
        text = (Path(__file__).resolve().parents[1] / "docs" / "tuning.md").read_text(encoding="utf-8")
        marker = f"<!-- preset: {name} -->"
        assert marker in text, marker
        block = text.split(marker, 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
        assert load_config_text(block) == Config.preset(name)


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

    def test_store_url_with_a_port_out_of_range_is_a_config_error(self) -> None:
        """redis://host:99999 fails at load naming quota.store, not as redis-py's ValueError at startup."""
        message = _error("quota: {store: 'redis://127.0.0.1:99999/0'}")
        assert "quota.store" in message
        assert "Port out of range" in message


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

    @pytest.mark.parametrize("value", ["30s", "90s", "2m30s", "0s", "1s"])
    def test_alert_for_takes_second_resolution(self, value: str) -> None:
        """`for:` in whole seconds is accepted: the generated tests step at a matching resolution."""
        assert (
            load_config_text(f"alerts: {{quota_rejections: {{for: {value}}}}}").alerts.quota_rejections.for_
            == value
        )

    def test_alert_for_in_fractions_of_a_second_is_refused(self) -> None:
        """`for: 1500ms` is refused early, naming the key: rules are evaluated at whole seconds."""
        message = _error("alerts: {quota_rejections: {for: 1500ms}}")
        assert "alerts.quota_rejections.for" in message
        assert "whole number of seconds" in message

    def test_rate_window_takes_second_resolution(self) -> None:
        """rate_window: 150s (two and a half minutes) is accepted."""
        assert load_config_text("alerts: {rate_window: 150s}").alerts.rate_window == "150s"

    @pytest.mark.parametrize(
        ("alerts", "fragment"),
        [
            ("{high_error_rate: {for: 3601s}}", "high_error_rate.for '3601s'"),  # 1 s steps over ~65 min
            ("{slow_executions: {for: 2d}}", "slow_executions.for '2d'"),  # 1 m steps over two days
        ],
    )
    def test_tests_too_long_to_generate_are_refused(self, alerts: str, fragment: str) -> None:
        """A for/window pair whose generated tests would span too many steps is refused at load."""
        message = _error(f"alerts: {alerts}")
        assert fragment in message
        assert f"at most {MAX_TEST_STEPS}" in message

    def test_a_long_for_of_a_disabled_alert_is_accepted(self) -> None:
        """A disabled alert renders no tests, so its for: is not bounded by them."""
        assert load_config_text("alerts: {slow_executions: {for: 2d, enabled: false}}")

    def test_slow_threshold_must_fit_the_buckets(self) -> None:
        """A p95 threshold outside the duration buckets cannot be measured and is refused."""
        assert "alerts.slow_executions.threshold" in _error("alerts: {slow_executions: {threshold: 5000}}")

    def test_rate_window_must_hold_two_samples(self) -> None:
        """A 1m rate window is refused: rate() needs two scrapes inside it."""
        assert "alerts.rate_window" in _error("alerts: {rate_window: 1m}")


# Control and line-separator characters: YAML and PromQL read several of them as line breaks.
LINE_BREAKERS = ["\r", "\x85", "\u2028", "\u2029", "\x00", "\x0b", "\x0c", "\x1b", "\x7f", "\x9b"]


def _escaped(value: str) -> str:
    """``value`` with quotes, backslashes and every character outside printable ASCII as \\u/\\U escapes.

    YAML double-quoted scalars and PromQL strings read these escapes the same way.
    """
    return "".join(
        c
        if " " <= c <= "~" and c not in '"\\'
        else f"\\u{ord(c):04x}"
        if ord(c) < 0x10000
        else f"\\U{ord(c):08x}"
        for c in value
    )


def _quoted(value: str) -> str:
    """``value`` as a YAML double-quoted scalar."""
    return f'"{_escaped(value)}"'


class TestControlCharacters:
    @pytest.mark.parametrize("char", LINE_BREAKERS, ids=lambda c: f"U+{ord(c):04X}")
    def test_selector_value_with_a_control_character_is_refused(self, char: str) -> None:
        """A control or line-separator character inside a selector value is a ConfigError naming the key."""
        message = _error(f"alerts:\n  selector: {_quoted(f'job={chr(34)}a{char}b{chr(34)}')}\n")
        assert "alerts.selector" in message
        assert f"U+{ord(char):04X}" in message

    @pytest.mark.parametrize("escape", ["\\r", "\\u2028", "\\x0b", "\\x85", "\\000", "\\t", "\\n"])
    def test_selector_escape_decoding_to_a_control_character_is_refused(self, escape: str) -> None:
        """A PromQL escape that decodes to a control character is refused like the character itself."""
        message = _error("alerts:\n  selector: 'job=\"a" + escape + "b\"'\n")
        assert "alerts.selector" in message

    @pytest.mark.parametrize(
        ("escape", "value"), [("\\u00e9", "é"), ("\\x41", "A"), ("\\101", "A"), ("\\U0001F600", "😀")]
    )
    def test_selector_escapes_decode_as_promql_does(self, escape: str, value: str) -> None:
        """\\u, \\U, \\x and octal escapes mean what they mean to Prometheus."""
        (matcher,) = parse_selector(f'job="{escape}"')
        assert matcher.value == value

    @pytest.mark.parametrize("escape", ["\\q", "\\xff", "\\377", "\\ud800"])
    def test_selector_escape_promql_would_read_otherwise_is_refused(self, escape: str) -> None:
        """Unknown escapes and escapes of non-ASCII bytes are refused rather than guessed."""
        with pytest.raises(ValueError, match="invalid escape"):
            parse_selector(f'job="{escape}"')

    @pytest.mark.parametrize(
        "key",
        [
            "alerts.runbook_base_url",
            "alerts.mimir_namespace",
            "alerts.dashboard_url",
            "dashboards.title_prefix",
            "dashboards.datasource_uid",
            "quota.session",
            "telemetry.service_name",
        ],
    )
    @pytest.mark.parametrize("char", [*LINE_BREAKERS[:4], "\n", "\t"], ids=lambda c: f"U+{ord(c):04X}")
    def test_any_string_reaching_rendered_files_refuses_control_characters(self, key: str, char: str) -> None:
        """Every string that reaches a rendered file or a label refuses control and line separators."""
        section, name = key.split(".")
        message = _error(f"{section}:\n  {name}: {_quoted(f'a{char}b')}\n")
        assert key in message
        assert "line 2" in message

    def test_strings_in_lists_and_maps_refuse_control_characters(self) -> None:
        """Tags, group_by and label maps are checked item by item."""
        assert "dashboards.tags" in _error('dashboards: {tags: ["a\\u2028b"]}')
        assert "alerts.prometheus_rule.labels" in _error('alerts: {prometheus_rule: {labels: {a: "x\\ry"}}}')

    def test_selector_may_span_lines_between_matchers(self) -> None:
        """Newlines between matchers (a YAML block) are fine; only values must be single-line."""
        config = load_config_text('alerts:\n  selector: |\n    job="a",\n    cluster="b"\n')
        assert [m.value for m in config.alerts.matchers] == ["a", "b"]

    @settings(max_examples=200, deadline=None)
    @given(st.text(max_size=20))
    def test_every_selector_value_is_refused_or_kept_exactly(self, value: str) -> None:
        """Any text as an escaped selector value loads to exactly that value, or is a ConfigError."""
        text = f'job="{_escaped(value)}"'
        try:
            config = load_config_text(f"alerts:\n  selector: {_quoted(text)}\n")
        except ConfigError:
            return
        assert [m.value for m in config.alerts.matchers] == [value]


class TestYamlSafety:
    def test_alias_bomb_is_refused_quickly_with_a_short_message(self) -> None:
        """A 'billion laughs' document is refused within the node bound; the message stays short."""
        lines = ['a0: &a0 ["xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"]']
        lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
        message = _error("\n".join(lines) + "\n")
        assert "more than 20000 YAML values" in message
        assert len(message) < 500

    def test_aliases_within_the_bound_still_work(self) -> None:
        """Ordinary anchors and aliases (shared alert settings) load as before."""
        text = "alerts:\n  high_error_rate: &fast {for: 2m}\n  quota_rejections: *fast\n"
        alerts = load_config_text(text).alerts
        assert alerts.high_error_rate.for_ == alerts.quota_rejections.for_ == "2m"

    def test_error_messages_never_embed_a_huge_value(self) -> None:
        """A wrong value of 100 kB is shown clipped: the error stays a few hundred characters."""
        message = _error(
            f"agent:\n  subagent:\n    max_depth: [{', '.join(['12345678901234567890'] * 5000)}]\n"
        )
        assert "agent.subagent.max_depth" in message
        assert len(message) < 1000

    def test_many_problems_are_counted_not_all_listed(self) -> None:
        """A file with hundreds of unknown keys gets a bounded message ending with the count left out."""
        message = _error("".join(f"k{i}: 1\n" for i in range(300)))
        assert "280 more problems" in message
        assert len(message) < 20_000

    @pytest.mark.parametrize(
        ("text", "key", "lines"),
        [
            ("agent:\n  subagent:\n    max_depth: 2\n    max_depth: 9\n", "agent.subagent.max_depth", (3, 4)),
            ("alerts: {}\nagent: {}\nalerts: {}\n", "alerts", (1, 3)),
            ("dashboards:\n  tags: [{a: 1, a: 2}]\n", "dashboards.tags[0].a", (2, 2)),
        ],
    )
    def test_duplicate_keys_are_refused_naming_both_lines(
        self, text: str, key: str, lines: tuple[int, int]
    ) -> None:
        """A key written twice in one mapping is a ConfigError naming the key and both lines."""
        message = _error(text)
        assert f"duplicate key `{key}` at line {lines[0]} and line {lines[1]}" in message

    def test_oversized_file_is_refused_before_parsing(self, tmp_path: Path) -> None:
        """A file over the size limit is refused at once, naming the limit."""
        path = tmp_path / "agent.yaml"
        path.write_text("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
        with pytest.raises(ConfigError, match=f"larger than {MAX_CONFIG_BYTES} bytes"):
            load_config(path)

    @pytest.mark.parametrize(
        ("data", "fragment"),
        [
            (b"agent:\n  subagent: {max_depth: \xff}\n", "not UTF-8 text (byte 0xff at offset 31)"),
            (b"\x7fELF\x02\x01\x01\x00\x00\x00", "binary file"),
        ],
        ids=["latin-1", "binary"],
    )
    def test_non_utf8_and_binary_files_are_config_errors(
        self, tmp_path: Path, data: bytes, fragment: str
    ) -> None:
        """A file that is not UTF-8 text is a ConfigError, not a UnicodeDecodeError."""
        path = tmp_path / "agent.yaml"
        path.write_bytes(data)
        with pytest.raises(ConfigError, match=re.escape(fragment)):
            load_config(path)

    def test_utf8_bom_is_accepted(self, tmp_path: Path) -> None:
        """A UTF-8 file saved with a byte-order mark loads."""
        path = tmp_path / "agent.yaml"
        path.write_bytes(b"\xef\xbb\xbfagent: {subagent: {max_depth: 4}}\n")
        assert load_config(path).subagent.max_depth == 4


DURATION_KEYS = [
    "agent.subagent.max_total_time",
    "agent.subagent.concurrency_timeout",
    "quota.lease_seconds",
    "telemetry.otlp.export_interval_seconds",
    "telemetry.otlp.timeout_seconds",
]


def _nested(key: str, value: str) -> str:
    *parents, name = key.split(".")
    return (
        "".join(f"{'  ' * i}{p}:\n" for i, p in enumerate(parents))
        + f"{'  ' * len(parents)}{name}: {value}\n"
    )


class TestStrictTypes:
    @pytest.mark.parametrize("key", DURATION_KEYS)
    @pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1e300"])
    def test_durations_are_finite_and_bounded(self, key: str, value: str) -> None:
        """.inf, NaN and absurdly large durations are refused, naming the key."""
        assert key in _error(_nested(key, value))

    @pytest.mark.parametrize(
        "key",
        [
            "agent.subagent.max_executions",
            "agent.subagent.max_depth",
            "telemetry.prometheus.port",
            "quota.estimated_tokens",
        ],
    )
    @pytest.mark.parametrize("value", ["true", "false", '"10"', "10.0", "1.5"])
    def test_integers_refuse_booleans_strings_and_floats(self, key: str, value: str) -> None:
        """`true` is not 1 and "10" is not 10: integer keys take integers only."""
        message = _error(_nested(key, value))
        assert key in message
        assert "valid integer" in message

    @pytest.mark.parametrize("value", ["true", '"0.5"'])
    def test_numbers_refuse_booleans_and_strings(self, value: str) -> None:
        """A float key refuses a boolean or a quoted number."""
        assert "alerts.high_error_rate.threshold" in _error(
            f"alerts: {{high_error_rate: {{threshold: {value}}}}}"
        )

    @pytest.mark.parametrize("value", ["1", '"yes"', '"true"'])
    def test_booleans_refuse_numbers_and_strings(self, value: str) -> None:
        """enabled: 1 or "yes" is refused; only true and false are booleans."""
        assert "telemetry.otlp.enabled" in _error(f"telemetry: {{otlp: {{enabled: {value}}}}}")

    def test_integer_is_accepted_for_a_float_key(self) -> None:
        """max_total_time: 600 (an integer) is a valid number of seconds."""
        assert (
            load_config_text(_nested("agent.subagent.max_total_time", "600")).subagent.max_total_time == 600.0
        )

    @settings(max_examples=100, deadline=None)
    @given(st.floats(allow_nan=True, allow_infinity=True))
    def test_any_accepted_duration_is_finite_positive_and_usable_as_a_timeout(self, value: float) -> None:
        """Whatever number is given, an accepted concurrency_timeout works as a threading timeout."""
        import threading

        try:
            sub = load_config_text(_nested("agent.subagent.concurrency_timeout", repr(value))).subagent
        except ConfigError:
            return
        assert sub.concurrency_timeout is not None
        assert 0 < sub.concurrency_timeout <= threading.TIMEOUT_MAX


class TestPresetKey:
    def test_a_file_starts_from_a_preset_and_overrides_keys(self) -> None:
        """agent.subagent.preset fills in the preset's keys; keys in the file win."""
        sub = load_config_text("agent: {subagent: {preset: cost-optimized, max_depth: 3}}").subagent
        expected = {**PRESETS["cost-optimized"], "max_depth": 3}
        assert {key: getattr(sub, key) for key in expected} == expected

    def test_a_preset_alone_equals_the_named_preset(self) -> None:
        """preset: balanced alone gives the balanced quotas."""
        sub = load_config_text("agent: {subagent: {preset: balanced}}").subagent
        assert sub.model_dump(exclude={"preset"}) == Config.preset("balanced").subagent.model_dump(
            exclude={"preset"}
        )

    def test_an_explicit_null_overrides_a_preset_budget(self) -> None:
        """max_total_time: null under a preset makes that budget unlimited."""
        sub = load_config_text("agent: {subagent: {preset: balanced, max_total_time: null}}").subagent
        assert sub.max_total_time is None
        assert sub.max_executions == PRESETS["balanced"]["max_executions"]

    def test_an_unknown_preset_lists_the_choices_with_the_line(self) -> None:
        """A misspelt preset is refused with the key, the choices and the line."""
        message = _error("agent:\n  subagent:\n    preset: cheap\n")
        assert "agent.subagent.preset" in message
        assert "'balanced'" in message
        assert "line 3" in message

    def test_a_file_without_a_preset_inherits_nothing(self) -> None:
        """Without preset:, absent budgets are unlimited (not the balanced preset's)."""
        sub = load_config_text("agent: {subagent: {max_depth: 2}}").subagent
        assert (sub.max_executions, sub.max_total_tokens, sub.max_total_time) == (None, None, None)
        assert not sub.budgets_set


class TestGroupBy:
    @pytest.mark.parametrize("label", ["depth", "status", "le", "error_type", "resource", "session", "agent"])
    def test_labels_of_our_own_metrics_are_refused(self, label: str) -> None:
        """group_by naming a label our metrics carry is refused at load, with the fix."""
        message = _error(f"alerts: {{group_by: [{label}]}}")
        assert "alerts.group_by" in message
        assert "target labels" in message

    def test_the_instance_label_is_refused(self) -> None:
        """group_by cannot hold the instance label (alerts needing it keep it already)."""
        assert "instance label" in _error("alerts: {group_by: [instance]}")

    def test_job_and_instance_label_must_differ(self) -> None:
        """job_label and instance_label naming one label is refused."""
        assert "must name two labels" in _error("alerts: {job_label: pod, instance_label: pod}")


class TestSelectorMatchesSomething:
    @pytest.mark.parametrize("text", ['job=""', 'job!="x"', 'job=~"a*"', 'job!~".+"', 'job="", x=~".*"'])
    def test_selectors_matching_the_empty_string_are_refused(self, text: str) -> None:
        """Prometheus refuses selectors whose every matcher matches the empty string; so do we."""
        with pytest.raises(ValueError, match="empty string"):
            parse_selector(text)

    def test_a_regex_that_does_not_compile_is_refused(self) -> None:
        """A broken regex is a load error, not a promtool failure later."""
        assert "does not compile" in _error('alerts: {selector: \'job="a", x=~"("\'}')

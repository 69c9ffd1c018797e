"""Configuration: typed models, the named presets, and YAML loading with precise errors.

One YAML document configures everything: ``agent.subagent`` (quotas, the original design's keys),
``telemetry`` (exporters), ``quota`` (where the budget lives), ``alerts`` (rules) and ``dashboards``.
docs/config.md is the reference; every field here carries the description shown there.
"""

from __future__ import annotations

import difflib
import math
import re
import typing
import unicodedata
import urllib.parse
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from ._catalog import CATALOG
from ._config_yaml import clip, parse_yaml, read_config_file, shown
from ._errors import ConfigError

_DURATION_RE = re.compile(
    r"^(0|(?=[0-9])([0-9]+y)?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?)$"
)
_LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_MATCHER_RE = re.compile(
    r'\s*(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*"(?P<value>(?:[^"\\]|\\.)*)"\s*(?:,|$)'
)


#: Characters no configured string may hold: C0/C1 controls (tab and newline aside), DEL, the Unicode
#: line and paragraph separators, and lone surrogates. YAML and PromQL read several of them as line
#: breaks, so a value holding one could change the meaning of a rendered file.
_FORBIDDEN_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
#: Tab and newline too, everywhere but between the matchers of ``alerts.selector``.
_FORBIDDEN_SINGLE_LINE = re.compile("[\t\n]")


def _check_printable(value: object, *, multiline: bool = False) -> None:
    """Raise when a string (or a string inside a tuple, list or dict) holds a forbidden character."""
    if isinstance(value, str):
        found = _FORBIDDEN_CHARS.search(value) or (not multiline and _FORBIDDEN_SINGLE_LINE.search(value))
        if found:
            char = found.group()
            name = unicodedata.name(char, "a control character") if len(char) == 1 else char
            msg = (
                f"contains U+{ord(char):04X} ({name}) at position {found.start()}: control and line "
                "separator characters are not allowed in configuration strings; remove it"
            )
            raise PydanticCustomError("control_character", msg)
    elif isinstance(value, (tuple, list)):
        for item in value:
            _check_printable(item)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_printable(key)
            _check_printable(item)
    elif isinstance(value, Path):
        _check_printable(str(value))


class _Model(BaseModel):
    """Strict types (``true`` is not 1, ``"10"`` is not 10), finite numbers, printable strings."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, strict=True, allow_inf_nan=False
    )

    @field_validator("*", mode="after")
    @classmethod
    def _printable(cls, value: Any, info: ValidationInfo) -> Any:
        _check_printable(value, multiline=info.field_name in _MULTILINE_FIELDS)
        return value


#: Fields whose text may span lines (the selector's matchers may be written one per line).
_MULTILINE_FIELDS = frozenset({"selector"})


def duration_seconds(value: str) -> float:
    """Seconds in a Prometheus duration (``"1h30m"`` → 5400.0)."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    return float(sum(int(n) * units[u] for n, u in re.findall(r"([0-9]+)(ms|s|m|h|d|w|y)", value)))


def _check_duration(value: str) -> str:
    if not _DURATION_RE.match(value):
        msg = f"{shown(value)} is not a Prometheus duration such as 30s, 5m or 1h"
        raise PydanticCustomError("duration", msg)
    return value


#: A Prometheus duration string (``30s``, ``5m``, ``1h30m``), checked when the config loads.
PromDuration = Annotated[str, AfterValidator(_check_duration)]


def _check_seconds(value: str) -> str:
    if duration_seconds(value) % 1:
        msg = (
            f"{shown(value)} is not a whole number of seconds (e.g. 0s, 90s, 5m): rules run at whole seconds"
        )
        raise PydanticCustomError("seconds", msg)
    return value


#: Most evaluation steps the generated promtool tests of one alert span (``for`` + rate window): a
#: bound on render time and file size. At 1m steps that is a ``for`` of about a day.
MAX_TEST_STEPS = 1500


def alert_test_step(rate_window: str, for_: str) -> int:
    """Seconds between samples and evaluations in an alert's generated tests: the largest step that
    divides its ``for``, the rate window and a minute (1m when both are whole minutes), so every
    boundary the tests probe falls on an evaluation."""
    window, hold = round(duration_seconds(rate_window)), round(duration_seconds(for_))
    return math.gcd(window, hold, 60)


#: A Prometheus duration in whole seconds (alert ``for:`` and rate windows).
PromSeconds = Annotated[str, AfterValidator(_check_duration), AfterValidator(_check_seconds)]


#: Largest accepted duration in seconds (about 31 years): finite, and within every timer it feeds
#: (``threading.TIMEOUT_MAX`` is about 9.2e9 s) and every Redis TTL in milliseconds.
MAX_SECONDS = 1_000_000_000
#: Largest accepted count (executions, tokens): exact as a float and as a Redis integer.
MAX_COUNT = 10**15

# --------------------------------------------------------------------------------------------------
# agent.subagent — the original design's keys, unchanged, and the money budget.

#: Largest money amount the stores keep exactly: nano-units stay below 2**53 (Lua numbers are doubles).
MAX_COST = Decimal(1_000_000)


class SubagentConfig(_Model):
    """Quotas and limits for subagent executions (``agent.subagent``)."""

    preset: (
        Literal[
            "cost-optimized",
            "performance-optimized",
            "balanced",
            "cost-limited-exploration",
            "time-boxed-analysis",
            "safety-first-delegation",
        ]
        | None
    ) = Field(
        None,
        description="Start from this preset's values; keys set here override them. "
        "null = no preset: every key has its own default (an absent budget is unlimited).",
    )

    max_depth: int = Field(3, ge=1, le=10, description="Deepest nesting level allowed (1-10).")
    default_max_turns: int = Field(
        10, ge=1, le=100, description="Turns per execution unless the call passes max_turns= (1-100)."
    )
    max_executions: int | None = Field(
        None, gt=0, le=MAX_COUNT, description="Executions admitted per session; null = unlimited."
    )
    max_total_tokens: int | None = Field(
        None, gt=0, le=MAX_COUNT, description="Tokens (input + output) per session; null = unlimited."
    )
    max_total_time: float | None = Field(
        None,
        gt=0,
        le=MAX_SECONDS,
        description="Wall-clock seconds per session from its first admission; null = unlimited.",
    )
    max_total_cost: Decimal | None = Field(
        None,
        strict=False,  # Decimal takes an int, a float or an exact "0.10"; never a boolean
        gt=0,
        le=MAX_COST,
        decimal_places=9,
        description="Money per session in cost.currency (exact decimal, up to 9 places); null = unlimited.",
    )
    output_max_size: int = Field(
        1_048_576, ge=1024, description="Bytes of output kept per execution (UTF-8 safe truncation)."
    )
    max_concurrency: int = Field(
        5, ge=1, le=1_000_000, description="Executions running at once; more wait for a slot."
    )
    concurrency_timeout: float | None = Field(
        None,
        gt=0,
        le=MAX_SECONDS,
        description="Seconds an admission waits for a concurrency slot before ConcurrencyLimitReached; "
        "null = wait as long as it takes.",
    )

    @model_validator(mode="before")
    @classmethod
    def _start_from_preset(cls, data: Any) -> Any:
        """``preset: balanced`` fills in that preset's keys; keys written in the file win."""
        if isinstance(data, Mapping) and isinstance(data.get("preset"), str) and data["preset"] in PRESETS:
            return {**PRESETS[data["preset"]], **data}
        return data

    @property
    def budgets_set(self) -> bool:
        """Whether any session budget (executions, tokens, time, cost) is set; none set = unlimited."""
        budgets = (self.max_executions, self.max_total_tokens, self.max_total_time, self.max_total_cost)
        return any(v is not None for v in budgets)


class AgentSection(_Model):
    subagent: SubagentConfig = SubagentConfig()


# --------------------------------------------------------------------------------------------------
# telemetry — exporters.


class TlsConfig(_Model):
    cert_file: Path = Field(strict=False, description="PEM certificate served by the /metrics listener.")
    key_file: Path = Field(strict=False, description="PEM private key of cert_file.")


class BasicAuthConfig(_Model):
    username: str = Field(min_length=1, description="User name Prometheus sends.")
    password_env: str = Field(
        min_length=1,
        description="Name of the environment variable holding the password (never the password itself).",
    )


class PrometheusConfig(_Model):
    enabled: bool = Field(True, description="Serve /metrics for Prometheus to scrape.")
    listen_address: str = Field("127.0.0.1", description="Address the /metrics listener binds.")
    port: int = Field(9464, ge=0, le=65535, description="Port of the /metrics listener (0 = any free).")
    tls: TlsConfig | None = Field(None, description="Serve HTTPS with this certificate.")
    basic_auth: BasicAuthConfig | None = Field(None, description="Require HTTP basic auth.")
    timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Time a client has for its TLS handshake and request, and again to read the response.",
    )
    max_connections: int = Field(
        32, ge=1, le=10000, description="Open /metrics connections at most; more are refused at accept."
    )


class AgentLabelConfig(_Model):
    enabled: bool = Field(False, description="Add an `agent` label (the execution's name).")
    allowlist: tuple[str, ...] = Field(
        (),
        strict=False,
        description="Names kept as they are; others become `other`. Empty = first max_values names.",
    )
    max_values: int = Field(20, ge=1, le=1000, description="Distinct names kept when allowlist is empty.")


class OtlpConfig(_Model):
    enabled: bool = Field(False, description="Push OTLP metrics and traces.")
    endpoint: str | None = Field(
        None, description="Collector URL; null = OTEL_EXPORTER_OTLP_ENDPOINT or the SDK default."
    )
    protocol: Literal["http/protobuf", "grpc"] = Field("http/protobuf", description="OTLP transport.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers.")
    export_interval_seconds: float = Field(10.0, gt=0, le=MAX_SECONDS, description="Metric export interval.")
    timeout_seconds: float = Field(
        5.0, gt=0, le=MAX_SECONDS, description="Export and shutdown-flush timeout."
    )
    metrics: bool = Field(True, description="Export the catalog's metrics over OTLP.")
    traces: bool = Field(True, description="Export one span per execution.")
    genai_metrics: bool = Field(
        False, description="Also record gen_ai.client.token.usage and gen_ai.invoke_agent.duration."
    )


class TelemetryConfig(_Model):
    service_name: str = Field(
        "subagent-agent", min_length=1, description="service.name; the job label on the OTLP path."
    )
    prometheus: PrometheusConfig = PrometheusConfig()
    otlp: OtlpConfig = OtlpConfig()
    agent_label: AgentLabelConfig = AgentLabelConfig()
    model_label: AgentLabelConfig = Field(
        AgentLabelConfig(max_values=10),
        description="A `model` label on the cost metrics (the model name), bounded like agent_label.",
    )
    log_executions: bool = Field(True, description="Log one structured record per finished execution.")
    log_level: Literal["DEBUG", "INFO", "WARNING"] = Field("INFO", description="Level of those records.")


# --------------------------------------------------------------------------------------------------
# quota — where the budget lives (in-process by default, Redis for fleets).


class QuotaStoreConfig(_Model):
    store: str = Field(
        "memory", description="`memory` (this process) or a redis:// / rediss:// URL shared by a fleet."
    )
    session: str = Field(
        "default", min_length=1, max_length=200, description="Name of the shared budget in the store."
    )
    failure_policy: Literal["deny", "allow", "local_allowance"] = Field(
        "deny", description="What admission does while the store is unreachable."
    )
    local_allowance_executions: int = Field(
        10,
        ge=0,
        le=MAX_COUNT,
        description="Executions admitted locally while degraded (local_allowance policy).",
    )
    local_allowance_tokens: int = Field(
        10_000,
        ge=0,
        le=MAX_COUNT,
        description="Tokens admitted locally while degraded (local_allowance policy).",
    )
    lease_seconds: float = Field(
        300.0, gt=0, le=MAX_SECONDS, description="A reservation not finalized within this time is given back."
    )
    estimated_tokens: int = Field(
        0, ge=0, le=MAX_COUNT, description="Tokens reserved at admission and settled when the execution ends."
    )
    estimated_cost: Decimal = Field(
        Decimal(0),
        strict=False,  # Decimal takes an int, a float or an exact "0.10"; never a boolean
        ge=0,
        le=MAX_COST,
        decimal_places=9,
        description="Money reserved at admission (shared store) and settled by the execution's responses.",
    )

    @field_validator("store")
    @classmethod
    def _store_scheme(cls, value: str) -> str:
        schemes = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")
        if value != "memory" and not value.startswith(schemes):
            msg = f"{shown(value)} is neither `memory` nor a redis://, rediss://, unix:// or cluster URL"
            raise PydanticCustomError("store", msg)
        try:
            urllib.parse.urlsplit(value).port  # noqa: B018 - parsing it is the check
        except ValueError as error:  # "Port out of range 0-65535": redis-py would raise it at startup.
            msg = f"{shown(value)} is not a valid URL ({error}); e.g. redis://redis:6379/0"
            raise PydanticCustomError("store", msg) from None
        return value

    @property
    def shared(self) -> bool:
        """Whether a fleet shares the budget (a Redis store): limits, max_concurrency too, are fleet-wide."""
        return self.store != "memory"


#: Labels our metrics carry themselves (and Prometheus's histogram ``le``): never target labels.
METRIC_LABELS: tuple[str, ...] = tuple(
    sorted({label for spec in CATALOG for label in spec.labels} | {"le", "agent", "quantile", "__name__"})
)

# --------------------------------------------------------------------------------------------------
# cost — what a model response costs (prices) and what happens to a model without one.

_CURRENCY_RE = r"^[A-Z]{3}$"
#: Largest price per million tokens accepted (a typo guard: no model costs this much).
_MAX_PRICE = Decimal(100_000)


def _price(description: str) -> Any:
    return Field(None, ge=0, le=_MAX_PRICE, decimal_places=12, strict=False, description=description)


class ModelPriceConfig(_Model):
    """One model's prices in cost.currency per million tokens (``cost.prices.<model>``).

    A part without its own price is billed at its parent's: cache reads and writes at the input
    price, reasoning at the output price.
    """

    input: Decimal | None = _price("Per million input tokens (cached ones included unless priced).")
    output: Decimal | None = _price("Per million output tokens (reasoning included unless priced).")
    cache_read: Decimal | None = _price("Per million input tokens read from the prompt cache.")
    cache_write: Decimal | None = _price("Per million input tokens written to the prompt cache.")
    reasoning: Decimal | None = _price("Per million reasoning (output) tokens.")
    per_response: Decimal | None = _price("Fixed price of each model response (request fees).")

    def as_prices(self) -> dict[str, Decimal | None]:
        """The prices by part, as ``quota._prices.compile_rates`` takes them."""
        return {
            "input": self.input,
            "output": self.output,
            "cache_read": self.cache_read,
            "cache_write": self.cache_write,
            "reasoning": self.reasoning,
            "per_response": self.per_response,
        }


class CostConfig(_Model):
    currency: str = Field(
        "USD",
        pattern=_CURRENCY_RE,
        description="ISO 4217 code of every amount: max_total_cost, estimated_cost, prices, metrics.",
    )
    bundled_prices: bool = Field(
        True, description="Price models from the genai-prices data bundled with the package (USD)."
    )
    unpriced: Literal["allow", "refuse"] = Field(
        "allow",
        description="A response of a model with no price: `allow` (counted as unpriced, costs nothing) "
        "or `refuse` (CostLimitExceeded when max_total_cost is set).",
    )
    prices: dict[str, ModelPriceConfig] = Field(
        default_factory=dict,
        description="Prices by model name (case-insensitive); they win over the bundled data.",
    )

    @model_validator(mode="after")
    def _bundled_prices_are_usd(self) -> CostConfig:
        if self.bundled_prices and self.currency != "USD":
            msg = (
                f"currency is {self.currency!r} but the bundled prices are in USD; set "
                "cost.bundled_prices: false and give every model's price under cost.prices"
            )
            raise PydanticCustomError("currency", msg)
        return self


# --------------------------------------------------------------------------------------------------
# alerts — thresholds and selectors for the rendered rules; also the in-process early warning.


class Matcher(_Model):
    """One PromQL label matcher, parsed and validated so it can be rendered safely."""

    name: str
    op: Literal["=", "!=", "=~", "!~"]
    value: str

    def render(self) -> str:
        """``name op "value"`` with the value escaped as a PromQL string (any character survives)."""
        escaped = "".join(
            _escape_char(c) if c in _QUOTE_BACKSLASH or not c.isprintable() else c for c in self.value
        )
        return f'{self.name}{self.op}"{escaped}"'


#: Quote and backslash, and every character that is not printable (controls, separators, format
#: characters, unassigned code points, spaces other than " "), are written as escapes in a rendered
#: PromQL string, so YAML, JSON and PromQL readers all see the same plain text around the value.
_QUOTE_BACKSLASH = frozenset('"\\')
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
#: PromQL (Go) string escapes: the single-character ones and \xHH, \uHHHH, \UHHHHHHHH, \OOO.
_GO_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_GO_ESCAPE_RE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|.)", re.DOTALL)
#: What Grafana replaces in a query: ``$name``, ``${...}`` and ``[[name]]``.
_GRAFANA_VARIABLE = re.compile(r"\$(\{|\w)|\[\[")
#: What Prometheus expands in an annotation: Go template actions.
_GO_TEMPLATE = re.compile(r"\{\{|\}\}")


def _escape_char(char: str) -> str:
    code = ord(char)
    return _SHORT_ESCAPES.get(char) or (f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")


def _unescape(value: str) -> str:
    """A PromQL double-quoted string's content with its escapes decoded, as Prometheus decodes them."""

    def decode(match: re.Match[str]) -> str:
        code = match.group(1)
        if code in _GO_ESCAPES:
            return _GO_ESCAPES[code]
        if code in ('"', "\\", "'"):
            return code
        if len(code) > 1:
            number = int(code, 8) if code.isdigit() else int(code[1:], 16)
            # \xHH and \OOO are bytes in Go: only ASCII ones are the same character everywhere.
            byte = code[0] == "x" or code.isdigit()
            if number < (0x80 if byte else 0x110000) and not 0xD800 <= number <= 0xDFFF:
                return chr(number)
        msg = f"invalid escape {shown(chr(92) + code)} in a label value (PromQL string escapes only)"
        raise ValueError(msg)

    return _GO_ESCAPE_RE.sub(decode, value)


def parse_selector(text: str) -> tuple[Matcher, ...]:
    """Parse ``job="a", cluster=~"p.*"`` into matchers; raise ``ValueError`` on anything else."""
    body = text.strip().removeprefix("{").removesuffix("}").strip()
    matchers: list[Matcher] = []
    pos = 0
    while pos < len(body):
        match = _MATCHER_RE.match(body, pos)
        if match is None:
            msg = f'cannot parse {shown(body[pos:])} as a label matcher like job="my-agent"'
            raise ValueError(msg)
        value = _unescape(match["value"])
        if found := _FORBIDDEN_CHARS.search(value) or _FORBIDDEN_SINGLE_LINE.search(value):
            msg = (
                f"the value of {match['name']} holds U+{ord(found.group()):04X}: control and line separator "
                "characters are not allowed in label values"
            )
            raise ValueError(msg)
        if grafana := _GRAFANA_VARIABLE.search(value):
            msg = (
                f"the value of {match['name']} holds {shown(grafana.group())}, which Grafana would replace "
                "as a dashboard variable; remove it"
            )
            raise ValueError(msg)
        matchers.append(Matcher.model_validate({"name": match["name"], "op": match["op"], "value": value}))
        pos = match.end()
    if not matchers:
        msg = 'the selector needs at least one matcher, e.g. job=~".+"'
        raise ValueError(msg)
    empty = [_matches_empty(m) for m in matchers]  # every matcher, so every regex is compiled
    if all(empty):
        msg = 'PromQL needs at least one matcher that does not match the empty string, e.g. job=~".+"'
        raise ValueError(msg)
    return tuple(matchers)


def _matches_empty(m: Matcher) -> bool:
    """Whether ``m`` accepts a missing label (Prometheus regexes are anchored at both ends)."""
    if m.op in ("=", "!="):
        return (m.value == "") == (m.op == "=")
    try:
        empty = re.fullmatch(m.value, "") is not None
    except re.error as exc:
        msg = f"the regex of {m.name} does not compile: {exc}"
        raise ValueError(msg) from None
    return empty == (m.op == "=~")


class AlertRule(_Model):
    enabled: bool = Field(True, description="Render this alert.")
    severity: Literal["critical", "warning", "info"] = Field("warning", description="The severity label.")
    for_: PromSeconds = Field(
        "5m", alias="for", description="How long the condition must hold (Prometheus duration)."
    )
    threshold: float = Field(0.0, ge=0, description="Alert-specific threshold (see each alert).")


# One class per alert, so a partially configured alert keeps that alert's own defaults.


class HighErrorRateRule(AlertRule):
    severity: Literal["critical", "warning", "info"] = "critical"
    threshold: float = Field(
        0.05, gt=0, lt=1, description="Errors / executions over rate_window above this ratio (0.05 = 5 %)."
    )


class QuotaNearlyExhaustedRule(AlertRule):
    for_: PromSeconds = Field("1m", alias="for", description="How long the condition must hold.")
    threshold: float = Field(
        0.8, gt=0, lt=1, description="quota_used / quota_limit above this ratio; also the in-process warning."
    )


class ActiveOverMaxConcurrencyRule(AlertRule):
    threshold: float = Field(
        0.0,
        ge=0,
        le=1_000_000,
        description="Headroom: fires when active > subagent_max_concurrency + threshold (0 = the limit).",
    )


class SlowExecutionsRule(AlertRule):
    for_: PromSeconds = Field("10m", alias="for", description="How long the condition must hold.")
    threshold: float = Field(
        120.0,
        ge=0.1,
        le=1199,
        description="p95 of subagent_duration_seconds above this (s). The histogram's buckets end at "
        "1200 s, so a p95 above 1199 s cannot be told apart from 1200 s.",
    )


class CostBudgetBurnRule(AlertRule):
    for_: PromSeconds = Field("5m", alias="for", description="How long the condition must hold.")
    threshold: float = Field(
        3600.0,
        ge=60,
        le=30 * 86400,
        description="Horizon (s): fires when the spend rate over rate_window would exhaust the money "
        "budget (agent.subagent.max_total_cost) within this many seconds.",
    )


class QuotaRejectionsRule(AlertRule):
    for_: PromSeconds = Field("1m", alias="for", description="How long the condition must hold.")
    threshold: float = Field(
        0.0, ge=0, le=1_000_000, description="Refusals per second above this (0 = any refusal)."
    )


class MetricsAbsentRule(AlertRule):
    severity: Literal["critical", "warning", "info"] = "critical"
    for_: PromSeconds = Field("10m", alias="for", description="How long the metrics must be missing.")


#: The alerts' config keys, in the order they are rendered.
ALERT_KEYS = (
    "high_error_rate",
    "quota_nearly_exhausted",
    "active_over_max_concurrency",
    "slow_executions",
    "quota_rejections",
    "metrics_absent",
    "cost_budget_burn",
)


#: A Kubernetes object name or namespace (RFC 1123 DNS subdomain / label).
_K8S_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
#: A label key: an optional DNS-subdomain prefix and a name of up to 63 characters.
_K8S_LABEL_KEY_RE = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_K8S_LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def _check_k8s_labels(value: dict[str, str]) -> dict[str, str]:
    for key, item in value.items():
        if not _K8S_LABEL_KEY_RE.match(key) or len(key.rpartition("/")[0]) > 253:
            msg = f"{key[:80]!r} is not a Kubernetes label key (e.g. release, app.kubernetes.io/name)"
            raise PydanticCustomError("k8s_label", msg)
        if not _K8S_LABEL_VALUE_RE.match(item):
            msg = (
                f"label {key}: {item[:80]!r} is not a Kubernetes label value "
                "(at most 63 letters, digits, '-', '_' or '.', starting and ending alphanumeric)"
            )
            raise PydanticCustomError("k8s_label", msg)
    return value


#: Kubernetes labels (``metadata.labels``, ``matchLabels``), checked when the config loads.
K8sLabels = Annotated[dict[str, str], AfterValidator(_check_k8s_labels)]


def _check_k8s_name(value: str) -> str:
    if len(value) > 253 or not re.match(_K8S_NAME, value):
        msg = (
            f"{value[:80]!r} is not a Kubernetes name: lower-case letters, digits, '-' and '.', "
            "starting and ending alphanumeric (e.g. monitoring)"
        )
        raise PydanticCustomError("k8s_name", msg)
    return value


#: A Kubernetes object name or namespace.
K8sName = Annotated[str, AfterValidator(_check_k8s_name)]


class PrometheusRuleMeta(_Model):
    name: K8sName = Field("subagent-telemetry", description="metadata.name of the PrometheusRule.")
    namespace: K8sName = Field("monitoring", description="metadata.namespace of the PrometheusRule.")
    labels: K8sLabels = Field(
        default_factory=lambda: {"release": "kube-prometheus-stack"},
        description="metadata.labels (match your Prometheus's ruleSelector).",
    )


class AlertsConfig(_Model):
    selector: str = Field(
        'job=~".+"', description='Label matchers inserted into every expression, e.g. job="my-agent".'
    )
    job_label: str = Field("job", description="Label that names the agent process group.")
    instance_label: str = Field("instance", description="Label that names one agent process.")
    group_by: tuple[str, ...] = Field(
        (), strict=False, description="Extra labels alerts keep, e.g. [cluster]."
    )
    rate_window: PromSeconds = Field(
        "5m", description="Window of the rates and ratios (>= 2m: rate() needs two samples in it)."
    )
    runbook_base_url: str = Field(
        "https://github.com/subagent-telemetry/subagent-telemetry/blob/main/docs/runbooks.md",
        description="runbook_url = this + '#' + the alert's anchor.",
    )
    dashboard_url: str | None = Field(None, description="Added as dashboard_url annotation when set.")
    high_error_rate: HighErrorRateRule = HighErrorRateRule()
    quota_nearly_exhausted: QuotaNearlyExhaustedRule = QuotaNearlyExhaustedRule()
    active_over_max_concurrency: ActiveOverMaxConcurrencyRule = ActiveOverMaxConcurrencyRule()
    slow_executions: SlowExecutionsRule = SlowExecutionsRule()
    quota_rejections: QuotaRejectionsRule = QuotaRejectionsRule()
    metrics_absent: MetricsAbsentRule = MetricsAbsentRule()
    cost_budget_burn: CostBudgetBurnRule = CostBudgetBurnRule()
    prometheus_rule: PrometheusRuleMeta = PrometheusRuleMeta()
    mimir_namespace: str = Field("subagent-telemetry", description="Namespace of the Mimir/Cortex rule file.")

    @field_validator("selector")
    @classmethod
    def _selector_parses(cls, value: str) -> str:
        try:
            parse_selector(value)
        except ValueError as exc:
            raise PydanticCustomError("selector", str(exc)) from None
        return value

    @field_validator("rate_window")
    @classmethod
    def _window_holds_two_samples(cls, value: str) -> str:
        if duration_seconds(value) < 120:
            msg = f"{shown(value)} is too short: rate() needs two scrapes in the window; use 2m or more"
            raise PydanticCustomError("window", msg)
        return value

    @model_validator(mode="after")
    def _tests_stay_bounded(self) -> AlertsConfig:
        """The generated promtool tests step at a resolution matching ``for`` and the rate window."""
        window = duration_seconds(self.rate_window)
        for key in ALERT_KEYS:
            rule: AlertRule = getattr(self, key)
            step = alert_test_step(self.rate_window, rule.for_)
            steps = (window + duration_seconds(rule.for_)) / step
            if rule.enabled and steps > MAX_TEST_STEPS:
                msg = (
                    f"{key}.for {rule.for_!r} with rate_window {self.rate_window!r} makes its "
                    f"generated promtool tests evaluate every {step}s over {steps:.0f} steps (at most "
                    f"{MAX_TEST_STEPS}); use a shorter for, or a for and window in whole minutes"
                )
                raise PydanticCustomError("steps", msg)
        return self

    @field_validator("runbook_base_url", "dashboard_url")
    @classmethod
    def _no_template(cls, value: str | None) -> str | None:
        if value is not None and _GO_TEMPLATE.search(value):
            msg = "holds {{ or }}, which Prometheus would expand as a template in the annotation; remove it"
            raise PydanticCustomError("template", msg)
        return value

    @field_validator("job_label", "instance_label")
    @classmethod
    def _label_name(cls, value: str) -> str:
        if not _LABEL_NAME_RE.match(value):
            raise PydanticCustomError("label", f"{shown(value)} is not a Prometheus label name")
        return value

    @field_validator("group_by")
    @classmethod
    def _group_by_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _LABEL_NAME_RE.match(name):
                raise PydanticCustomError("label", f"{shown(name)} is not a Prometheus label name")
            if name in METRIC_LABELS:
                msg = (
                    f"{name!r} is a label of our own metrics; the rules already aggregate it per alert. "
                    f"group_by takes target labels (e.g. cluster, namespace), not {', '.join(METRIC_LABELS)}"
                )
                raise PydanticCustomError("label", msg)
        return value

    @model_validator(mode="after")
    def _labels_distinct(self) -> AlertsConfig:
        if self.job_label == self.instance_label:
            msg = f"job_label and instance_label are both {self.job_label!r}; they must name two labels"
            raise PydanticCustomError("label", msg)
        for key in ("job_label", "instance_label"):
            if getattr(self, key) in METRIC_LABELS:
                msg = f"{key} {getattr(self, key)!r} is a label of our own metrics; name a target label"
                raise PydanticCustomError("label", msg)
        if self.instance_label in self.group_by:
            msg = (
                f"group_by holds the instance label {self.instance_label!r}; alerts that need it "
                "keep it already (remove it from group_by)"
            )
            raise PydanticCustomError("label", msg)
        return self

    @property
    def matchers(self) -> tuple[Matcher, ...]:
        return parse_selector(self.selector)


# --------------------------------------------------------------------------------------------------
# dashboards


class DashboardsConfig(_Model):
    title_prefix: str = Field("Subagents", min_length=1, description="Dashboard titles: '<prefix> / …'.")
    tags: tuple[str, ...] = Field(("subagents", "llm-agents"), strict=False, description="Dashboard tags.")
    uid_prefix: str = Field(
        "subagent", pattern=r"^[a-zA-Z0-9_-]{1,30}$", description="UIDs are '<prefix>-overview' etc."
    )
    refresh: PromDuration = Field("30s", description="Auto-refresh interval.")
    datasource_uid: str = Field(
        "prometheus", description="UID of the provisioned Prometheus datasource (the default choice)."
    )
    folder_uid: str | None = Field(
        None,
        pattern=r"^[a-zA-Z0-9_-]{1,40}$",
        description="Grafana folder UID for HTTP API imports (render --format grafana-api); null = General.",
    )


# --------------------------------------------------------------------------------------------------
# kubernetes — what `render` writes for prometheus-operator / kube-prometheus-stack (docs/deploy.md)


class MonitorConfig(_Model):
    kind: Literal["PodMonitor", "ServiceMonitor"] = Field(
        "PodMonitor", description="Scrape the agent's pods directly, or through a Service."
    )
    name: K8sName = Field("subagent-telemetry", description="metadata.name of the monitor.")
    namespace: K8sName = Field("monitoring", description="metadata.namespace of the monitor.")
    labels: K8sLabels = Field(
        default_factory=lambda: {"release": "kube-prometheus-stack"},
        description="metadata.labels (match your Prometheus's podMonitorSelector/serviceMonitorSelector).",
    )
    selector: K8sLabels = Field(
        default_factory=lambda: {"app.kubernetes.io/name": "agent"},
        description="matchLabels of the agent's pods (PodMonitor) or Service (ServiceMonitor).",
    )
    namespaces: tuple[K8sName, ...] = Field(
        (), strict=False, description="Namespaces the agents run in; empty = the monitor's own namespace."
    )
    port: str = Field(
        "metrics",
        description="Name of the container (PodMonitor) or Service (ServiceMonitor) port serving /metrics.",
    )
    path: str = Field("/metrics", description="HTTP path of the metrics.")
    interval: PromDuration = Field("30s", description="Scrape interval.")

    @field_validator("port")
    @classmethod
    def _port_name(cls, value: str) -> str:
        if not re.match(r"^[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$", value) or not re.search("[a-z]", value):
            msg = (
                f"{value[:80]!r} is not a port name: at most 15 lower-case letters, digits and '-' "
                "(e.g. metrics)"
            )
            raise PydanticCustomError("port_name", msg)
        return value

    @field_validator("path")
    @classmethod
    def _http_path(cls, value: str) -> str:
        if not re.match(r"^/[!-~]*$", value):
            msg = f"{value[:80]!r} is not an HTTP path: start with / and use printable ASCII (e.g. /metrics)"
            raise PydanticCustomError("path", msg)
        return value


class DashboardConfigMapsConfig(_Model):
    namespace: K8sName = Field("monitoring", description="Namespace of the ConfigMaps (Grafana's).")
    labels: K8sLabels = Field(
        default_factory=lambda: {"grafana_dashboard": "1"},
        description="Labels Grafana's dashboard sidecar selects (kube-prometheus-stack: grafana_dashboard=1)",
    )
    folder: str | None = Field(
        "Subagents",
        max_length=200,
        description="grafana_folder annotation (the sidecar's folderAnnotation); null = none.",
    )


class KubernetesConfig(_Model):
    """The monitor and dashboard ConfigMaps; the PrometheusRule's metadata is ``alerts.prometheus_rule``."""

    monitor: MonitorConfig = MonitorConfig()
    dashboards: DashboardConfigMapsConfig = DashboardConfigMapsConfig()


# --------------------------------------------------------------------------------------------------


class Config(_Model):
    """The whole configuration document."""

    agent: AgentSection = AgentSection()
    telemetry: TelemetryConfig = TelemetryConfig()
    quota: QuotaStoreConfig = QuotaStoreConfig()
    cost: CostConfig = CostConfig()
    alerts: AlertsConfig = AlertsConfig()
    dashboards: DashboardsConfig = DashboardsConfig()
    kubernetes: KubernetesConfig = KubernetesConfig()

    @property
    def subagent(self) -> SubagentConfig:
        """The ``agent.subagent`` section: the quotas."""
        return self.agent.subagent

    @classmethod
    def preset(cls, name: str) -> Config:
        """A named preset: ``cost-optimized``, ``performance-optimized``, ``balanced``, or one of the
        common patterns of docs/tuning.md (``cost-limited-exploration``, ``time-boxed-analysis``,
        ``safety-first-delegation``)."""
        try:
            quotas = PRESETS[name]
        except KeyError:
            msg = f"unknown preset {shown(name)}; choose one of: {', '.join(PRESETS)}"
            raise ConfigError(msg) from None
        return cls.model_validate({"agent": {"subagent": dict(quotas)}})

    @classmethod
    def default(cls) -> Config:
        """The production default: the ``balanced`` preset."""
        return cls.preset(DEFAULT_PRESET)


PRESETS: Mapping[str, Mapping[str, int]] = {
    "cost-optimized": {
        "max_depth": 2,
        "default_max_turns": 3,
        "max_executions": 5,
        "max_total_tokens": 10_000,
        "output_max_size": 2048,
    },
    "performance-optimized": {
        "max_depth": 4,
        "default_max_turns": 20,
        "max_executions": 50,
        "max_total_tokens": 500_000,
        "max_total_time": 3600,
    },
    "balanced": {
        "max_depth": 3,
        "default_max_turns": 10,
        "max_executions": 20,
        "max_total_tokens": 100_000,
        "max_total_time": 600,
    },
    # The three common patterns of docs/tuning.md (the original design's ready configs).
    "cost-limited-exploration": {
        "max_total_tokens": 50_000,
        "max_executions": 20,
    },
    "time-boxed-analysis": {
        "max_total_time": 300,
        "max_executions": 50,
        "max_total_tokens": 500_000,
    },
    "safety-first-delegation": {
        "max_depth": 2,
        "max_executions": 5,
        "max_total_tokens": 10_000,
        "max_total_time": 60,
    },
}
DEFAULT_PRESET = "balanced"


# --------------------------------------------------------------------------------------------------
# Loading with line numbers.


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML configuration file; raise one ``ConfigError`` naming every problem."""
    path = Path(path)
    return load_config_text(read_config_file(path), source=str(path))


def load_config_text(text: str, source: str = "<config>") -> Config:
    """Validate a YAML document given as text (``source`` names it in messages)."""
    node, data = parse_yaml(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        msg = (
            f"{source}: the document must be a mapping with keys such as `agent:`, got {type(data).__name__}"
        )
        raise ConfigError(msg)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, node, source)) from None


#: Problems listed in one ConfigError at most (the rest are counted).
_MAX_PROBLEMS = 20


def _describe(exc: ValidationError, root: yaml.Node | None, source: str) -> str:
    errors = exc.errors()
    problems = [clip(_describe_one(err, root, source), 500) for err in errors[:_MAX_PROBLEMS]]
    if len(errors) > _MAX_PROBLEMS:
        problems.append(f"… and {len(errors) - _MAX_PROBLEMS} more problems")
    head = f"{source}: invalid configuration" if len(problems) > 1 else ""
    return "\n".join([head, *(f"  - {p}" for p in problems)]) if head else problems[0]


def _describe_one(err: Any, root: yaml.Node | None, source: str) -> str:
    loc = tuple(str(p) for p in err["loc"])
    key = clip(".".join(p for p in loc if p))
    node = _find_node(root, loc)
    line = f" ({source}, line {node.start_mark.line + 1})" if node is not None else f" ({source})"
    if err["type"] == "extra_forbidden":
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(loc[-1][:100], known, n=1, cutoff=0.6)
        hint = f"did you mean `{close[0]}`?" if close else f"known keys here: {', '.join(sorted(known))}"
        return f"unknown key `{key}`{line}; {hint}"
    value = err.get("input")
    allowed = _allowed(err)
    value_text = "missing" if err["type"] == "missing" else shown(value)
    return f"`{key}` = {value_text}{line}: {clip(err['msg'], 300)}.{allowed}"


def _allowed(err: Any) -> str:
    """The whole allowed range of the field (both bounds), not just the bound that was crossed."""
    field = _field_at(tuple(str(p) for p in err["loc"]))
    bounds = []
    for meta in field.metadata if field is not None else ():
        for attr, text in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(meta, attr, None) is not None:
                bounds.append(f"{text} {getattr(meta, attr)}")
    if bounds:
        optional = field is not None and field.default is None
        unlimited = optional and "unlimited" in (field.description or "")  # type: ignore[union-attr]
        tail = " or null for unlimited" if unlimited else " or null" if optional else ""
        return f" Allowed: {' and '.join(bounds)}{tail}; set a value in that range."
    ctx = err.get("ctx") or {}
    if "expected" in ctx:
        return f" Allowed: {ctx['expected']}."
    return ""


def _walk(loc: tuple[str, ...]) -> tuple[Any, FieldInfo | None]:
    """The type at a config location and the last field on the way (``None`` past the models)."""
    model: Any = Config
    field: FieldInfo | None = None
    for part in loc:
        if typing.get_origin(model) is dict:  # A mapping of models (cost.prices): `part` is its key.
            model = typing.get_args(model)[1]
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None, None
        field = next(
            (f for name, f in model.model_fields.items() if part in (name, f.alias)),
            None,
        )
        if field is None:
            return None, None
        model = field.annotation
    return model, field


def _field_at(loc: tuple[str, ...]) -> FieldInfo | None:
    return _walk(loc)[1]


def _known_keys(loc: tuple[str, ...]) -> list[str]:
    model = _walk(loc)[0]
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [f.alias or name for name, f in model.model_fields.items()]
    return []


def _find_node(node: yaml.Node | None, loc: tuple[str, ...]) -> yaml.Node | None:
    """The YAML node at a pydantic error location (the key node for unknown keys), if any."""
    for depth, part in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == part:
                    last = depth == len(loc) - 1
                    node = key_node if last and not isinstance(value_node, yaml.ScalarNode) else value_node
                    break
            else:
                return node
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
        else:
            return node
    return node


def with_overrides(config: Config, updates: Mapping[str, Any], source: str = "command line") -> Config:
    """``config`` with ``updates`` (a nested mapping of keys, as in the YAML) merged in and validated.

    Command-line overrides go through the same validation and messages as the file they override.
    """

    def merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
        merged = dict(base)
        for key, value in extra.items():
            old = merged.get(key)
            merged[key] = merge(old, value) if isinstance(old, dict) and isinstance(value, Mapping) else value
        return merged

    data = merge(config.model_dump(by_alias=True, exclude_unset=False), updates)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, None, source)) from None

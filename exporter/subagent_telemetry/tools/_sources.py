"""Reading the catalog's metrics for the operator tools: an agent's /metrics text or the Prometheus HTTP API.

Both sources give the same :class:`Readings` (every catalog series at one instant), so ``top``, ``tune``
and ``report`` compute rates, ratios and quantiles in one way whatever they read. Metric names come only
from the catalog.
"""

from __future__ import annotations

import http.client
import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from .. import _catalog as cat
from .._text import clean_name, is_clean_name

Labels = Mapping[str, str]
Series = list[tuple[dict[str, str], float]]


class SourceError(RuntimeError):
    """A source could not be read (down, slow, not a metrics endpoint, or a bad answer); shown, not raised
    past the tool."""


#: The largest body a source may answer with (a /metrics page or a query result is far smaller).
MAX_BODY_BYTES = 64 * 2**20
_CHUNK_BYTES = 2**16


def http_get(url: str, timeout_seconds: float, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """The body of a GET within ``timeout_seconds`` in all (a server dripping bytes cannot hold it
    longer) and ``max_bytes``; any failure (refused, timeout, HTTP error, too big) is one ``SourceError``."""
    deadline = time.monotonic() + timeout_seconds
    try:
        with urllib.request.urlopen(url, timeout=timeout_seconds) as response:
            chunks: list[bytes] = []
            size = 0
            while chunk := response.read1(_CHUNK_BYTES):
                size += len(chunk)
                if size > max_bytes:
                    msg = f"GET {url}: the answer is larger than {max_bytes // 2**20} MiB"
                    raise SourceError(msg)
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    msg = f"GET {url}: no complete answer within {timeout_seconds:g}s (--timeout)"
                    raise SourceError(msg)
            return b"".join(chunks)
    except urllib.error.HTTPError as err:
        msg = f"GET {url}: HTTP {err.code} {err.reason}{_api_error(err)}"
        raise SourceError(msg) from None
    except (OSError, ValueError, http.client.HTTPException) as err:  # URLError, timeouts are OSErrors.
        reason = getattr(err, "reason", err)
        msg = f"GET {url}: {reason}"
        raise SourceError(msg) from None


def _api_error(err: urllib.error.HTTPError) -> str:
    """``: <error>`` from a Prometheus API error body (a bad query says where it fails); else ""."""
    try:
        payload = json.loads(err.read(_CHUNK_BYTES))
    except (OSError, ValueError, http.client.HTTPException):
        return ""
    detail = payload.get("error") if isinstance(payload, dict) else None
    return f": {str(detail)[:500]}" if detail else ""


@dataclass(frozen=True)
class Readings:
    """Every catalog series seen at one instant: series name → [(labels, value)]."""

    series: Mapping[str, Series]
    at_unix_seconds: float

    def samples(self, name: str, where: Labels | None = None) -> Series:
        """The series of ``name`` whose labels include ``where``."""
        want = dict(where or {})
        return [
            (lab, v) for lab, v in self.series.get(name, []) if all(lab.get(k) == x for k, x in want.items())
        ]

    def total(self, name: str, where: Labels | None = None) -> float:
        """The sum over every matching series (counters and histograms add up across processes)."""
        return math.fsum(v for _, v in self.samples(name, where))

    def by(self, name: str, label: str, where: Labels | None = None, *, agg: str = "sum") -> dict[str, float]:
        """``agg`` (``sum`` or ``max``) of the matching series, grouped by one label's values."""
        out: dict[str, float] = {}
        for lab, value in self.samples(name, where):
            key = lab.get(label, "")
            if agg == "max":
                out[key] = max(out.get(key, value), value)
            else:
                out[key] = out.get(key, 0.0) + value
        return out

    def buckets(self, spec: cat.MetricSpec, where: Labels | None = None) -> list[tuple[float, float]]:
        """Cumulative histogram buckets ``(le, count)`` summed over the matching series, sorted by ``le``."""
        counts: dict[float, float] = {}
        for lab, value in self.samples(f"{spec.name}_bucket", where):
            le = float(lab.get("le", "+Inf"))
            counts[le] = counts.get(le, 0.0) + value
        return sorted(counts.items())


def delta_buckets(
    new: list[tuple[float, float]], old: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Buckets of what happened between two readings (``old`` empty: since the start); never negative."""
    before = dict(old)
    return [(le, max(count - before.get(le, 0.0), 0.0)) for le, count in new]


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """``histogram_quantile`` as Prometheus computes it: linear interpolation inside the bucket holding
    rank ``q * count``; the highest finite bound when it falls in ``+Inf``; None without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank and count > lower_count:
            if math.isinf(le):
                return lower_bound
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = le, count
    return lower_bound


def _catalog_series_names() -> dict[str, cat.MetricSpec]:
    return {name: spec for spec in cat.CATALOG for name in spec.series_names}


def parse_metrics_text(text: str, at_unix_seconds: float | None = None) -> Readings:
    """The catalog's series in a Prometheus text exposition (other metrics are ignored)."""
    known = _catalog_series_names()
    series: dict[str, Series] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in known:
                    series.setdefault(sample.name, []).append((_labels(sample.labels), float(sample.value)))
    except ValueError as err:
        msg = f"not a Prometheus text exposition: {err}"
        raise SourceError(msg) from None
    return Readings(series, time.time() if at_unix_seconds is None else at_unix_seconds)


@dataclass
class MetricsEndpoint:
    """One agent's ``/metrics`` URL: no Prometheus needed, one process."""

    url: str
    timeout_seconds: float = 2.0

    def read(self) -> Readings:
        readings = parse_metrics_text(http_get(self.url, self.timeout_seconds).decode("utf-8", "replace"))
        if not readings.series:
            msg = f"{self.url} serves no subagent metrics (is it an agent's /metrics URL?)"
            raise SourceError(msg)
        return readings


@dataclass
class PrometheusAPI:
    """A Prometheus (or compatible) server's HTTP API, restricted to ``selector`` (e.g. ``job="agent"``)."""

    url: str
    selector: str = ""
    timeout_seconds: float = 5.0
    _names_regex: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        self._names_regex = "|".join(re.escape(n) for n in sorted(_catalog_series_names()))

    def _get(self, path: str, params: Mapping[str, str]) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            payload = json.loads(http_get(url, self.timeout_seconds))
        except (json.JSONDecodeError, UnicodeDecodeError):
            msg = f"{self.url} did not answer with JSON: is it a Prometheus URL?"
            raise SourceError(msg) from None
        if not isinstance(payload, dict):
            msg = f"{self.url} did not answer with a Prometheus API object: is it a Prometheus URL?"
            raise SourceError(msg)
        if payload.get("status") != "success":
            msg = f"{self.url}: {payload.get('errorType', '?')}: {payload.get('error', payload)}"
            raise SourceError(msg)
        return payload.get("data")

    def matchers(self, extra: str = "") -> str:
        """``{selector, extra}`` for a series selector."""
        parts = [p for p in (self.selector.strip().strip("{}"), extra) if p]
        return "{" + ", ".join(parts) + "}"

    def query(self, expr: str, at_unix_seconds: float | None = None) -> Series:
        """An instant query: [(labels, value)]."""
        params = {"query": expr}
        if at_unix_seconds is not None:
            params["time"] = f"{at_unix_seconds:.3f}"
        data = self._get("/api/v1/query", params)
        try:
            if data.get("resultType") == "scalar":
                return [({}, float(data["result"][1]))]
            return [(_labels(item["metric"]), float(item["value"][1])) for item in data["result"]]
        except (AttributeError, KeyError, IndexError, TypeError, ValueError):
            raise self._malformed(expr) from None

    def query_range(
        self, expr: str, start_unix_seconds: float, end_unix_seconds: float, step_seconds: float
    ) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        """A range query: [(labels, [(time, value)])]."""
        params = {
            "query": expr,
            "start": f"{start_unix_seconds:.3f}",
            "end": f"{end_unix_seconds:.3f}",
            "step": f"{max(step_seconds, 0.001):.3f}",
        }
        data = self._get("/api/v1/query_range", params)
        try:
            return [
                (_labels(item["metric"]), [(float(t), float(v)) for t, v in item["values"]])
                for item in data["result"]
            ]
        except (AttributeError, KeyError, IndexError, TypeError, ValueError):
            raise self._malformed(expr) from None

    def histogram(self, expr: str, at_unix_seconds: float | None = None) -> list[tuple[float, float]]:
        """An instant query ``sum by (le) (...)`` as cumulative buckets ``(le, count)`` sorted by ``le``."""
        try:
            return sorted((float(lab["le"]), v) for lab, v in self.query(expr, at_unix_seconds))
        except (KeyError, ValueError):
            raise self._malformed(expr) from None

    def readings(self, at_unix_seconds: float | None = None) -> Readings:
        """Every catalog series of every matching target at one instant (raw, per process)."""
        at = time.time() if at_unix_seconds is None else at_unix_seconds
        expr = self.matchers(f'__name__=~"{self._names_regex}"')
        series: dict[str, Series] = {}
        for labels, value in self.query(expr, at):
            name = labels.pop("__name__", "")
            series.setdefault(name, []).append((labels, value))
        return Readings(series, at)

    def firing_alerts(self, names: Iterable[str]) -> list[dict[str, str]]:
        """Labels of the firing alerts among ``names`` (the rendered rules' alerts)."""
        wanted = set(names)
        data = self._get("/api/v1/alerts", {})
        try:
            return [
                _labels(alert["labels"])
                for alert in data.get("alerts", [])
                if alert.get("state") == "firing" and alert.get("labels", {}).get("alertname") in wanted
            ]
        except (AttributeError, KeyError, TypeError):
            raise self._malformed("alerts") from None

    def _malformed(self, expr: str) -> SourceError:
        return SourceError(f"{self.url} answered {expr!r} with a malformed result: is it a Prometheus URL?")


def _labels(metric: object) -> dict[str, str]:
    """Labels as read from a source, every value a safe name: a terminal escape or a control character
    in a label (any target can expose one) is shown as U+FFFD, never sent to the operator's terminal."""
    if not isinstance(metric, dict):
        raise TypeError(metric)
    return {str(k): v if is_clean_name(v) else clean_name(v) for k, v in metric.items()}

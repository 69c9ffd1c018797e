"""Expand the few Prometheus template forms our annotations use, as Prometheus would.

The generated promtool tests must state each firing alert's annotations exactly, so the expected
description is computed here. Only the forms in templates/rules.yaml.j2 are supported; anything else
raises, so a new form cannot silently produce a wrong expectation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping

_WITH = re.compile(r"\s*\{\{-\s*with \$labels\.(\w+)\s*\}\}(.*?)\{\{\s*end\s*\}\}")
_LABEL = re.compile(r"\{\{\s*\$labels\.(\w+)\s*\}\}")
_VALUE = re.compile(r'\{\{\s*\$value\s*\|\s*(\w+)(?:\s+"([^"]*)")?\s*\}\}')


def humanize(value: float) -> str:
    """Prometheus ``humanize``: 4 significant digits with an SI prefix (1234 → "1.234k")."""
    if value == 0 or math.isnan(value) or math.isinf(value):
        return f"{value:.4g}"
    prefix = ""
    if abs(value) >= 1:
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(value) < 1000:
                break
            prefix, value = p, value / 1000
    else:
        for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
            if abs(value) >= 1:
                break
            prefix, value = p, value * 1000
    return f"{value:.4g}{prefix}"


def humanize_percentage(value: float) -> str:
    """Prometheus ``humanizePercentage``: 0.051 → "5.1%"."""
    return f"{value * 100:.4g}%"


def humanize_duration(value: float) -> str:
    """Prometheus ``humanizeDuration``: 121.5 → "2m 1s", 30.25 → "30.25s", 0.5 → "500ms"."""
    if value == 0 or math.isnan(value) or math.isinf(value):
        return f"{value:.4g}s"
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value >= 1:
        whole = int(value)  # Go's int64(v): truncation, seconds shown as an integer from minutes up.
        days, hours, minutes, seconds = whole // 86400, whole // 3600 % 24, whole // 60 % 60, whole % 60
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{value:.4g}s"
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if value >= 1:
            break
        prefix, value = p, value * 1000
    return f"{sign}{value:.4g}{prefix}s"


_FUNCTIONS: dict[str, Callable[[float, str], str]] = {
    "humanize": lambda v, _: humanize(v),
    "humanizePercentage": lambda v, _: humanize_percentage(v),
    "humanizeDuration": lambda v, _: humanize_duration(v),
    "printf": lambda v, fmt: fmt % v,
}


def expand(text: str, labels: Mapping[str, str], value: float) -> str:
    """``text`` with ``$labels``/``$value`` filled in as Prometheus fills them (missing label → "")."""
    text = _WITH.sub(lambda m: m[2].replace("{{ . }}", labels[m[1]]) if labels.get(m[1]) else "", text)
    text = _LABEL.sub(lambda m: labels.get(m[1], ""), text)
    text = _VALUE.sub(lambda m: _FUNCTIONS[m[1]](value, m[2] or "") if m[1] in _FUNCTIONS else m[0], text)
    if "{{" in text:
        msg = f"unsupported template form left in {text!r}; teach _rules_gotemplate.expand about it"
        raise ValueError(msg)
    return text

"""Render the files users import — alert/recording rules and Grafana dashboards — from the config.

Render needs only the config and the metric catalog; it never imports the runtime path.
"""

from __future__ import annotations

from pathlib import Path

from .._config import Config
from .dashboards import grafana_api_payloads, render_dashboards
from .kubernetes import render_kubernetes
from .rules import MIMIR_FILE, PROMETHEUS_RULE_FILE, RULES_FILE, TESTS_DIR, render_rules

#: Every output format ``render`` knows, in the order ``--help`` lists them (docs/deploy.md).
FORMATS: tuple[str, ...] = (
    "rules",  # alerts/rules.yaml: Prometheus rule_files
    "rule-tests",  # alerts/tests/*.yaml: promtool test rules
    "prometheus-rule",  # alerts/prometheus-rule.yaml: prometheus-operator PrometheusRule
    "mimir",  # alerts/mimir-rules.yaml: mimirtool rules load/sync
    "dashboards",  # dashboards/*.json: Grafana UI import or file provisioning
    "kubernetes",  # kubernetes/: PodMonitor/ServiceMonitor + dashboard ConfigMaps for the sidecar
    "grafana-api",  # grafana-api/*.json: bodies for POST /api/dashboards/db
)
#: What ``render`` writes without ``--format`` (and what is committed for the default config).
DEFAULT_FORMATS: tuple[str, ...] = FORMATS[:-1]


def render_files(config: Config, formats: tuple[str, ...] = DEFAULT_FORMATS) -> dict[Path, str]:
    """The rendered files of ``formats``, keyed by path relative to the output directory."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        msg = f"unknown format {', '.join(unknown)}; choose from {', '.join(FORMATS)}"
        raise ValueError(msg)
    files: dict[Path, str] = {}
    rule_formats = {"rules", "rule-tests", "prometheus-rule", "mimir"} & set(formats)
    if rule_formats:
        for path, text in render_rules(config).items():
            if _rule_format(path) in rule_formats:
                files[path] = text
    if {"dashboards", "kubernetes", "grafana-api"} & set(formats):
        dashboards = render_dashboards(config)
        if "dashboards" in formats:
            files.update(dashboards)
        if "kubernetes" in formats:
            files.update(render_kubernetes(config, dashboards))
        if "grafana-api" in formats:
            files.update(grafana_api_payloads(config, dashboards))
    return files


def _rule_format(path: Path) -> str:
    if path.parent == TESTS_DIR:
        return "rule-tests"
    return {RULES_FILE: "rules", PROMETHEUS_RULE_FILE: "prometheus-rule", MIMIR_FILE: "mimir"}[path]


def write_files(files: dict[Path, str], out_dir: Path) -> list[Path]:
    """Write rendered files under ``out_dir``; return the paths written."""
    written = []
    for rel, text in sorted(files.items()):
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written


def drifted_files(files: dict[Path, str], out_dir: Path) -> list[Path]:
    """Rendered files whose committed copy under ``out_dir`` is missing, unreadable or differs.

    Compared as bytes, so a committed file that is not UTF-8 text is drift, not a decoding error.
    """
    drifted = []
    for rel, text in sorted(files.items()):
        try:
            same = (out_dir / rel).read_bytes() == text.encode("utf-8")
        except OSError:
            same = False
        if not same:
            drifted.append(rel)
    return drifted


__all__ = ["DEFAULT_FORMATS", "FORMATS", "drifted_files", "render_files", "write_files"]

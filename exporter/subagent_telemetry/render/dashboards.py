"""Grafana dashboards (placeholder until the dashboards issue lands)."""

from __future__ import annotations

from pathlib import Path

from .._config import Config


def render_dashboards(config: Config) -> dict[Path, str]:
    """Rendered dashboard JSON files keyed by path relative to the output directory."""
    del config
    return {}

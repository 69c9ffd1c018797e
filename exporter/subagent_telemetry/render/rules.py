"""Alert and recording rules (placeholder until the rules issue lands)."""

from __future__ import annotations

from pathlib import Path

from .._config import Config


def render_rules(config: Config) -> dict[Path, str]:
    """Rendered rule files keyed by path relative to the output directory."""
    del config
    return {}

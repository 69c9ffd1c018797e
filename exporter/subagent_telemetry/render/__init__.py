"""Render the files users import — alert/recording rules and Grafana dashboards — from the config.

Render needs only the config and the metric catalog; it never imports the runtime path.
"""

from __future__ import annotations

from pathlib import Path

from .._config import Config
from .dashboards import render_dashboards
from .rules import render_rules


def render_files(config: Config) -> dict[Path, str]:
    """Every rendered file, keyed by its path relative to the output directory."""
    return {**render_rules(config), **render_dashboards(config)}


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


__all__ = ["drifted_files", "render_files", "write_files"]

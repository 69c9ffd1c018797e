"""The API reference (pdoc, built from the docstrings) builds without warnings and covers the public API."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "api_docs.py"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The reference built once by `scripts/api_docs.py` (what `make api-docs` runs) and its names."""
    out = tmp_path_factory.mktemp("api")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(out)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return out, result.stdout.split()


def _page(out: Path, module: str) -> str:
    return (out / (module.replace(".", "/") + ".html")).read_text(encoding="utf-8")


def _public_names(names: list[str]) -> list[tuple[str, str]]:
    return [tuple(name.rsplit(".", 1)) for name in names]  # type: ignore[misc]


def test_the_reference_documents_every_public_name(built: tuple[Path, list[str]]) -> None:
    """Each name in a public module's __all__ has its own entry on that module's page."""
    out, names = built
    assert "subagent_telemetry.SubagentTelemetry" in names
    for module, name in _public_names(names):
        assert f'id="{name}"' in _page(out, module), f"{module}.{name}"


def test_every_public_name_has_its_own_docstring(built: tuple[Path, list[str]]) -> None:
    """No public class or function is documented by an inherited or missing docstring."""
    _, names = built
    missing = []
    for module, name in _public_names(names):
        obj = getattr(importlib.import_module(module), name)
        if (inspect.isclass(obj) and not vars(obj).get("__doc__")) or not inspect.getdoc(obj):
            missing.append(f"{module}.{name}")
    assert missing == []


def test_every_public_method_of_a_public_class_has_a_docstring(built: tuple[Path, list[str]]) -> None:
    """Methods and properties users call (tel.serve(), handle.finish(), server.url, ...) say what they do."""
    _, names = built
    missing = []
    for module, name in _public_names(names):
        cls = getattr(importlib.import_module(module), name)
        if not inspect.isclass(cls) or not cls.__module__.startswith("subagent_telemetry"):
            continue
        for attr, member in vars(cls).items():
            if attr.startswith("_") or not (inspect.isfunction(member) or isinstance(member, property)):
                continue
            if not inspect.getdoc(member):
                missing.append(f"{module}.{name}.{attr}")
    assert missing == []

"""Build the API reference from the docstrings with pdoc: every public module, warnings are errors.

Usage: python scripts/api_docs.py OUT_DIR   (`make api-docs` writes build/api/; `make test` builds it too)
Prints one line per documented public name so tests can check that the reference covers the API.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import warnings
from pathlib import Path

import pdoc
import pdoc.render

#: Modules whose names are a compatibility promise (docs/api.md); private modules start with `_` and the
#: grouped packages (quota, backends, render, tools) are implementation, reached through these.
PUBLIC_MODULES = ["subagent_telemetry", "subagent_telemetry.fleet"]


def public_modules() -> list[str]:
    """The public modules, with every integration module (subagent_telemetry.integrations.*)."""
    modules = list(PUBLIC_MODULES)
    try:
        package = importlib.import_module("subagent_telemetry.integrations")
    except ModuleNotFoundError:
        return modules
    # Each module listed, not the package: pdoc would walk the package's modules a second time.
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            modules.append(f"{package.__name__}.{info.name}")
    return modules


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    modules = public_modules()
    pdoc.render.configure(docformat="restructuredtext", show_source=False, footer_text="subagent-telemetry")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # An unresolvable annotation or a broken __all__ fails the build.
        pdoc.pdoc(*modules, output_directory=out)
    for name in modules:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", ()):
            print(f"{name}.{attr}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

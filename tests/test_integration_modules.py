"""What every framework integration promises as a module: a clear error without its framework, an
``uninstrument()`` that is safe to call first, an example that runs offline, a benchmark that runs."""

from __future__ import annotations

import importlib
import math
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Integration:
    module: str  #: subagent_telemetry.integrations.<module>
    framework: str  #: the top-level package the integration imports
    extra: str  #: pip install 'subagent-telemetry[<extra>]'
    example: str  #: examples/<example>
    bench: str  #: benchmarks/<bench>.py

    def __str__(self) -> str:
        return self.module


INTEGRATIONS = [
    Integration(
        "openai_agents", "agents", "openai-agents", "openai_agents_research.py", "bench_openai_agents"
    ),
    Integration("pydantic_ai", "pydantic_ai", "pydantic-ai", "pydantic_ai_research.py", "bench_pydantic_ai"),
    Integration("langgraph", "langgraph", "langgraph", "langgraph_research.py", "bench_langgraph"),
    Integration(
        "claude_agent_sdk",
        "claude_agent_sdk",
        "claude-agent-sdk",
        "claude_agent_sdk_research.py",
        "bench_claude_agent_sdk",
    ),
]
each = pytest.mark.parametrize("integration", INTEGRATIONS, ids=str)
#: The Claude example runs the real CLI (tests/integration/test_claude_agent_sdk.py runs it), and its
#: subagents' tokens are what the CLI reports, not the fake model's usage (docs/integrations.md).
each_exact_example = pytest.mark.parametrize(
    "integration", [i for i in INTEGRATIONS if i.module != "claude_agent_sdk"], ids=str
)


@each
def test_missing_framework_names_the_extra(integration: Integration) -> None:
    """Importing the integration without its framework raises one ImportError naming the extra to install."""
    code = (
        f"import sys; sys.modules[{integration.framework!r}] = None\n"
        f"try:\n    import subagent_telemetry.integrations.{integration.module}\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert f"pip install 'subagent-telemetry[{integration.extra}]'" in out


@each
def test_uninstrument_before_instrument_is_a_silent_no_op(integration: Integration) -> None:
    """uninstrument() with nothing instrumented neither warns nor raises."""
    module = importlib.import_module(f"subagent_telemetry.integrations.{integration.module}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module.uninstrument()


@each_exact_example
def test_example_runs_offline_and_prints_the_metrics(integration: Integration) -> None:
    """The framework's example runs as is (no key, no network) and prints the research tree's series."""
    script = ROOT / "examples" / integration.example
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert "final output: the report" in lines
    for line in (
        'subagent_executions_total{depth="2"} 2.0',
        'subagent_tokens_consumed_sum{depth="1"} 1000.0',
        'subagent_tokens_consumed_sum{depth="2"} 765.0',
        'subagent_tokens_consumed_sum{depth="3"} 48.0',
    ):
        assert line in lines


@each
def test_benchmark_reports_both_sides_and_the_ratio(integration: Integration) -> None:
    """The integration's benchmark runs (tiny sizes) with finite times and one ratio per run length."""
    bench = importlib.import_module(f"benchmarks.{integration.bench}")
    figures = bench.run(quick=True)["figures"]
    assert len(figures) >= 8
    assert all(math.isfinite(f["value"]) for f in figures)
    assert [f["unit"] for f in figures].count("x") == len(figures) // 4  # One ratio per measured pair.

"""The public surface is a promise: pin it."""

from __future__ import annotations

import subprocess
import sys

import subagent_telemetry

PUBLIC = {
    "ConcurrencyLimitReached",
    "Config",
    "ConfigError",
    "CostLimitExceeded",
    "DepthLimitExceeded",
    "ErrorType",
    "Execution",
    "ExecutionLimitReached",
    "InMemoryQuotaStore",
    "MetricsServer",
    "QuotaExceeded",
    "QuotaLimits",
    "QuotaStore",
    "QuotaTracker",
    "QuotaUsage",
    "Resource",
    "Status",
    "SubagentInputError",
    "SubagentMetrics",
    "SubagentTelemetry",
    "TimeLimitExceeded",
    "TokenLimitExceeded",
    "TurnLimitExceeded",
    "load_config",
}


def test_all_is_exactly_the_public_names() -> None:
    """__all__ lists exactly the documented public names."""
    assert set(subagent_telemetry.__all__) == PUBLIC


def test_every_public_name_imports() -> None:
    """Each name in __all__ is importable from the package."""
    for name in PUBLIC:
        assert getattr(subagent_telemetry, name) is not None


def test_quota_exceptions_share_the_base_class() -> None:
    """Every quota exception is a QuotaExceeded."""
    for name in ("ExecutionLimitReached", "TokenLimitExceeded", "TimeLimitExceeded", "DepthLimitExceeded",
                 "TurnLimitExceeded", "ConcurrencyLimitReached", "CostLimitExceeded"):  # fmt: skip
        assert issubclass(getattr(subagent_telemetry, name), subagent_telemetry.QuotaExceeded)


def test_import_does_not_load_optional_stacks() -> None:
    """Importing the package loads neither OpenTelemetry, redis, jinja2 nor the dashboard SDK."""
    code = (
        "import sys, subagent_telemetry; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('opentelemetry', 'redis', 'jinja2', 'grafana_foundation_sdk')]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_attribute_raises_attribute_error() -> None:
    """The lazy loader does not invent names."""
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        subagent_telemetry.Nope  # noqa: B018 - the access is the behaviour under test


def test_bare_import_defers_pydantic_and_prometheus_client() -> None:
    """`import subagent_telemetry` loads neither pydantic nor prometheus_client until a name needs them."""
    code = (
        "import sys, subagent_telemetry; "
        "print(sorted(m for m in ('pydantic', 'prometheus_client', 'yaml') if m in sys.modules)); "
        "subagent_telemetry.SubagentTelemetry; "
        "print(sorted(m for m in ('pydantic', 'prometheus_client', 'yaml') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["[]", "['prometheus_client', 'pydantic', 'yaml']"]


FLEET_PUBLIC = {
    "BatchPush",
    "QuotaLimitsMismatchError",
    "QuotaStoreUnavailable",
    "child_exit",
    "mark_process_dead",
    "multiprocess_registry",
    "prepare_multiprocess_dir",
    "push_on_exit",
}


def test_fleet_module_exports_exactly_its_public_names() -> None:
    """subagent_telemetry.fleet's __all__ is pinned, and every name imports."""
    from subagent_telemetry import fleet

    assert set(fleet.__all__) == FLEET_PUBLIC
    for name in FLEET_PUBLIC:
        assert getattr(fleet, name) is not None


def test_fleet_errors_are_the_documented_kinds() -> None:
    """A down store is a QuotaExceeded (agent code already catches it); a limits mismatch is a ConfigError."""
    from subagent_telemetry import fleet

    assert issubclass(fleet.QuotaStoreUnavailable, subagent_telemetry.QuotaExceeded)
    assert issubclass(fleet.QuotaLimitsMismatchError, subagent_telemetry.ConfigError)


#: The handle API integrations code against (docs/api.md): method -> its parameters, in order.
HANDLE_API = {
    "SubagentTelemetry": {
        "start": ["name", "parent", "depth", "max_turns", "model", "provider"],
        "try_start": ["name", "parent", "depth", "max_turns", "model", "provider"],
        "astart": ["name", "parent", "depth", "max_turns", "model", "provider"],
        "try_astart": ["name", "parent", "depth", "max_turns", "model", "provider"],
        "use": ["run"],
        "current": [],
        "execution": ["name", "max_turns"],
    },
    "Execution": {
        "record_turn": [],
        "record_tokens": [
            "input",
            "output",
            "total",
            "model",
            "provider",
            "cache_read",
            "cache_write",
            "reasoning",
        ],
        "record_response": [
            "input",
            "output",
            "total",
            "model",
            "provider",
            "cache_read",
            "cache_write",
            "reasoning",
        ],
        "finish": ["exc", "status", "error_type"],
        "set_output": ["text"],
        "mark_incomplete": [],
        "check_time": [],
        "elapsed": [],
    },
    "SubagentMetrics": {
        "record_completion": ["turns", "tokens", "status"],
        "record_error": ["error_type", "turns", "tokens"],
        "finish": ["exc", "status", "error_type"],
    },
}


def test_the_handle_api_keeps_its_names_and_parameters() -> None:
    """The methods of docs/api.md exist with their documented parameters (keyword names are API)."""
    import inspect

    for class_name, methods in HANDLE_API.items():
        cls = getattr(subagent_telemetry, class_name)
        for method, params in methods.items():
            signature = inspect.signature(getattr(cls, method))
            assert [p for p in signature.parameters if p != "self"] == params, (class_name, method)


def test_execution_attributes_of_the_handle_api() -> None:
    """model/provider/tokens/depth/parent are readable on every execution."""
    tel = subagent_telemetry.SubagentTelemetry(registry=__import__("prometheus_client").CollectorRegistry())
    handle = tel.start("h", model="m")
    assert (handle.model, handle.provider, handle.tokens, handle.depth, handle.parent) == (
        "m",
        None,
        0,
        1,
        None,
    )
    assert handle.finish() is True


INTEGRATIONS_PUBLIC = {
    "openai_agents": {"instrument", "uninstrument"},
    "pydantic_ai": {"TelemetryCapability", "instrument", "uninstrument"},
    "langgraph": {
        "SUPPORTED_VERSIONS",
        "SubagentCallbackHandler",
        "callback_handler",
        "instrument",
        "uninstrument",
    },
    "claude_agent_sdk": {"SUPPORTED_VERSIONS", "instrument", "query", "uninstrument"},
}


def test_integration_modules_export_exactly_their_public_names() -> None:
    """Each subagent_telemetry.integrations.<framework> module's __all__ is pinned, and every name imports."""
    import importlib

    for module_name, names in INTEGRATIONS_PUBLIC.items():
        module = importlib.import_module(f"subagent_telemetry.integrations.{module_name}")
        assert set(module.__all__) == names, module_name
        for name in names:
            assert getattr(module, name) is not None

"""Shared fixtures: every test gets its own registry and clock; nothing touches global state."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from subagent_telemetry import Config, SubagentTelemetry


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_config(**subagent: object) -> Config:
    """A config whose ``agent.subagent`` holds exactly these keys (the rest default)."""
    return Config.model_validate({"agent": {"subagent": subagent}, "telemetry": {"log_executions": False}})


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def telemetry_factory(registry: CollectorRegistry) -> Iterator[type[SubagentTelemetry]]:
    """Builds ``SubagentTelemetry`` on the test's registry; shuts every instance down afterwards."""
    made: list[SubagentTelemetry] = []

    def factory(config: Config | None = None, **kwargs: object) -> SubagentTelemetry:
        tel = SubagentTelemetry(config if config is not None else make_config(), registry=registry, **kwargs)  # type: ignore[arg-type]
        made.append(tel)
        return tel

    yield factory  # type: ignore[misc]
    for tel in made:
        tel.shutdown(timeout_seconds=1)


@pytest.fixture(autouse=True)
def _quiet_subagent_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="subagent_telemetry")


def run_async(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]

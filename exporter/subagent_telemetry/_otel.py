"""OpenTelemetry backend (placeholder until the OpenTelemetry issue lands)."""

from __future__ import annotations

from typing import Any


class OtelBackend:
    tracing = False

    def __init__(self, config: Any, **kwargs: Any) -> None:
        msg = "the OpenTelemetry backend is not available yet"
        raise NotImplementedError(msg)

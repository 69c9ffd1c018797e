"""The bounded mapper for the optional ``agent`` label: free strings never reach a label unbounded."""

from __future__ import annotations

import threading

from ._config import AgentLabelConfig

OTHER = "other"


class AgentLabelMapper:
    """Maps an execution name to a label value: allowlisted names, or the first ``max_values``
    distinct names when there is no allowlist; everything else becomes ``other``."""

    __slots__ = ("_fixed", "_lock", "_max_values", "_seen")

    def __init__(self, config: AgentLabelConfig) -> None:
        self._fixed = bool(config.allowlist)
        self._seen: dict[str, str] = {name: name for name in config.allowlist}
        self._max_values = config.max_values
        self._lock = threading.Lock()

    def __call__(self, name: str) -> str:
        value = self._seen.get(name)
        if value is not None:
            return value
        if self._fixed:
            return OTHER
        with self._lock:
            if name in self._seen:
                return self._seen[name]
            if len(self._seen) >= self._max_values:
                return OTHER
            self._seen[name] = name
            return name

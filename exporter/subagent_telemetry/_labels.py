"""The bounded mapper for the optional ``agent`` label: free strings never reach a label unbounded."""

from __future__ import annotations

import threading
from collections.abc import Callable

from ._config import AgentLabelConfig
from ._text import clean_name, is_clean_name

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


#: Distinct execution names remembered by ``NameCache`` (later names are sanitized on every call).
NAME_CACHE_SIZE = 4096


class NameCache:
    """Execution name -> (sanitized name, ``agent`` label value), computed once per distinct name.

    ``entries`` is read directly on the hot path (one dict lookup for both values); ``lookup`` fills it
    for the first ``NAME_CACHE_SIZE`` names, so memory stays bounded whatever names agents use.
    """

    __slots__ = ("_agent_label", "entries")

    def __init__(self, agent_label: Callable[[str], str]) -> None:
        self._agent_label = agent_label
        self.entries: dict[str, tuple[str, str]] = {}

    def lookup(self, name: str) -> tuple[str, str]:
        clean = name if is_clean_name(name) else clean_name(name)
        entry = (clean, self._agent_label(clean))
        if len(self.entries) < NAME_CACHE_SIZE:
            self.entries[name] = entry
        return entry

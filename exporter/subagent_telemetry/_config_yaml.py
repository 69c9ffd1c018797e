"""Reading a configuration file safely: a size limit, UTF-8 text, no duplicate keys, bounded aliases.

Everything here raises ``ConfigError`` with a short message (never the unbounded value), so a
hostile or broken file costs bounded time and memory and ends in one readable error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ._errors import ConfigError

#: Largest configuration file accepted, in bytes (a real one is a few kilobytes).
MAX_CONFIG_BYTES = 1_048_576
#: Most YAML nodes a document may expand to, counting each alias use as a copy of what it names.
MAX_CONFIG_NODES = 20_000
#: Longest rendering of a value inside an error message.
MAX_SHOWN_CHARS = 80


def clip(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """``text`` cut to ``limit`` characters, marked with how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def shown(value: object) -> str:
    """A value as error messages show it: its repr, clipped."""
    return clip(repr(value))


def read_config_file(path: Path) -> str:
    """The text of a configuration file: at most ``MAX_CONFIG_BYTES``, UTF-8 (a BOM is allowed)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        msg = f"cannot read configuration {shown(str(path))}: {exc.strerror or exc}"
        raise ConfigError(msg) from None
    if len(data) > MAX_CONFIG_BYTES:
        msg = (
            f"{path}: larger than {MAX_CONFIG_BYTES} bytes, the limit for a configuration file; "
            "is this the right file?"
        )
        raise ConfigError(msg)
    if b"\x00" in data:
        msg = f"{path}: a binary file (it contains NUL bytes), not a YAML configuration"
        raise ConfigError(msg)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        msg = (
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save the file as UTF-8"
        )
        raise ConfigError(msg) from None


def parse_yaml(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """The node tree (for line numbers) and the data of one YAML document, checked.

    Refused: documents over the size limit, duplicate keys in any mapping (both lines named), and
    documents whose aliases expand past ``MAX_CONFIG_NODES`` nodes (a "billion laughs" bomb).
    """
    if len(text) > MAX_CONFIG_BYTES:
        msg = f"{source}: larger than {MAX_CONFIG_BYTES} characters, the limit for a configuration"
        raise ConfigError(msg)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_tree(node, source)
        return node, loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "an unknown line"
        problem = clip(str(exc.problem or exc), 200)
        msg = f"{source}: YAML syntax error at {where}: {problem}. Fix the YAML syntax there."
        raise ConfigError(msg) from None
    except yaml.YAMLError as exc:
        msg = f"{source}: not valid YAML: {clip(str(exc), 300)}"
        raise ConfigError(msg) from None
    finally:
        loader.dispose()


def _check_tree(root: yaml.Node, source: str) -> None:
    """Count nodes as constructed (aliases expanded) and refuse duplicate mapping keys."""
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    checked: set[int] = set()
    count = 0
    while stack:
        node, path = stack.pop()
        count += 1
        if count > MAX_CONFIG_NODES:
            msg = (
                f"{source}: the document has more than {MAX_CONFIG_NODES} YAML values, counting each "
                "use of an alias as a copy of what it names; a configuration needs a few hundred"
            )
            raise ConfigError(msg)
        if isinstance(node, yaml.MappingNode):
            if id(node) not in checked:
                checked.add(id(node))
                _check_keys(node, path, source)
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else "?"
                stack.append((key, path))
                stack.append((value, f"{path}.{name}" if path else name))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(node.value))


def _check_keys(node: yaml.MappingNode, path: str, source: str) -> None:
    seen: dict[str, yaml.Node] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        first = seen.setdefault(key.value, key)
        if first is not key:
            name = clip(f"{path}.{key.value}" if path else key.value)
            msg = (
                f"{source}: duplicate key `{name}` at line {first.start_mark.line + 1} and line "
                f"{key.start_mark.line + 1}; keep one of them"
            )
            raise ConfigError(msg)

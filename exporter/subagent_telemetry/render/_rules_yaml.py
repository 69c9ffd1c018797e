"""YAML output for rendered files: keys in insertion order, multi-line strings as literal blocks."""

from __future__ import annotations

from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes multi-line strings (PromQL expressions) as readable ``|-`` blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        # Generated tests share lists between entries; readers should see every value spelled out.
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(data: Any) -> str:
    """``data`` as a YAML document; long lines are kept so expressions and descriptions read as one."""
    text: str = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1_000_000)
    return text

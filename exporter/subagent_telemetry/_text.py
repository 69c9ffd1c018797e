"""Free text entering the library (execution names, model names, outputs) made safe once, at the boundary.

Every exporter encodes strings as UTF-8: a lone surrogate fails the Prometheus exposition (HTTP 500 on
every later scrape) and the OTLP protobuf batch holding it. Names also lose control and line-break
characters, which read as garbage in labels, span names and log lines, and are bounded in length.
"""

from __future__ import annotations

import re

#: Longest name kept (characters); longer names are cut. Names are labels and span names, not payloads.
NAME_MAX_CHARS = 256
#: What ``clean_name`` replaces: C0/C1 controls, DEL, the Unicode line/paragraph separators and surrogates.
_UNSAFE_IN_NAMES = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_SURROGATES = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def clean_name(name: object) -> str:
    """``name`` as a safe name: a ``str``, every unsafe character replaced by U+FFFD, at most
    ``NAME_MAX_CHARS`` characters. Callers test the fast path (``str``, short, ``isprintable``) first."""
    text = name if isinstance(name, str) else str(name)
    return _UNSAFE_IN_NAMES.sub(REPLACEMENT, text[:NAME_MAX_CHARS])


def is_clean_name(name: object) -> bool:
    """The fast path of ``clean_name``: nothing to change (printable text has no controls or surrogates)."""
    return type(name) is str and len(name) <= NAME_MAX_CHARS and name.isprintable()


def encodable(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD, so it encodes as UTF-8 (newlines are kept)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATES.sub(REPLACEMENT, text)
    return text


def truncate_utf8(text: str, limit_bytes: int) -> tuple[str, int]:
    """``text`` cut to at most ``limit_bytes`` of UTF-8 without splitting a character; and its size.

    The size is ``-1`` when the text is short enough that it cannot exceed the limit (not measured).
    Lone surrogates are replaced first (they have no UTF-8 encoding).
    """
    if len(text) * 4 <= limit_bytes:  # Cannot exceed the limit whatever the characters.
        return (text if text.isascii() else encodable(text)), -1
    text = encodable(text)
    data = text.encode("utf-8")
    if len(data) <= limit_bytes:
        return text, len(data)
    return data[:limit_bytes].decode("utf-8", errors="ignore"), len(data)

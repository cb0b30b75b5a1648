"""Text from outside (a record, a header, a frame, a row) shown in a log line or
a terminal.

Every character an id may not hold (``limits.ID_FORBIDDEN_RANGES``: controls,
invisible and bidirectional-format characters, lone surrogates) is written as
its escape, so such text can neither forge a log line nor drive a terminal
(``ESC ]`` sequences retitle a window, others move the cursor or hide text).
"""

from __future__ import annotations

import re

from contracts.limits import ID_FORBIDDEN_RANGES

UNSAFE_CHARS = re.compile(
    "[" + "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in ID_FORBIDDEN_RANGES) + "]"
)


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(text: str) -> str:
    """``text`` with every unsafe character escaped (``\\x1b``, ``\\u202e``);
    text without any is returned as it is."""
    if UNSAFE_CHARS.search(text) is None:
        return text
    return UNSAFE_CHARS.sub(_escape, text)

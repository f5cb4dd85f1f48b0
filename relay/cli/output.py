"""Printing stored values to an operator's terminal without letting them drive it.

A notification's fields, an endpoint's answer, even a source or endpoint name read back from Redis
come from outside: an INS whose unsigned ``invoice_status`` holds ``ESC[2J`` would clear the screen,
and a line break would forge a table row. Every value the CLI prints goes through ``clean`` (text)
or ``json_text`` (JSON), which show control characters as visible escapes instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

# C0 and C1 control characters, DEL, and the Unicode format characters that reorder or hide text
# (bidi overrides and isolates, line/paragraph separators, zero-width joiners, BOM)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
# what json.dumps(ensure_ascii=False) leaves raw inside strings (it escapes C0 itself, and the
# newlines outside strings are the indentation)
_JSON_RAW = re.compile("[\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\e"}


def _escape(match: re.Match[str]) -> str:
    ch = match.group(0)
    if ch in _NAMED:
        return _NAMED[ch]
    return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"


def clean(value: object) -> str:
    """``value`` as one line of inert text: every control character shown as an escape."""
    return _CONTROL.sub(_escape, str(value))


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group(0)):04x}"


def json_text(doc: Any) -> str:
    """``doc`` as indented JSON that is safe on a terminal and still the same JSON for scripts.

    json.dumps already escapes C0 characters; DEL, C1 and the format characters it leaves raw are
    escaped here too. They can only occur inside strings, where ``\\uXXXX`` means the same.
    """
    return _JSON_RAW.sub(_json_escape, json.dumps(doc, indent=2, ensure_ascii=False))

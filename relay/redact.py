"""Never show a configured secret: the one redaction used by the API, the CLI and the dashboard.

A secret reaches stored bytes in more shapes than its plain text: a form body carries it
percent-encoded (a space as ``+`` or ``%20``, hex digits in either case, and each encoder with its
own idea of which characters to escape), a JSON body or a JSON answer carries it escaped, and an
endpoint's answer is cut to ``response_snippet_bytes`` so only the start of a secret may be left at
the snippet's end. Each of these is matched here; a match anywhere
in a string becomes ``**redacted**``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any
from urllib.parse import quote, quote_plus

REDACTED = "**redacted**"
# a cut-off piece of a secret this long at a string's edge is still hidden: shorter ones would
# hide ordinary text, and 8 characters of a secret no longer help much to guess the rest
MIN_PARTIAL = 8


def encodings(secret: str) -> set[str]:
    """Every shape ``secret`` can take in stored bytes."""
    shapes = {secret}
    for safe in ("", "/"):
        shapes.add(quote(secret, safe=safe))
        shapes.add(quote_plus(secret, safe=safe))
    for ascii_only in (True, False):
        escaped = json.dumps(secret, ensure_ascii=ascii_only)[1:-1]
        shapes.update({escaped, escaped.replace("/", "\\/")})
    return {s for s in shapes if s}


def _char_pattern(ch: str) -> str:
    """Every way one character of a secret can be written: encoders differ in what they escape
    (JavaScript's encodeURIComponent keeps ``!*'()~``, PHP's urlencode escapes ``~``), so each
    character is matched raw, percent-encoded or JSON-escaped independently of its neighbours."""
    forms = {ch, "".join(f"%{b:02X}" for b in ch.encode("utf-8"))}
    forms.update(json.dumps(ch, ensure_ascii=a)[1:-1] for a in (True, False))
    if ch == " ":
        forms.add("+")
    if ch == "/":
        forms.add("\\/")
    return "(?:" + "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)) + ")"


def _secret_pattern(secret: str) -> str:
    return "".join(_char_pattern(ch) for ch in secret)


@lru_cache(maxsize=32)
def _compiled(secrets: tuple[str, ...]) -> tuple[re.Pattern[str] | None, tuple[str, ...]]:
    shapes = sorted({s for secret in secrets for s in encodings(secret)}, key=len, reverse=True)
    # longest secret first, so a secret that contains another is hidden whole
    ordered = sorted((s for s in secrets if s), key=len, reverse=True)
    # IGNORECASE: percent-encoders differ in the case of hex digits; hiding a string that equals a
    # secret but for case costs nothing
    whole = re.compile("|".join(_secret_pattern(s) for s in ordered), re.IGNORECASE) if ordered else None
    return whole, tuple(s.lower() for s in shapes)


def _edges(text: str, shapes: tuple[str, ...]) -> str:
    """Hide a secret cut at either end of ``text``: a snippet keeps a secret's start, a window its end."""
    lowered = text.lower()
    head, tail = lowered[:MIN_PARTIAL], lowered[-MIN_PARTIAL:]
    cut_end = cut_start = 0
    for shape in shapes:
        # cheap filter first: a cut piece contains the text's last (first) MIN_PARTIAL characters
        at_end, at_start = tail in shape, head in shape
        for n in range(min(len(shape) - 1, len(text)), MIN_PARTIAL - 1, -1) if at_end or at_start else ():
            if at_end and n > cut_end and lowered.endswith(shape[:n]):
                cut_end = n
            if at_start and n > cut_start and lowered.startswith(shape[-n:]):
                cut_start = n
    if not cut_end and not cut_start:
        return text
    if cut_start + cut_end >= len(text):
        return REDACTED
    return (REDACTED if cut_start else "") + text[cut_start:len(text) - cut_end] + (REDACTED if cut_end else "")


def redact_text(text: str, secrets: Iterable[str]) -> str:
    whole, shapes = _compiled(tuple(sorted(set(secrets))))
    if whole is None:
        return text
    return _edges(whole.sub(REDACTED, text), shapes)


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """``value`` (a string, or dicts and lists of them) with every configured secret hidden."""
    hidden = tuple(sorted(set(secrets)))
    if isinstance(value, str):
        return redact_text(value, hidden)
    if isinstance(value, dict):
        return {key: redact(v, hidden) for key, v in value.items()}
    if isinstance(value, list):
        return [redact(v, hidden) for v in value]
    return value

"""Never show a secret: the one redaction used by the API, the CLI and the dashboard.

Two rules, applied alike on every surface by ``redact_notification`` (one notification in full) and
``redact_rows`` (a listing's rows):

- every configured secret (``secrets``: 2Checkout keys and INS words, endpoint signing secrets and
  header values, the admin token) is hidden wherever it turns up, in every shape it can take;
- every form field whose name contains ``PASSWORD``, ``SECRET`` or ``TOKEN`` (``sensitive``) has its
  values hidden, in the parsed fields and in the raw body alike. 2Checkout's ``HASH`` and
  ``SIGNATURE_*`` are signatures, not secrets, and stay shown.

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
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus, urlsplit, urlunsplit

from config.settings import Endpoint, Secret, Settings, Source

REDACTED = "**redacted**"
# a cut-off piece of a secret this long at a string's edge is still hidden: shorter ones would
# hide ordinary text, and 8 characters of a secret no longer help much to guess the rest
MIN_PARTIAL = 8
# a field named like one of these carries a credential whatever its value (API_PASSWORD, x_token, CLIENT_SECRET)
SENSITIVE = ("PASSWORD", "SECRET", "TOKEN")
# a configured value shorter than this is not a secret worth hiding (a header value like "1")
MIN_SECRET = 6


def shown_url(url: str) -> str:
    """An endpoint's URL fit for output: a password in it, and the value of a query parameter named
    like a credential (``api_token``, ``key``), shown as ``***``; the rest as configured."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    query = "&".join(
        f"{name}=***" if any(word in name.upper() for word in (*SENSITIVE, "KEY")) else f"{name}{eq}{value}"
        for name, eq, value in (pair.partition("=") for pair in parts.query.split("&") if pair)
    )
    return urlunsplit(parts._replace(netloc=f"{user}{':***' if colon else ''}{at}{hostport}", query=query))


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
def _compiled(secrets: tuple[str, ...]) -> tuple[re.Pattern[str] | None, tuple[str, ...], int]:
    shapes = sorted({s for secret in secrets for s in encodings(secret)}, key=len, reverse=True)
    # longest secret first, so a secret that contains another is hidden whole
    ordered = sorted((s for s in secrets if s), key=len, reverse=True)
    # IGNORECASE: percent-encoders differ in the case of hex digits; hiding a string that equals a
    # secret but for case costs nothing
    whole = re.compile("|".join(_secret_pattern(s) for s in ordered), re.IGNORECASE) if ordered else None
    # the shortest text either rule can change: a whole secret, or a cut piece of MIN_PARTIAL characters
    shortest = min([MIN_PARTIAL, *(len(s) for s in ordered)])
    return whole, tuple(s.lower() for s in shapes), shortest


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
    return (REDACTED if cut_start else "") + text[cut_start : len(text) - cut_end] + (REDACTED if cut_end else "")


def redact_text(text: str, secrets: Iterable[str]) -> str:
    return _redact_str(text, tuple(sorted(set(secrets))))


def _redact_str(text: str, hidden: tuple[str, ...]) -> str:
    whole, shapes, shortest = _compiled(hidden)
    # nothing shorter than every secret and than a hidden piece can hold either (most values: "ipn", "HTTP 200")
    if whole is None or len(text) < shortest:
        return text
    return _edges(whole.sub(REDACTED, text), shapes)


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """``value`` (a string, or dicts and lists of them) with every configured secret hidden."""
    return _walk(value, tuple(sorted(set(secrets))))


def _walk(value: Any, hidden: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return _redact_str(value, hidden)
    if isinstance(value, dict):
        return {key: _walk(v, hidden) for key, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, hidden) for v in value]
    return value


def secrets(settings: Settings) -> list[str]:
    """Every configured secret long enough to be one, longest first."""
    found: list[Secret | None] = [settings.admin_token]
    items: list[Source | Endpoint] = [*settings.sources.values(), *settings.endpoints.values()]
    for item in items:
        for name in type(item).model_fields:
            value = getattr(item, name)
            found += list(value.values()) if isinstance(value, Mapping) else [value]
    values = {s.reveal() for s in found if isinstance(s, Secret) and len(s.reveal()) >= MIN_SECRET}
    return sorted(values, key=len, reverse=True)


def sensitive(name: str) -> bool:
    """Whether a field named ``name`` carries a credential (its name contains PASSWORD, SECRET or TOKEN)."""
    upper = name.upper()
    return any(word in upper for word in SENSITIVE)


def redact_form(body: str) -> str:
    """A form body with the value of every sensitive field hidden (the names and the order kept)."""
    pieces = body.split("&")
    for i, piece in enumerate(pieces):
        name, sep, _ = piece.partition("=")
        if sep and sensitive(unquote_plus(name)):
            pieces[i] = f"{name}={REDACTED}"
    return "&".join(pieces)


def redact_notification(doc: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """One notification in full (``relay/store/detail.py``) as every surface shows it: configured
    secrets hidden everywhere, sensitive fields hidden in ``fields`` and in the raw ``body``."""
    out: dict[str, Any] = redact(dict(doc), secrets(settings))
    if out.get("fields"):
        out["fields"] = {
            name: [REDACTED] * len(values) if sensitive(name) else values for name, values in out["fields"].items()
        }
    if isinstance(out.get("body"), str):
        out["body"] = redact_form(out["body"])
    return out


def redact_rows(rows: Iterable[Mapping[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    """A listing's rows (``Row.summary()``) as every surface shows them: configured secrets hidden."""
    hidden = secrets(settings)
    return [redact(dict(row), hidden) for row in rows]

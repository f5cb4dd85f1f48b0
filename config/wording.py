"""How a configuration problem is said: an endpoint or source by its name, a rule in plain words.

``endpoints[3].url = 'ftp://x': String should match pattern '^https?://…'`` becomes
``endpoint 'crm': url = 'ftp://x': expected an http:// or https:// URL with a host``. An entry whose
own name is the problem is said by its place (``the 3rd [[endpoints]]``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

_NAME_RULE = "expected 1 to 40 lowercase letters, digits, '_' or '-', starting with a letter or digit"
_URL_RULE = "expected an http:// or https:// URL with a host, e.g. https://billing.internal/hooks/2co"
_ENV_RULE = "expected an environment variable name: letters, digits and '_', not starting with a digit"
# a field's pattern, in words (by the field's name; a name ending in _env is an environment variable)
PATTERN_WORDS = {
    "name": _NAME_RULE,
    "url": _URL_RULE,
    "api_url": _URL_RULE,
    "seller_id": "expected your 2Checkout seller (vendor) id: up to 20 digits",
    "merchant_code": "expected your 2Checkout merchant code: letters, digits, '_', '.' or '-'",
}
_SINGULAR = {"endpoints": "endpoint", "sources": "source"}
_VALID_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def item(section: str, index: int, name: object) -> str:
    """``endpoint 'crm'``, or ``the 3rd [[endpoints]]`` when it has no usable name."""
    if isinstance(name, str) and _VALID_NAME.match(name):
        return f"{_SINGULAR.get(section, section)} {name!r}"
    return f"the {ordinal(index + 1)} [[{section}]]"


def key(loc: Sequence[int | str], raw: Mapping[str, Any]) -> str:
    """Where a problem is: ``server.port``, ``endpoint 'crm': retry_4xx[0]``."""
    parts = list(loc)
    prefix = ""
    if len(parts) >= 2 and parts[0] in _SINGULAR and isinstance(parts[1], int):
        entries = raw.get(str(parts[0]))
        entry = entries[parts[1]] if isinstance(entries, list) and parts[1] < len(entries) else None
        named = entry.get("name") if isinstance(entry, dict) else None
        # the entry's name is the problem itself: say where it is instead
        if parts[2:3] == ["name"]:
            named = None
        prefix = item(str(parts[0]), parts[1], named) + (": " if len(parts) > 2 else "")
        parts = parts[2:]
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return prefix + path


def plain(err: Mapping[str, Any]) -> str:
    """pydantic's message in the relay's words: a pattern said as a rule, never as a regex."""
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "string_pattern_mismatch":
        field = next((p for p in reversed(err["loc"]) if isinstance(p, str)), "")
        if field.endswith("_env"):
            return _ENV_RULE
        return PATTERN_WORDS.get(field, "does not have the expected form (see docs/configuration.md)")
    return msg.replace("Input should be ", "must be ").replace("String should have", "must have")


def format_validation_error(path: Path, raw: Mapping[str, Any], exc: ValidationError) -> str:
    lines = [f"{path}: invalid configuration"]
    for err in exc.errors():
        loc = err["loc"]
        where = key(loc, raw)
        value: Any = raw
        for part in loc:
            try:
                value = value[part]
            except (KeyError, IndexError, TypeError):
                value = None
                break
        if err["type"] == "missing":
            lines.append(f"  {where}: is required")
        elif err["type"] == "extra_forbidden":
            lines.append(f"  {where}: unknown key")
        elif where and value is not None and not isinstance(value, (dict, list)):
            lines.append(f"  {where} = {value!r}: {plain(err)}")
        elif where:
            lines.append(f"  {where}: {plain(err)}")
        else:  # the file's cross-checks (config/settings.py): each problem names its own subject
            lines += [f"  {problem}" for problem in plain(err).splitlines()]
    return "\n".join(lines)

"""An endpoint's content filter, ``match``: which notifications it takes, by the fields of the typed
event document (docs/events.md), whatever the endpoint's ``format``.

    match = { "order.items[].code" = ["PRO", "ENT"], "order.total" = { min = "500" } }

A key is a path of ``relay/schema/event.json`` (``[]``: any element of a list); a value is a list of
accepted values, compared as strings, or ``{min, max}`` (inclusive) for a decimal field, compared as
decimals. Every key must match. The paths are read from the schema file itself, so a field the
document gains is a valid path at once and a path it does not have is an error at start-up.

The schema is read as a file: ``config`` imports nothing of ``relay`` (the import contracts), and
the schema is data both packages share.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "relay" / "schema" / "event.json"
_DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")  # the schema's own decimal pattern ($defs.decimal)


@dataclass(frozen=True)
class Leaf:
    """What the schema says of one path's values."""

    decimal: bool = False
    pattern: str | None = None
    enum: tuple[str, ...] | None = None


@cache
def paths() -> dict[str, Leaf]:
    """Every path of the event document that holds a value (not ``raw``: it is the posted form)."""
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    found: dict[str, Leaf] = {}
    _walk(schema, schema.get("$defs", {}), "", found, 0)
    return found


def _walk(node: Mapping[str, Any], defs: Mapping[str, Any], at: str, found: dict[str, Leaf], depth: int) -> None:
    if depth > 12:  # the schema has no recursion; a bound all the same
        return
    decimal = False
    if "$ref" in node:
        name = str(node["$ref"]).rsplit("/", 1)[-1]
        decimal = name == "decimal"
        node = defs[name]
    kinds = node.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "properties" in node:
        for name, sub in node["properties"].items():
            if not at and name == "raw":
                continue
            _walk(sub, defs, f"{at}.{name}" if at else name, found, depth + 1)
    elif "array" in kinds and isinstance(node.get("items"), dict):
        _walk(node["items"], defs, at + "[]", found, depth + 1)
    else:
        enum = node.get("enum")
        if "const" in node:
            enum = [node["const"]]
        found[at] = Leaf(
            decimal=decimal,
            pattern=node.get("pattern"),
            enum=tuple(_text(v) for v in enum if v is not None) if enum else None,
        )


def _text(value: Any) -> str:
    """A document value as a filter compares it: booleans as JSON writes them, numbers as digits."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class Range:
    low: Decimal | None
    high: Decimal | None


Rule = frozenset[str] | Range


def compile_match(raw: Mapping[str, Any] | None) -> dict[str, Rule] | None:
    """The checked filter of one endpoint; ValueError naming the key and the rule it breaks."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or not raw:
        raise ValueError('expected a table of event document paths, e.g. { "order.total" = { min = "500" } }')
    known = paths()
    rules: dict[str, Rule] = {}
    for path, value in raw.items():
        leaf = known.get(path)
        if leaf is None:
            raise ValueError(f"{path!r} is not a path of the event document; {_near(path, known)}")
        rules[path] = _range(path, value, leaf) if isinstance(value, Mapping) else _values(path, value, leaf)
    return rules


def _near(path: str, known: Mapping[str, Leaf]) -> str:
    close = difflib.get_close_matches(path, list(known), n=6, cutoff=0.6)
    # and the paths under the same parent (order.items[].x: the item fields), which a typo often misses
    parent = path.rsplit(".", 1)[0] if "." in path else ""
    siblings = [p for p in known if parent and p.startswith(parent + ".") and p not in close]
    near = (close + siblings)[:12] or [p for p in known if "." not in p]
    return "valid paths near it: " + ", ".join(near) + " (all of them: docs/events.md)"


def _values(path: str, value: Any, leaf: Leaf) -> frozenset[str]:
    if not isinstance(value, list) or not value:
        raise ValueError(f'{path!r}: expected a list of accepted values, e.g. ["A", "B"], or {{ min, max }}')
    accepted: set[str] = set()
    for v in value:
        if isinstance(v, float) or not isinstance(v, str | int):
            raise ValueError(f"{path!r}: {v!r}: expected a string (or a whole number); write decimals in quotes")
        text = _text(v)
        if leaf.enum is not None and text not in leaf.enum:
            raise ValueError(f"{path!r}: {text!r} can never match; the document has one of {', '.join(leaf.enum)}")
        if leaf.pattern is not None and not re.search(leaf.pattern, text):
            raise ValueError(
                f"{path!r}: {text!r} can never match: the document's values look like "
                f"{_example(path)} (pattern {leaf.pattern})"
            )
        accepted.add(text)
    return frozenset(accepted)


def _example(path: str) -> str:
    return "DE, FR (upper-case ISO 3166-1 alpha-2)" if path.endswith("country") else "the schema's pattern"


def _range(path: str, value: Mapping[str, Any], leaf: Leaf) -> Range:
    if not leaf.decimal:
        raise ValueError(
            f"{path!r}: min and max need a decimal field (e.g. order.total); this one is compared as "
            "text: give a list of accepted values"
        )
    extra = set(value) - {"min", "max"}
    if extra or not value:
        raise ValueError(
            f'{path!r}: expected {{ min = "...", max = "..." }} (either or both), '
            f"not {', '.join(sorted(extra)) or 'an empty table'}"
        )
    low, high = (_decimal(path, bound, value.get(bound)) for bound in ("min", "max"))
    if low is not None and high is not None and low > high:
        raise ValueError(f"{path!r}: min {low} is above max {high}")
    return Range(low, high)


def _decimal(path: str, bound: str, value: Any) -> Decimal | None:
    if value is None:
        return None
    # a TOML float has already been rounded to binary: amounts are given as strings (or whole numbers)
    if isinstance(value, bool) or not isinstance(value, str | int) or not _DECIMAL.match(str(value)):
        raise ValueError(f'{path!r}: {bound} = {value!r}: expected a decimal in quotes, e.g. {bound} = "500.00"')
    return Decimal(str(value))


def raw(rules: Mapping[str, Rule]) -> dict[str, Any]:
    """``rules`` as written in the file again (compile_match reads it back): for a removed endpoint's
    routing rule, kept as JSON (relay/store/endpoints.py)."""
    out: dict[str, Any] = {}
    for path, rule in rules.items():
        if isinstance(rule, Range):
            out[path] = {bound: str(v) for bound, v in (("min", rule.low), ("max", rule.high)) if v is not None}
        else:
            out[path] = sorted(rule)
    return out


def _values_at(document: Any, parts: list[str]) -> Iterator[Any]:
    """The values at a path (``[]``: each element); nothing where the document has null or no such field."""
    if not parts:
        yield document
        return
    part, rest = parts[0], parts[1:]
    many = part.endswith("[]")
    if not isinstance(document, Mapping):
        return
    value = document.get(part.removesuffix("[]"))
    if value is None:
        return
    if many:
        if isinstance(value, list):
            for element in value:
                yield from _values_at(element, rest)
        return
    yield from _values_at(value, rest)


def rejects(rules: Mapping[str, Rule], document: Mapping[str, Any]) -> str | None:
    """Why ``document`` does not match (the first key that fails, in words), or None when it does."""
    for path, rule in rules.items():
        got = [v for v in _values_at(document, path.split(".")) if v is not None]
        if isinstance(rule, Range):
            if not any(_in_range(v, rule) for v in got):
                return f"match {path}: {_shown(got)} is not {_bounds(rule)}"
        elif not any(_text(v) in rule for v in got):
            return f"match {path}: {_shown(got)} is not one of {', '.join(sorted(rule))}"
    return None


def _in_range(value: Any, rule: Range) -> bool:
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return False
    if not amount.is_finite():
        return False
    return (rule.low is None or amount >= rule.low) and (rule.high is None or amount <= rule.high)


def _bounds(rule: Range) -> str:
    if rule.low is not None and rule.high is not None:
        return f"between {rule.low} and {rule.high}"
    return f"at least {rule.low}" if rule.low is not None else f"at most {rule.high}"


def _shown(got: list[Any]) -> str:
    if not got:
        return "(none)"
    shown = ", ".join(_text(v) for v in got[:5])
    return shown + (f" and {len(got) - 5} more" if len(got) > 5 else "")

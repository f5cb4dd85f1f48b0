"""What a new configuration changes, as the dotted keys an operator wrote: ``alerts.threshold_percent``,
``endpoints.billing.url``, ``endpoints.crm`` (added or removed). Said by a reload's answer and its audit
entry, so the log of who reloaded also says what they changed."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

NAMED_LISTS = ("sources", "endpoints")  # lists of tables, keyed by their entries' names


def changed_keys(old: BaseModel, new: BaseModel) -> list[str]:
    """The keys whose values differ; an added or removed source or endpoint is one key, ``+``/``-`` marked."""
    return sorted(_diff(old.model_dump(), new.model_dump(), ""))


def _diff(old: Any, new: Any, where: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            path = f"{where}.{key}" if where else str(key)
            if key in NAMED_LISTS and not where:
                out += _named(old.get(key) or [], new.get(key) or [], path)
            elif old.get(key) != new.get(key):
                nested = _diff(old.get(key), new.get(key), path)
                out += nested
        return out
    return [where] if old != new else []


def _named(old: list[dict[str, Any]], new: list[dict[str, Any]], where: str) -> list[str]:
    before = {str(e.get("name")): e for e in old}
    after = {str(e.get("name")): e for e in new}
    out = [f"+{where}.{name}" for name in after if name not in before]
    out += [f"-{where}.{name}" for name in before if name not in after]
    for name in before.keys() & after.keys():
        out += _diff(before[name], after[name], f"{where}.{name}")
    return out

"""Typed events: one JSON document for IPN, LCN and INS (``format = "event"``).

Pure functions, no I/O: the ingress stores the type (relay/store/ingest.py), the fan-out routes on
it (``event_types``), the worker builds the document (workers/forward.py) and the admin API serves
the schema. Each channel's type table and fields are in its own module (``ipn``, ``lcn``, ``ins``),
the values they share in ``values``. The tables are explained, with the source of every row, in
docs/events.md; the document is defined by ``relay/schema/event.json``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

from config.event_types import EVENT_TYPES, UNMAPPED
from relay.events import ins, ipn, lcn
from relay.events.values import Fields, first

SCHEMA_VERSION = 1

__all__ = [
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "UNMAPPED",
    "build",
    "content_key",
    "event_type",
    "fields_from_raw",
    "schema",
]

# what 2Checkout changes when it regenerates a notification it already sent ("reissue the IPN ...
# 2Checkout re-generates and re-sends the IPN"): the send time and the signatures over it. Nothing
# else, so any other difference is a difference of business content.
REGENERATED: Mapping[str, frozenset[str]] = {
    "ipn": frozenset({"IPN_DATE", "HASH", "SIGNATURE_SHA2_256", "SIGNATURE_SHA3_256"}),
    "lcn": frozenset({"HASH", "SIGNATURE_SHA2_256", "SIGNATURE_SHA3_256"}),
    "ins": frozenset({"md5_hash", "hash"}),
}


def event_type(channel: str, fields: Fields) -> tuple[str, str, str]:
    """``(type, source field, source value)``: the event type and the 2Checkout value it comes from.

    Never raises: anything the tables do not know is ``2checkout.unmapped``.
    """
    if channel == "ipn":
        return ipn.event_type(fields)
    if channel == "lcn":
        return lcn.event_type(fields)
    return ins.event_type(fields)


def content_key(source: str, channel: str, fields: Fields) -> str:
    """A hex digest of the business content: equal for a notification 2Checkout regenerated (new send
    time and signatures), different when any other field differs.

    Fields are taken by name (sorted) with their values in the order sent, so a regrouped body of the
    same content gives the same key, and a value moved between positions of an array does not.
    """
    skip = REGENERATED.get(channel, frozenset())
    content = [[key, values] for key, values in sorted(fields.items()) if key not in skip]
    canonical = json.dumps([source, channel, content], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _received(received_ms: int) -> str:
    at = datetime.fromtimestamp(received_ms / 1000, UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{received_ms % 1000:03d}Z"


def is_test(channel: str, fields: Fields) -> bool:
    """The same rule as ``protocol.facts``: TEST_ORDER (IPN), TEST (LCN), demo (INS)."""
    if channel == "ipn":
        return first(fields, "TEST_ORDER") == "1"
    if channel == "lcn":
        return first(fields, "TEST") == "1"
    return first(fields, "demo").upper() in ("Y", "1")


def _ipn_licence(order: Mapping[str, Any]) -> dict[str, Any] | None:
    """An IPN's top-level ``license``: the first licensed item's, with what the IPN says of it that an
    LCN says too: its product code (``IPN_PCODE``, an LCN's ``LICENSE_PRODUCT_CODE``) and the order's
    customer. Status, dispatch reason, who changed it and the renewal settings are LCN-only."""
    item = next((item for item in order["items"] if item["license"]), None)
    if item is None:
        return None
    licence = item["license"]
    return {
        "code": licence["code"],
        "status": None,
        "type": licence["type"],
        "expires_at": licence["expires_at"],
        "product_code": item["code"],
        "dispatch_reason": None,
        "changed_by": None,
        "auto_renewal": None,
        "next_renewal_date": None,
        "customer": dict(order["customer"]),
    }


def build(
    *, nid: str, source: str, channel: str, received_ms: int, fields: Fields, resend_of: str = ""
) -> dict[str, Any]:
    """The event document of one notification (``relay/schema/event.json``, version 1).

    ``id`` is the original notification's id, so a resend carries the same id as what it resends.
    ``raw`` is every posted field as ``[name, value]`` pairs in the order the ingress parsed them,
    so ``fields_from_raw(doc["raw"])`` gives back exactly the parsed form.
    """
    etype, field, value = event_type(channel, fields)
    licence: dict[str, Any] | None = None
    order: dict[str, Any] | None = None
    if channel == "ipn":
        order = ipn.order(fields)
        licence = _ipn_licence(order)
        occurred = ipn.occurred_at(fields)
    elif channel == "lcn":
        licence = lcn.license(fields)
        occurred = lcn.occurred_at(fields)
    else:
        order = ins.order(fields)
        occurred = ins.occurred_at(fields)
    return {
        "version": SCHEMA_VERSION,
        "id": resend_of or nid,
        "content_key": content_key(source, channel, fields),
        "type": etype,
        "type_from": {"field": field, "value": value},
        "occurred_at": occurred,
        "received_at": _received(received_ms),
        "source": source,
        "channel": channel,
        "test": is_test(channel, fields),
        "resend_of": resend_of or None,
        "notification_id": nid,
        "order": order,
        "license": licence,
        "raw": [[key, v] for key, values in fields.items() for v in values],
    }


def fields_from_raw(raw: list[list[str]]) -> Fields:
    """Turn an event's ``raw`` back into the parsed form (repeated names grouped, as the ingress does)."""
    fields: Fields = {}
    for key, value in raw:
        fields.setdefault(key, []).append(value)
    return fields


def encode(document: Mapping[str, Any]) -> bytes:
    """The bytes sent to an endpoint: compact UTF-8 JSON (multibyte names unescaped)."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


@cache
def schema_text() -> str:
    return resources.files("relay").joinpath("schema/event.json").read_text(encoding="utf-8")


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(schema_text())
    return loaded

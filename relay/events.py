"""Typed events: one JSON document for IPN, LCN and INS (``format = "event"``).

Pure functions, no I/O: the ingress stores the type (relay/store/ingest.py), the fan-out routes on
it (``event_types``), the worker builds the document (workers/forward.py) and the admin API serves
the schema. The mapping tables are explained, with the source of every value, in docs/events.md;
the document is defined by ``relay/schema/event.json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache, partial
from importlib import resources
from typing import Any

from config.event_types import EVENT_TYPES, UNMAPPED

SCHEMA_VERSION = 1
# the parsed form, as relay.protocol.Fields (a sibling in the core layer, so not imported)
Fields = dict[str, list[str]]

__all__ = ["EVENT_TYPES", "SCHEMA_VERSION", "UNMAPPED", "build", "event_type", "fields_from_raw", "schema"]

# IPN MESSAGE_TYPE: what this message announces. One order sends several IPNs (PENDING, AUTH,
# COMPLETE...) that all carry its *current* ORDERSTATUS, so the message type decides first.
IPN_MESSAGE_TYPES: Mapping[str, str] = {
    "PENDING": "order.created",
    "AUTH": "order.authorized",
    "COMPLETE": "order.completed",
    "REFUND": "order.refunded",
    "REVERSED": "order.reversed",
    "CHARGEBACK": "order.chargeback",
    "CANCELED": "order.canceled",
    "FRAUD": "fraud.status_changed",
}
# IPN ORDERSTATUS, when MESSAGE_TYPE is absent or not one of the above
IPN_ORDER_STATUSES: Mapping[str, str] = {
    "PENDING": "order.created",
    "PURCHASE_PENDING": "order.created",
    "PENDING_APPROVAL": "order.created",
    "PAYMENT_AUTHORIZED": "order.authorized",
    "PAYMENT_RECEIVED": "order.completed",
    "COMPLETE": "order.completed",
    "REFUND": "order.refunded",
    "REVERSED": "order.reversed",
    "CANCELED": "order.canceled",
    "SUSPECT": "fraud.status_changed",
}
# LCN: an expired licence says so in STATUS whatever triggered the message; otherwise DISPATCH_REASON
LCN_EXPIRED_STATUSES = frozenset({"EXPIRED"})
LCN_DISPATCH_REASONS: Mapping[str, str] = {
    "LICENCE_CHANGE": "license.updated",
    "LICENCE_GP_CHANGE": "license.updated",
    "LICENCE_PENDING_ACTIVATION": "license.updated",
}
# INS 1.1 message_type; INVOICE_STATUS_CHANGED is refined by invoice_status below
INS_MESSAGE_TYPES: Mapping[str, str] = {
    "ORDER_CREATED": "order.created",
    "FRAUD_STATUS_CHANGED": "fraud.status_changed",
    "SHIP_STATUS_CHANGED": "order.shipping_updated",
    "REFUND_ISSUED": "order.refunded",
    "RECURRING_INSTALLMENT_SUCCESS": "subscription.renewed",
    "RECURRING_INSTALLMENT_FAILED": "subscription.renewal_failed",
    "RECURRING_STOPPED": "subscription.stopped",
    "RECURRING_COMPLETE": "subscription.completed",
    "RECURRING_RESTARTED": "subscription.restarted",
}
INS_INVOICE_STATUSES: Mapping[str, str] = {
    "pending": "order.created",
    "approved": "order.authorized",
    "deposited": "order.completed",
    "declined": "order.canceled",
}

_DECIMAL = re.compile(r"-?\d+(\.\d+)?")
_YMDHIS = re.compile(r"(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})")
_DATETIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?: ([A-Z]{2,5}))?")
# INS times are "sent in U.S. Eastern Time" with the zone's abbreviation (docs/events.md)
_ZONES = {"EST": "-05:00", "EDT": "-04:00", "UTC": "Z", "GMT": "Z"}
_INDEXED = re.compile(r"(.+)\[(\d+)\]")
_INS_ITEM = re.compile(r"item_[a-z_]+?_(\d+)")


def _first(fields: Fields, name: str) -> str:
    values = fields.get(name)
    return values[0] if values else ""


def _opt(value: str) -> str | None:
    return value if value else None


def event_type(channel: str, fields: Fields) -> tuple[str, str, str]:
    """``(type, source field, source value)``: the event type and the 2Checkout value it comes from.

    Never raises: anything the tables do not know is ``2checkout.unmapped``.
    """
    if channel == "ipn":
        mtype, status = _first(fields, "MESSAGE_TYPE"), _first(fields, "ORDERSTATUS")
        if mtype in IPN_MESSAGE_TYPES:
            return IPN_MESSAGE_TYPES[mtype], "MESSAGE_TYPE", mtype
        if status in IPN_ORDER_STATUSES:
            return IPN_ORDER_STATUSES[status], "ORDERSTATUS", status
        return UNMAPPED, "MESSAGE_TYPE" if mtype else "ORDERSTATUS", mtype or status
    if channel == "lcn":
        status, reason = _first(fields, "STATUS"), _first(fields, "DISPATCH_REASON")
        if status in LCN_EXPIRED_STATUSES:
            return "license.expired", "STATUS", status
        if reason in LCN_DISPATCH_REASONS:
            return LCN_DISPATCH_REASONS[reason], "DISPATCH_REASON", reason
        return UNMAPPED, "DISPATCH_REASON", reason
    mtype = _first(fields, "message_type")
    if mtype == "INVOICE_STATUS_CHANGED":
        status = _first(fields, "invoice_status")
        return INS_INVOICE_STATUSES.get(status, UNMAPPED), "invoice_status", status
    return INS_MESSAGE_TYPES.get(mtype, UNMAPPED), "message_type", mtype


def _arrays(fields: Fields, names: tuple[str, ...]) -> dict[str, list[str]]:
    """IPN arrays, sent as repeated ``NAME[]`` keys or as ``NAME[0]``, ``NAME[1]``... (one pass over the fields)."""
    indexed: dict[str, list[tuple[int, str]]] = {}
    for key, values in fields.items():
        if key.endswith("]") and not key.endswith("[]") and values and (m := _INDEXED.fullmatch(key)):
            indexed.setdefault(m.group(1), []).append((int(m.group(2)), values[0]))
    out: dict[str, list[str]] = {}
    for name in names:
        if f"{name}[]" in fields:
            out[name] = fields[f"{name}[]"]
        elif name in indexed:
            out[name] = [v for _, v in sorted(indexed[name])]
        else:
            out[name] = fields.get(name, [])
    return out


def _amount(value: str) -> str | None:
    """An amount as a decimal string exactly as sent, or null when it is not a decimal number."""
    value = value.strip()
    return value if _DECIMAL.fullmatch(value) else None


def _at(values: list[str], i: int) -> str:
    return values[i] if i < len(values) else ""


def _timestamp(value: str) -> str | None:
    """ISO 8601 of a 2Checkout time; the offset only when the source names its zone."""
    value = value.strip()
    m = _YMDHIS.fullmatch(value)
    zone = ""
    if m is None:
        m = _DATETIME.fullmatch(value)
        if m is None:
            return None
        if m.group(7):
            if m.group(7) not in _ZONES:
                return None
            zone = _ZONES[m.group(7)]
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    try:
        datetime(y, mo, d, h, mi, s)  # only checks that the date exists
    except ValueError:
        return None
    return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{zone}"


def _name(*parts: str) -> str | None:
    joined = " ".join(p.strip() for p in parts if p.strip())
    return joined or None


_IPN_COLUMNS = ("IPN_PID", "IPN_PNAME", "IPN_PCODE", "IPN_EXTERNAL_REFERENCE", "IPN_SKU", "IPN_QTY", "IPN_PRICE",
                "IPN_VAT", "IPN_DISCOUNT", "IPN_TOTAL", "IPN_LICENSE_REF", "IPN_LICENSE_TYPE", "IPN_LICENSE_EXP")


def _ipn_order(fields: Fields) -> dict[str, Any]:
    f = partial(_first, fields)
    columns = _arrays(fields, _IPN_COLUMNS)
    count = max(len(columns["IPN_PID"]), len(columns["IPN_PNAME"]))
    items = []
    for i in range(count):
        c = {name: _at(values, i) for name, values in columns.items()}
        licence = None
        if c["IPN_LICENSE_REF"]:
            licence = {"code": c["IPN_LICENSE_REF"], "type": _opt(c["IPN_LICENSE_TYPE"]),
                       "expires_at": _timestamp(c["IPN_LICENSE_EXP"])}
        items.append({
            "product_id": _opt(c["IPN_PID"]), "name": _opt(c["IPN_PNAME"]), "code": _opt(c["IPN_PCODE"]),
            "external_reference": _opt(c["IPN_EXTERNAL_REFERENCE"]), "sku": _opt(c["IPN_SKU"]),
            "quantity": _amount(c["IPN_QTY"]), "price": _amount(c["IPN_PRICE"]), "vat": _amount(c["IPN_VAT"]),
            "discount": _amount(c["IPN_DISCOUNT"]), "total": _amount(c["IPN_TOTAL"]), "type": None,
            "license": licence,
        })
    return {
        "reference": _opt(f("REFNO")), "external_reference": _opt(f("REFNOEXT")), "invoice_id": None,
        "status": _opt(f("ORDERSTATUS")), "currency": _opt(f("CURRENCY")), "total": _amount(f("IPN_TOTALGENERAL")),
        "refund_type": _opt(f("REFUND_TYPE")),
        "customer": {"name": _name(f("FIRSTNAME"), f("LASTNAME")), "email": _opt(f("CUSTOMEREMAIL")),
                     "country": _opt(f("COUNTRY_CODE") or f("COUNTRY"))},
        "items": items,
    }


def _ins_order(fields: Fields) -> dict[str, Any]:
    f = partial(_first, fields)
    # items are numbered from 1 (item_name_1, item_id_1...): the numbers present, in order, rather
    # than item_count, so an item is never dropped or invented when the two disagree
    numbers = sorted({int(m.group(1)) for key in fields if (m := _INS_ITEM.fullmatch(key))})
    items = []
    for n in numbers:
        items.append({
            "product_id": _opt(f(f"item_id_{n}")), "name": _opt(f(f"item_name_{n}")), "code": None,
            "external_reference": _opt(f(f"item_vendor_product_id_{n}")), "sku": None, "quantity": None,
            "price": _amount(f(f"item_cust_amount_{n}") or f(f"item_list_amount_{n}")), "vat": None,
            "discount": None, "total": None, "type": _opt(f(f"item_type_{n}")), "license": None,
        })
    return {
        "reference": _opt(f("sale_id")), "external_reference": _opt(f("vendor_order_id")),
        "invoice_id": _opt(f("invoice_id")), "status": _opt(f("invoice_status")),
        "currency": _opt(f("cust_currency") or f("list_currency")),
        "total": _amount(f("invoice_cust_amount") or f("invoice_list_amount")), "refund_type": None,
        "customer": {"name": _opt(f("customer_name")) or _name(f("customer_first_name"), f("customer_last_name")),
                     "email": _opt(f("customer_email")), "country": _opt(f("bill_country") or f("customer_country"))},
        "items": items,
    }


def _lcn_license(fields: Fields) -> dict[str, Any]:
    f = partial(_first, fields)
    return {
        "code": f("LICENSE_CODE"), "status": _opt(f("STATUS")), "type": _opt(f("LICENSE_TYPE")),
        "expires_at": _timestamp(f("EXPIRATION_DATE")), "product_code": _opt(f("LICENSE_PRODUCT_CODE")),
        "dispatch_reason": _opt(f("DISPATCH_REASON")), "changed_by": _opt(f("CHANGED_BY")),
        "customer": {"name": _name(f("FIRST_NAME"), f("LAST_NAME")), "email": _opt(f("EMAIL")),
                     "country": _opt(f("COUNTRY")), "reference": _opt(f("AVANGATE_CUSTOMER_REFERENCE")),
                     "external_reference": _opt(f("EXTERNAL_CUSTOMER_REFERENCE"))},
    }


def _occurred(channel: str, fields: Fields) -> str | None:
    name = {"ipn": "IPN_DATE", "lcn": "DATE_UPDATED"}.get(channel, "timestamp")
    return _timestamp(_first(fields, name))


def _received(received_ms: int) -> str:
    at = datetime.fromtimestamp(received_ms / 1000, UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{received_ms % 1000:03d}Z"


def is_test(channel: str, fields: Fields) -> bool:
    """The same rule as ``protocol.facts``: TEST_ORDER (IPN), TEST (LCN), demo (INS)."""
    if channel == "ipn":
        return _first(fields, "TEST_ORDER") == "1"
    if channel == "lcn":
        return _first(fields, "TEST") == "1"
    return _first(fields, "demo").upper() in ("Y", "1")


def build(*, nid: str, source: str, channel: str, received_ms: int, fields: Fields,
          resend_of: str = "") -> dict[str, Any]:
    """The event document of one notification (``relay/schema/event.json``, version 1).

    ``id`` is the original notification's id, so a resend carries the same id as what it resends.
    ``raw`` is every posted field as ``[name, value]`` pairs in the order the ingress parsed them,
    so ``fields_from_raw(doc["raw"])`` gives back exactly the parsed form.
    """
    etype, field, value = event_type(channel, fields)
    licence: dict[str, Any] | None = None
    order: dict[str, Any] | None = None
    if channel == "ipn":
        order = _ipn_order(fields)
        first = next((item["license"] for item in order["items"] if item["license"]), None)
        if first is not None:
            licence = {"code": first["code"], "status": None, "type": first["type"],
                       "expires_at": first["expires_at"], "product_code": None, "dispatch_reason": None,
                       "changed_by": None, "customer": None}
    elif channel == "lcn":
        licence = _lcn_license(fields)
    else:
        order = _ins_order(fields)
    return {
        "version": SCHEMA_VERSION,
        "id": resend_of or nid,
        "type": etype,
        "type_from": {"field": field, "value": value},
        "occurred_at": _occurred(channel, fields),
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

"""IPN (``/ipn``): its event type and its ``order``. The source of every row is in docs/events.md."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import partial
from typing import Any

from config.event_types import UNMAPPED
from relay.events.values import Fields, amount, country, expiry, first, full_name, offset, opt, timestamp

# MESSAGE_TYPE: what this message announces. One order sends several IPNs (PENDING, AUTH,
# COMPLETE...) that all carry its *current* ORDERSTATUS, so the message type decides first.
MESSAGE_TYPES: Mapping[str, str] = {
    "PENDING": "order.created",
    "AUTH": "order.authorized",
    "COMPLETE": "order.completed",
    "REFUND": "order.refunded",
    "REVERSED": "order.reversed",
    "CHARGEBACK": "order.chargeback",
    "CANCELED": "order.canceled",
    "FRAUD": "fraud.status_changed",
}
# MESSAGE_TYPE values that say nothing ORDERSTATUS does not: APPROVED (card flow) and PROCESSING
# (SEPA direct debit) come with ORDERSTATUS PAYMENT_RECEIVED (IPN parameters page)
DEFER_TO_STATUS = frozenset({"APPROVED", "PROCESSING"})
# ORDERSTATUS, when MESSAGE_TYPE is absent, defers to it, or is not known
ORDER_STATUSES: Mapping[str, str] = {
    "PENDING": "order.created",
    "PURCHASE_PENDING": "order.created",
    "PENDING_APPROVAL": "order.created",
    "PAYMENT_AUTHORIZED": "order.authorized",
    # offline payment received "only before fulfillment/delivery": paid, not yet complete
    "PAYMENT_RECEIVED": "order.authorized",
    "PENDING_ORDER_APPROVAL": "order.authorized",
    "AUTHRECEIVED": "order.authorized",
    "COMPLETE": "order.completed",
    "REFUND": "order.refunded",
    "REVERSED": "order.reversed",
    "CANCELED": "order.canceled",
    "INVALID": "order.canceled",
    "SUSPECT": "fraud.status_changed",
}
# a chargeback arrives on an IPN of the order's current state (COMPLETE in 2Checkout's plugins);
# only a message that is clearly about something else keeps its own type
CHARGEBACK_OVERRIDDEN_BY = frozenset({"PENDING", "AUTH", "REFUND", "REVERSED", "CANCELED"})
FRAUD_STATUSES: Mapping[str, str] = {
    "APPROVED": "approved",
    "DENIED": "denied",
    "UNDER REVIEW": "under_review",
    "PENDING": "pending",
}

_INDEXED = re.compile(r"(.+)\[(\d+)\]")


def _chargeback_resolution(fields: Fields) -> str:
    resolution = first(fields, "CHARGEBACK_RESOLUTION").strip()
    return "" if resolution.upper() == "NONE" else resolution


def event_type(fields: Fields) -> tuple[str, str, str]:
    mtype, status = first(fields, "MESSAGE_TYPE"), first(fields, "ORDERSTATUS")
    if first(fields, "FRAUD_STATUS").strip() == "DENIED":
        # the plugins check the fraud status before anything else: a denied order is not to be fulfilled
        return "fraud.status_changed", "FRAUD_STATUS", "DENIED"
    resolution = _chargeback_resolution(fields)
    if resolution and first(fields, "CHARGEBACK_REASON_CODE").strip() and mtype not in CHARGEBACK_OVERRIDDEN_BY:
        return "order.chargeback", "CHARGEBACK_RESOLUTION", resolution
    if mtype in MESSAGE_TYPES:
        return MESSAGE_TYPES[mtype], "MESSAGE_TYPE", mtype
    if status in ORDER_STATUSES:
        return ORDER_STATUSES[status], "ORDERSTATUS", status
    if mtype and mtype not in DEFER_TO_STATUS:
        return UNMAPPED, "MESSAGE_TYPE", mtype
    return UNMAPPED, "ORDERSTATUS", status


def _arrays(fields: Fields, names: tuple[str, ...]) -> dict[str, list[str]]:
    """Arrays, sent as repeated ``NAME[]`` keys or as ``NAME[0]``, ``NAME[1]``... (one pass over the fields)."""
    indexed: dict[str, list[tuple[int, str]]] = {}
    for key, values in fields.items():
        if key.endswith("]") and not key.endswith("[]") and values and (m := _INDEXED.fullmatch(key)):
            indexed.setdefault(m.group(1), []).append((int(m.group(2)), values[0]))
    out: dict[str, list[str]] = {}
    for column in names:
        if f"{column}[]" in fields:
            out[column] = fields[f"{column}[]"]
        elif column in indexed:
            out[column] = [v for _, v in sorted(indexed[column])]
        else:
            out[column] = fields.get(column, [])
    return out


def _at(values: list[str], i: int) -> str:
    return values[i] if i < len(values) else ""


_ITEM_COLUMNS = (
    "IPN_PID",
    "IPN_PNAME",
    "IPN_PCODE",
    "IPN_EXTERNAL_REFERENCE",
    "IPN_SKU",
    "IPN_QTY",
    "IPN_PRICE",
    "IPN_VAT",
    "IPN_DISCOUNT",
    "IPN_TOTAL",
)
_LICENCE_COLUMNS = ("IPN_LICENSE_PROD", "IPN_LICENSE_REF", "IPN_LICENSE_TYPE", "IPN_LICENSE_EXP")


def _licences(columns: dict[str, list[str]], pids: list[str], zone: str) -> list[dict[str, Any] | None]:
    """One licence (or None) per item. The IPN_LICENSE_* arrays hold only the products that produced a
    licence, keyed by IPN_LICENSE_PROD[] = IPN_PID[]; the k-th licence of a product goes to the k-th
    item with that id. Without IPN_LICENSE_PROD[] (older payloads) they can only be read by position."""
    refs = columns["IPN_LICENSE_REF"]
    found = []
    for i, ref in enumerate(refs):
        licence = None
        if ref:
            licence = {
                "code": ref,
                "type": opt(_at(columns["IPN_LICENSE_TYPE"], i)),
                "expires_at": expiry(_at(columns["IPN_LICENSE_EXP"], i), zone),
            }
        found.append(licence)
    products = columns["IPN_LICENSE_PROD"]
    if not products:
        return [_at_licence(found, i) for i in range(len(pids))]
    queues: dict[str, list[dict[str, Any] | None]] = {}
    for i, pid in enumerate(products):
        queues.setdefault(pid, []).append(_at_licence(found, i))
    return [queues[pid].pop(0) if queues.get(pid) else None for pid in pids]


def _at_licence(found: list[dict[str, Any] | None], i: int) -> dict[str, Any] | None:
    return found[i] if i < len(found) else None


def _items(fields: Fields) -> list[dict[str, Any]]:
    """One item per product, rebuilt from the parallel IPN_*[] arrays, each with its licence."""
    columns = _arrays(fields, _ITEM_COLUMNS + _LICENCE_COLUMNS)
    count = max(len(columns["IPN_PID"]), len(columns["IPN_PNAME"]))
    pids = [_at(columns["IPN_PID"], i) for i in range(count)]
    licences = _licences(columns, pids, offset(first(fields, "TIMEZONE_OFFSET")))
    items = []
    for i in range(count):
        c = {column: _at(columns[column], i) for column in _ITEM_COLUMNS}
        items.append(
            {
                "product_id": opt(c["IPN_PID"]),
                "name": opt(c["IPN_PNAME"]),
                "code": opt(c["IPN_PCODE"]),
                "external_reference": opt(c["IPN_EXTERNAL_REFERENCE"]),
                "sku": opt(c["IPN_SKU"]),
                "quantity": amount(c["IPN_QTY"]),
                "price": amount(c["IPN_PRICE"]),
                "vat": amount(c["IPN_VAT"]),
                "discount": amount(c["IPN_DISCOUNT"]),
                "total": amount(c["IPN_TOTAL"]),
                "type": None,
                "license": licences[i],
                # IPN sends no per-item recurrence: a renewal is an order (its licence has the new expiry)
                "recurring": None,
            }
        )
    return items


def _customer(fields: Fields) -> dict[str, Any]:
    f = partial(first, fields)
    return {
        "name": full_name(f("FIRSTNAME"), f("LASTNAME")),
        "email": opt(f("CUSTOMEREMAIL")),
        "country": country(f("COUNTRY_CODE")) or country(f("COUNTRY")),
        "company": opt(f("COMPANY")),
        # the same two references an LCN sends, so an order and its licences name one customer
        "reference": opt(f("AVANGATE_CUSTOMER_REFERENCE")),
        "external_reference": opt(f("EXTERNAL_CUSTOMER_REFERENCE")),
    }


def order(fields: Fields) -> dict[str, Any]:
    f = partial(first, fields)
    resolution = _chargeback_resolution(fields)
    return {
        "reference": opt(f("REFNO")),
        "external_reference": opt(f("REFNOEXT")),
        "invoice_id": None,
        "status": opt(f("ORDERSTATUS")),
        "currency": opt(f("CURRENCY")),
        "total": amount(f("IPN_TOTALGENERAL")),
        "refund_type": opt(f("REFUND_TYPE")),
        "customer": _customer(fields),
        "items": _items(fields),
        "fraud_status": FRAUD_STATUSES.get(f("FRAUD_STATUS").strip()),
        "chargeback": {"resolution": resolution, "reason_code": opt(f("CHARGEBACK_REASON_CODE").strip())}
        if resolution
        else None,
        # IPN sends no shipping status (a shipped order is a PAYMENT_AUTHORIZED IPN)
        "shipping": None,
    }


def occurred_at(fields: Fields) -> str | None:
    return timestamp(first(fields, "IPN_DATE"), offset(first(fields, "TIMEZONE_OFFSET")))

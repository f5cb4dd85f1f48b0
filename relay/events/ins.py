"""INS (``/ins``): its event type and its ``order``. The source of every row is in docs/events.md."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import partial
from typing import Any

from config.event_types import UNMAPPED
from relay.events.values import INS_ZONE, Fields, amount, country, expiry, first, full_name, opt, timestamp

# INS 1.1 message_type; INVOICE_STATUS_CHANGED is refined by invoice_status below
MESSAGE_TYPES: Mapping[str, str] = {
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
# "Most orders go from 'approved' to 'pending' to 'deposited'": pending comes after approval
INVOICE_STATUSES: Mapping[str, str] = {
    "approved": "order.authorized",
    "pending": "order.authorized",
    "deposited": "order.completed",
    "declined": "order.canceled",
}
FRAUD_STATUSES: Mapping[str, str] = {"pass": "approved", "fail": "denied", "wait": "under_review"}

_ITEM = re.compile(r"item_[a-z_]+?_(\d+)")
# what 2Checkout's INS test message sends for a value that does not apply (item_type_1, auth_exp,
# item_rec_*): no value, as an empty field is
NOT_APPLICABLE = "N/A"


def _text(value: str) -> str | None:
    return None if value.strip() == NOT_APPLICABLE else opt(value)


def event_type(fields: Fields) -> tuple[str, str, str]:
    mtype = first(fields, "message_type")
    if mtype == "INVOICE_STATUS_CHANGED":
        status = first(fields, "invoice_status")
        return INVOICE_STATUSES.get(status, UNMAPPED), "invoice_status", status
    return MESSAGE_TYPES.get(mtype, UNMAPPED), "message_type", mtype


def _side(fields: Fields, numbers: list[int]) -> str:
    """``cust`` or ``list``: amounts are read from one side only, so they are in the currency given.

    ``list_*`` amounts are in list_currency and ``cust_*`` ones in cust_currency (the legacy examples
    mix GBP list amounts with JPY customer amounts): the customer's side when its currency and an
    amount in it are there, else the list side.
    """

    def has(side: str) -> bool:
        names = (f"invoice_{side}_amount", *(f"item_{side}_amount_{n}" for n in numbers))
        return any(first(fields, name) for name in names)

    # with no amount on either side, the currency alone is still worth giving: the customer's first
    return "cust" if first(fields, "cust_currency") and (has("cust") or not has("list")) else "list"


def order(fields: Fields) -> dict[str, Any]:
    f = partial(first, fields)
    # items are numbered from 1 (item_name_1, item_id_1...): the numbers present, in order, rather
    # than item_count, so an item is never dropped or invented when the two disagree
    numbers = sorted({int(m.group(1)) for key in fields if (m := _ITEM.fullmatch(key))})
    side = _side(fields, numbers)
    items = []
    for n in numbers:
        items.append(
            {
                "product_id": _text(f(f"item_id_{n}")),
                "name": _text(f(f"item_name_{n}")),
                "code": None,
                "external_reference": _text(f(f"item_vendor_product_id_{n}")),
                "sku": None,
                "quantity": None,
                "price": amount(f(f"item_{side}_amount_{n}")),
                "vat": None,
                "discount": None,
                "total": None,
                "type": _text(f(f"item_type_{n}")),
                "license": None,
                "recurring": _recurring(fields, n),
            }
        )
    return {
        "reference": opt(f("sale_id")),
        "external_reference": opt(f("vendor_order_id")),
        "invoice_id": opt(f("invoice_id")),
        "status": opt(f("invoice_status")),
        "currency": opt(f(f"{side}_currency")),
        "total": amount(f(f"invoice_{side}_amount")),
        "refund_type": None,
        "customer": {
            "name": opt(f("customer_name")) or full_name(f("customer_first_name"), f("customer_last_name")),
            "email": opt(f("customer_email")),
            "country": country(f("bill_country")) or country(f("customer_country")),
            # INS names no company and no 2Checkout customer: the keys are there so every order has one shape
            "company": None,
            "reference": None,
            "external_reference": None,
        },
        "items": items,
        "fraud_status": FRAUD_STATUSES.get(f("fraud_status").strip().lower()),
        "chargeback": None,
        "shipping": _shipping(fields),
    }


def _recurring(fields: Fields, n: int) -> dict[str, Any] | None:
    """A recurring item's billing (INS 1.1 item_* fields): what a subscription.* event is about. An item
    is recurring when it has a recurrence (item_recurrence_#, "1 Week"); a one-off item sends it empty."""
    f = partial(first, fields)
    recurrence = _text(f(f"item_recurrence_{n}"))
    if recurrence is None:
        return None
    billed = f(f"item_rec_install_billed_{n}").strip()
    return {
        "status": _text(f(f"item_rec_status_{n}")),
        "recurrence": recurrence,
        "duration": _text(f(f"item_duration_{n}")),
        "next_billing_date": expiry(f(f"item_rec_date_next_{n}")),
        "installments_billed": int(billed) if billed.isascii() and billed.isdigit() else None,
    }


def _shipping(fields: Fields) -> dict[str, str | None] | None:
    """ship_status (not_shipped, shipped) and ship_tracking_number: what a SHIP_STATUS_CHANGED is about,
    sent on every invoice-level message; null when neither has a value (an intangible sale)."""
    status, tracking = _text(first(fields, "ship_status")), _text(first(fields, "ship_tracking_number"))
    if status is None and tracking is None:
        return None
    return {"status": status, "tracking_number": tracking}


def occurred_at(fields: Fields) -> str | None:
    # the zone is named in the value itself ("2021-01-01 12:00:00 EEST"); one that names none is U.S.
    # Eastern, as the INS 1.1 guide says every time is (values.INS_ZONE)
    return timestamp(first(fields, "timestamp"), local=INS_ZONE)

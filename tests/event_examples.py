"""The example documents of docs/events/*.json, built by relay/events from short signed notifications.

tests/test_events.py checks each file is exactly what this module renders from the current code;
after a change to the document, ``python -m tests.event_examples`` rewrites them. IPN and LCN are
signed (SIGNATURE_SHA3_256) with the key ``demo-secret``, INS with the secret word ``tango``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from relay import events, protocol
from relay.store.ingest import notification_id

DOCS = Path(__file__).resolve().parents[1] / "docs" / "events"
KEY = b"demo-secret"
RECEIVED_MS = 1_764_456_300_123  # 2025-11-29T22:45:00.123Z


def _ipn(status: str, mtype: str | None, fraud: str = "APPROVED", **extra: str) -> list[tuple[str, str]]:
    pairs = [
        ("REFNO", "230000001"),
        ("REFNOEXT", "cart-42"),
        ("ORDERSTATUS", status),
        ("FIRSTNAME", "Jürgen"),
        ("LASTNAME", "Müller"),
        ("CUSTOMEREMAIL", "jurgen@example.com"),
        ("COUNTRY_CODE", "de"),
        ("TIMEZONE_OFFSET", "GMT+02:00"),
        ("CURRENCY", "EUR"),
        ("IPN_PID[]", "40898000"),
        ("IPN_PNAME[]", "Müller Tool – 東京 Edition"),
        ("IPN_QTY[]", "1"),
        ("IPN_PRICE[]", "19.99"),
        ("IPN_LICENSE_PROD[]", "40898000"),
        ("IPN_LICENSE_REF[]", "AAAA1111"),
        ("IPN_LICENSE_EXP[]", "2026-11-29 23:44:59"),
        ("MESSAGE_ID", "250000000001"),
        *((("MESSAGE_TYPE", mtype),) if mtype else ()),
        ("IPN_TOTALGENERAL", "23.79"),
        *extra.items(),
        ("FRAUD_STATUS", fraud),
        ("TEST_ORDER", "1"),
        ("IPN_DATE", "20251129234459"),
    ]
    return _signed(pairs)


def _lcn(
    status: str, reason: str | None, expiration: str = "2026-11-29 23:44:59", **extra: str
) -> list[tuple[str, str]]:
    pairs = [
        ("FIRST_NAME", "Jürgen"),
        ("LAST_NAME", "Müller"),
        ("EMAIL", "jurgen@example.com"),
        ("COUNTRY", "Germany"),
        ("LICENSE_CODE", "3C343D0FAF"),
        ("EXPIRATION_DATE", expiration),
        ("DATE_UPDATED", "2025-11-29 23:44:59"),
        ("TIMEZONE_OFFSET", "GMT+02:00"),
        ("TEST", "1"),
        ("CHANGED_BY", "SYSTEM"),
        ("LICENSE_TYPE", "REGULAR"),
        *extra.items(),
        ("STATUS", status),
        ("LICENSE_PRODUCT_CODE", "PRO-1"),
        *((("DISPATCH_REASON", reason),) if reason else ()),
    ]
    return _signed(pairs)


def _signed(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    grouped: protocol.Fields = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return [*pairs, ("SIGNATURE_SHA3_256", protocol.hmac_hex("sha3-256", KEY, protocol.signature_source(grouped)))]


def _ins(mtype: str, *, timestamp: str = "2025-11-29 17:44:59 EST", **extra: str) -> list[tuple[str, str]]:
    sale, invoice = "9093727242901", "9093727243001"
    return [
        ("message_type", mtype),
        ("timestamp", timestamp),
        ("message_id", "101"),
        ("vendor_id", "1817037"),
        ("sale_id", sale),
        ("vendor_order_id", "ORD-42"),
        ("invoice_id", invoice),
        ("list_currency", "USD"),
        ("cust_currency", "USD"),
        *extra.items(),
        ("customer_name", "Jürgen Müller"),
        ("customer_email", "jurgen@example.com"),
        ("bill_country", "DEU"),
        ("item_count", "1"),
        ("item_name_1", "Müller Tool – 東京 Edition"),
        ("item_id_1", "PRO-1"),
        ("item_list_amount_1", "10.00"),
        ("item_cust_amount_1", "10.00"),
        ("item_type_1", "bill"),
        ("md5_hash", protocol.ins_hash(sale, "1817037", invoice, "tango")),
    ]


_INVOICE = {"invoice_list_amount": "10.00", "invoice_cust_amount": "10.00"}


def _recurring(status: str, next_date: str, billed: str) -> dict[str, str]:
    """A recurring item's INS 1.1 billing fields (item-level RECURRING_* messages)."""
    return {
        "recurring": "1",
        "item_duration_1": "Forever",
        "item_recurrence_1": "1 Month",
        "item_rec_list_amount_1": "10.00",
        "item_rec_status_1": status,
        "item_rec_date_next_1": next_date,
        "item_rec_install_billed_1": billed,
    }


# file name (docs/events/NAME.json) -> (channel, the posted fields); one file per type, and the cases
# issue 20 asked to see: a chargeback, a fraud denial, a past-due and a canceled licence, an INS in EEST
EXAMPLES: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "order.created": ("ipn", _ipn("PENDING", "PENDING")),
    "order.authorized": ("ipn", _ipn("PAYMENT_AUTHORIZED", "AUTH")),
    "order.authorized.ins-eest": (
        "ins",
        _ins(
            "INVOICE_STATUS_CHANGED",
            timestamp="2025-11-30 01:44:59 EEST",
            invoice_status="pending",
            fraud_status="pass",
            **_INVOICE,
        ),
    ),
    "order.completed": ("ipn", _ipn("COMPLETE", "COMPLETE")),
    "order.refunded": ("ipn", _ipn("REFUND", "REFUND", REFUND_TYPE="PARTIAL")),
    "order.reversed": ("ipn", _ipn("REVERSED", "REVERSED")),
    "order.chargeback": (
        "ipn",
        _ipn("COMPLETE", "COMPLETE", CHARGEBACK_RESOLUTION="OPEN", CHARGEBACK_REASON_CODE="MERCHANDISE_NOT_RECEIVED"),
    ),
    "order.canceled": ("ipn", _ipn("CANCELED", "CANCELED")),
    "order.shipping_updated": (
        "ins",
        _ins(
            "SHIP_STATUS_CHANGED",
            invoice_status="deposited",
            ship_status="shipped",
            ship_tracking_number="ZG7893748973",
            **_INVOICE,
        ),
    ),
    "subscription.renewed": ("ins", _ins("RECURRING_INSTALLMENT_SUCCESS", **_recurring("live", "2025-12-29", "2"))),
    "subscription.renewal_failed": (
        "ins",
        _ins("RECURRING_INSTALLMENT_FAILED", **_recurring("live", "2025-12-02", "1")),
    ),
    "subscription.stopped": ("ins", _ins("RECURRING_STOPPED", **_recurring("canceled", "", "2"))),
    "subscription.completed": ("ins", _ins("RECURRING_COMPLETE", **_recurring("completed", "", "12"))),
    "subscription.restarted": ("ins", _ins("RECURRING_RESTARTED", **_recurring("live", "2025-12-29", "2"))),
    "license.updated": ("lcn", _lcn("ACTIVE", "LICENCE_CHANGE")),
    "license.expired": ("lcn", _lcn("EXPIRED", "LICENCE_EXPIRATION")),
    "license.past_due": ("lcn", _lcn("PASTDUE", "LICENCE_PASTDUE")),
    "license.canceled": ("lcn", _lcn("CANCELED", None, expiration="2026-11-29", DISABLED="1", EXPIRED="0")),
    "fraud.status_changed": ("ipn", _ipn("PENDING", "PENDING", fraud="DENIED")),
    "fraud.status_changed.ins": (
        "ins",
        _ins("FRAUD_STATUS_CHANGED", invoice_status="approved", fraud_status="fail", **_INVOICE),
    ),
    "2checkout.unmapped": ("ins", _ins("CATALOGUE_PRODUCT_CREATED")),
}


def document(name: str) -> dict[str, Any]:
    channel, pairs = EXAMPLES[name]
    nid = notification_id("default", channel, urlencode(pairs).encode())
    fields = protocol.parse_form(urlencode(pairs).encode())
    built = events.build(nid=nid, source="default", channel=channel, received_ms=RECEIVED_MS, fields=fields)
    decoded: dict[str, Any] = json.loads(events.encode(built))
    return decoded


_PAIR = re.compile(r'\[\n\s+("(?:[^"\\]|\\.)*"),\n\s+("(?:[^"\\]|\\.)*")\n\s+\]')


def render(doc: dict[str, Any]) -> str:
    """Indented JSON with each ``raw`` pair on one line, as the files are written."""
    return _PAIR.sub(r"[\1, \2]", json.dumps(doc, indent=2, ensure_ascii=False)) + "\n"


def main() -> None:
    DOCS.mkdir(exist_ok=True)
    for old in DOCS.glob("*.json"):
        old.unlink()
    for name in EXAMPLES:
        (DOCS / f"{name}.json").write_text(render(document(name)), encoding="utf-8")


if __name__ == "__main__":
    main()

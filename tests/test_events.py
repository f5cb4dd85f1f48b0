"""Typed events (relay/events/): every vector maps to its expected type and validates against the
schema with the ``jsonschema`` library; generated notifications always give a valid document that
turns back into the original fields."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from relay import events, protocol
from relay.store.ingest import notification_id
from tests import event_examples, event_vectors
from tests.support import vectors

ROOT = Path(__file__).resolve().parents[1]

VALIDATOR = Draft202012Validator(events.schema())

# what each vector is, decided by reading it (docs/events.md has the tables): an independent expectation
EXPECTED = {
    "real-ipn-ruby-sdk-2021-md5": "order.completed",  # MESSAGE_TYPE COMPLETE
    "real-ipn-node-sdk-2021-md5": "order.created",  # MESSAGE_TYPE PENDING
    "real-ipn-2023-06-12-three-signatures": "order.completed",
    "real-ipn-2023-06-19-three-signatures": "order.completed",
    "real-ipn-2021-03-15-md5-only": "order.authorized",  # MESSAGE_TYPE AUTH while ORDERSTATUS is COMPLETE
    "real-ins-python-php-tango": "2checkout.unmapped",  # only the signed triple, no message_type
    "real-ins-ruby-tango": "2checkout.unmapped",
    "real-ins-node-tango": "2checkout.unmapped",
    "real-ins-omnipay-fraud-pass": "fraud.status_changed",
    "real-ins-omnipay-fraud-fail-negative": "fraud.status_changed",
    "synthetic-ipn-multibyte-utf8": "order.completed",
    "synthetic-ipn-three-products": "order.authorized",
    "synthetic-ipn-grouping-probe": "order.authorized",
    "synthetic-ipn-special-chars": "order.completed",  # no MESSAGE_TYPE: ORDERSTATUS COMPLETE decides
    "synthetic-lcn-multibyte": "license.updated",
    "synthetic-ins-order_created": "order.created",
    "synthetic-ins-fraud_status_changed": "fraud.status_changed",
    "synthetic-ins-ship_status_changed": "order.shipping_updated",
    "synthetic-ins-invoice_status_changed": "order.completed",  # invoice_status deposited
    "synthetic-ins-refund_issued": "order.refunded",
    "synthetic-ins-recurring_installment_success": "subscription.renewed",
    "synthetic-ins-recurring_installment_failed": "subscription.renewal_failed",
    "synthetic-ins-recurring_stopped": "subscription.stopped",
    "synthetic-ins-recurring_complete": "subscription.completed",
    "synthetic-ins-recurring_restarted": "subscription.restarted",
}


def _notifications() -> list[tuple[str, str, list[tuple[str, str]]]]:
    out = []
    for name in ("real_ipn.json", "real_ins.json", "synthetic.json"):
        for v in vectors(name)["vectors"]:
            if "fields" in v:
                channel = v["kind"].split("_")[0]  # ipn_grouping_probe is an IPN
                out.append((v["id"], channel, [(a, b) for a, b in v["fields"]]))
    return out


NOTIFICATIONS = _notifications()


def grouped(pairs: list[tuple[str, str]]) -> protocol.Fields:
    return protocol.parse_form(urlencode(pairs).encode())


def document(channel: str, pairs: list[tuple[str, str]], **kw: Any) -> dict[str, Any]:
    doc = events.build(
        nid="n1", source="default", channel=channel, received_ms=1_704_164_405_123, fields=grouped(pairs), **kw
    )
    # what an endpoint receives is the encoded bytes: validate those, not the Python object
    decoded: dict[str, Any] = json.loads(events.encode(doc))
    return decoded


def test_every_vector_with_fields_has_an_expectation() -> None:
    assert sorted(vid for vid, _, _ in NOTIFICATIONS) == sorted(EXPECTED)
    assert {channel for _, channel, _ in NOTIFICATIONS} == {"ipn", "lcn", "ins"}


@pytest.mark.parametrize(("vid", "channel", "pairs"), NOTIFICATIONS, ids=[n[0] for n in NOTIFICATIONS])
def test_vector_maps_to_its_type_and_validates(vid: str, channel: str, pairs: list[tuple[str, str]]) -> None:
    doc = document(channel, pairs)
    VALIDATOR.validate(doc)
    assert doc["type"] == EXPECTED[vid]
    assert doc["channel"] == channel and doc["id"] == "n1"
    assert events.fields_from_raw(doc["raw"]) == grouped(pairs)
    assert events.event_type(channel, grouped(pairs))[0] == doc["type"]


def test_schema_is_valid_and_lists_exactly_the_vocabulary() -> None:
    Draft202012Validator.check_schema(events.schema())
    assert events.schema()["properties"]["type"]["enum"] == list(events.EVENT_TYPES)
    assert events.UNMAPPED == "2checkout.unmapped" and events.UNMAPPED in events.EVENT_TYPES


def test_ipn_document_normalises_order_customer_and_licence() -> None:
    [pairs] = [p for vid, _, p in NOTIFICATIONS if vid == "synthetic-ipn-three-products"]
    doc = document("ipn", pairs)
    order = doc["order"]
    assert order["reference"] == "230000002" and order["external_reference"] == "cart-991"
    assert order["status"] == "PAYMENT_AUTHORIZED" and order["currency"] == "USD" and order["total"] == "85.91"
    assert order["customer"] == {
        "name": "Ana Pérez",
        "email": "ana@example.com",
        "country": None,
        "company": None,
        "reference": None,
        "external_reference": None,
    }
    assert [i["product_id"] for i in order["items"]] == ["40898000", "40898001", "40898002"]
    assert [i["name"] for i in order["items"]] == ["Pro License", "Support add-on", "Bundle – 3 seats"]
    assert [(i["quantity"], i["price"], i["vat"]) for i in order["items"]] == [
        ("1", "49.00", "9.31"),
        ("2", "10.00", "3.80"),
        ("3", "0", "0.00"),
    ]
    assert [i["license"] and i["license"]["code"] for i in order["items"]] == ["AAAA1111", None, "CCCC3333"]
    assert doc["license"]["code"] == "AAAA1111"
    assert doc["test"] is False and doc["occurred_at"] == "2024-01-02T03:00:12"
    assert doc["received_at"] == "2024-01-02T03:00:05.123Z"
    assert doc["type_from"] == {"field": "MESSAGE_TYPE", "value": "AUTH"}


def test_lcn_and_ins_documents() -> None:
    [lcn] = [p for vid, _, p in NOTIFICATIONS if vid == "synthetic-lcn-multibyte"]
    doc = document("lcn", lcn)
    assert doc["order"] is None and doc["test"] is True
    assert doc["license"]["code"] == "3C343D0FAF" and doc["license"]["expires_at"] == "2025-01-02T03:00:11"
    assert doc["license"]["customer"]["name"] == "Jürgen Müller"
    [ins] = [p for vid, _, p in NOTIFICATIONS if vid == "synthetic-ins-order_created"]
    doc = document("ins", ins)
    assert doc["occurred_at"] == "2024-01-02T03:04:05-05:00"  # EST: INS sends U.S. Eastern time
    assert doc["order"]["reference"] == "9093727242901" and doc["order"]["invoice_id"] == "9093727243001"
    assert doc["order"]["items"][0]["name"] == "Müller Tool – 東京 Edition"
    assert doc["order"]["customer"]["country"] == "JP" and doc["order"]["total"] == "10.00"  # bill_country JPN


def test_multibyte_names_survive_as_utf8_bytes() -> None:
    [pairs] = [p for vid, _, p in NOTIFICATIONS if vid == "synthetic-ipn-multibyte-utf8"]
    doc = events.build(nid="n1", source="default", channel="ipn", received_ms=0, fields=grouped(pairs))
    body = events.encode(doc)
    names = [v for k, v in pairs if k == "IPN_PNAME[]"]
    assert any(ord(c) > 0x7F for name in names for c in name)
    assert [i["name"] for i in json.loads(body)["order"]["items"]] == names
    for name in names:
        assert name.encode("utf-8") in body  # unescaped UTF-8, not \\u escapes
    assert json.loads(body)["order"]["customer"]["name"] == f"{dict(pairs)['FIRSTNAME']} {dict(pairs)['LASTNAME']}"


def test_forty_products_keep_their_order() -> None:
    pairs = [("REFNO", "1"), ("ORDERSTATUS", "COMPLETE"), ("IPN_DATE", "20240102030011")]
    for column, value in (
        ("IPN_PID[]", "{i}"),
        ("IPN_PNAME[]", "Produkt Nr. {i} – 東京"),
        ("IPN_QTY[]", "{i}"),
        ("IPN_PRICE[]", "{i}.50"),
    ):
        pairs += [(column, value.format(i=i)) for i in range(40)]
    doc = document("ipn", pairs)
    VALIDATOR.validate(doc)
    items = doc["order"]["items"]
    assert [i["product_id"] for i in items] == [str(i) for i in range(40)]
    assert [i["name"] for i in items] == [f"Produkt Nr. {i} – 東京" for i in range(40)]
    assert [i["price"] for i in items] == [f"{i}.50" for i in range(40)]


def test_indexed_arrays_are_ordered_by_index() -> None:
    doc = document(
        "ipn",
        [
            ("IPN_PID[1]", "b"),
            ("IPN_PID[0]", "a"),
            ("IPN_PNAME[0]", "A"),
            ("IPN_PNAME[1]", "B"),
            ("ORDERSTATUS", "COMPLETE"),
        ],
    )
    assert [(i["product_id"], i["name"]) for i in doc["order"]["items"]] == [("a", "A"), ("b", "B")]


@pytest.mark.parametrize(
    ("channel", "pairs", "field", "value"),
    [
        ("ipn", [("ORDERSTATUS", "SOMETHING_NEW"), ("MESSAGE_TYPE", "NEW_KIND")], "MESSAGE_TYPE", "NEW_KIND"),
        ("ipn", [("ORDERSTATUS", "SOMETHING_NEW")], "ORDERSTATUS", "SOMETHING_NEW"),
        ("lcn", [("LICENSE_CODE", "X"), ("DISPATCH_REASON", "LICENCE_FUTURE")], "DISPATCH_REASON", "LICENCE_FUTURE"),
        ("ipn", [("ORDERSTATUS", "SOMETHING_NEW"), ("MESSAGE_TYPE", "APPROVED")], "ORDERSTATUS", "SOMETHING_NEW"),
        ("ins", [("message_type", "CATALOGUE_PRODUCT_CREATED")], "message_type", "CATALOGUE_PRODUCT_CREATED"),
        ("ins", [("message_type", "INVOICE_STATUS_CHANGED"), ("invoice_status", "odd")], "invoice_status", "odd"),
    ],
)
def test_unknown_values_are_unmapped_never_an_error(
    channel: str, pairs: list[tuple[str, str]], field: str, value: str
) -> None:
    doc = document(channel, pairs)
    VALIDATOR.validate(doc)
    assert doc["type"] == "2checkout.unmapped" and doc["type_from"] == {"field": field, "value": value}


def test_expired_licence_and_garbage_amounts() -> None:
    doc = document(
        "lcn",
        [
            ("LICENSE_CODE", "X"),
            ("STATUS", "EXPIRED"),
            ("DISPATCH_REASON", "LICENCE_CHANGE"),
            ("EXPIRATION_DATE", "9999-12-31 23:59:59"),
        ],
    )
    assert doc["type"] == "license.expired" and doc["license"]["expires_at"] == "9999-12-31T23:59:59"
    doc = document(
        "ipn",
        [
            ("IPN_PID[]", "1"),
            ("IPN_PRICE[]", "1,50"),
            ("IPN_TOTALGENERAL", ""),
            ("IPN_DATE", "20241399000000"),
            ("MESSAGE_TYPE", "REFUND"),
        ],
    )
    VALIDATOR.validate(doc)
    assert doc["order"]["items"][0]["price"] is None and doc["order"]["total"] is None
    assert doc["occurred_at"] is None and doc["type"] == "order.refunded"


def test_id_is_stable_across_resends() -> None:
    pairs = [("ORDERSTATUS", "COMPLETE")]
    original = document("ipn", pairs)
    resend = events.build(
        nid="n1~r1", source="default", channel="ipn", received_ms=5, fields=grouped(pairs), resend_of="n1"
    )
    assert resend["id"] == original["id"] == "n1"
    assert resend["notification_id"] == "n1~r1" and resend["resend_of"] == "n1"
    VALIDATOR.validate(json.loads(events.encode(resend)))


KNOWN_NAMES = [
    "TIMEZONE_OFFSET",
    "FRAUD_STATUS",
    "CHARGEBACK_RESOLUTION",
    "CHARGEBACK_REASON_CODE",
    "IPN_LICENSE_PROD[]",
    "IPN_LICENSE_TYPE[]",
    "EXPIRATION_DATE_TIME",
    "EXPIRED",
    "DISABLED",
    "COUNTRY",
    "bill_country",
    "fraud_status",
    "list_currency",
    "cust_currency",
    "invoice_list_amount",
    "invoice_cust_amount",
    "item_list_amount_1",
    "REFNO",
    "REFNOEXT",
    "ORDERSTATUS",
    "MESSAGE_TYPE",
    "CURRENCY",
    "IPN_TOTALGENERAL",
    "IPN_DATE",
    "FIRSTNAME",
    "LASTNAME",
    "CUSTOMEREMAIL",
    "COUNTRY_CODE",
    "TEST_ORDER",
    "IPN_PID[]",
    "IPN_PNAME[]",
    "IPN_QTY[]",
    "IPN_PRICE[]",
    "IPN_VAT[]",
    "IPN_LICENSE_REF[]",
    "IPN_LICENSE_EXP[]",
    "IPN_PID[0]",
    "IPN_PID[3]",
    "LICENSE_CODE",
    "STATUS",
    "DISPATCH_REASON",
    "EXPIRATION_DATE",
    "DATE_UPDATED",
    "TEST",
    "message_type",
    "invoice_status",
    "timestamp",
    "sale_id",
    "item_count",
    "item_name_1",
    "item_id_2",
    "item_cust_amount_1",
    "item_type_10",
    "demo",
    "customer_name",
]
KNOWN_VALUES = [
    "COMPLETE",
    "AUTH",
    "PENDING",
    "REFUND",
    "EXPIRED",
    "LICENCE_CHANGE",
    "ORDER_CREATED",
    "INVOICE_STATUS_CHANGED",
    "deposited",
    "1",
    "0",
    "-3.20",
    "20240102030011",
    "2024-01-02 03:04:05 EST",
    "2024-02-30 00:00:00",
    "9999-12-31 23:59:59",
    "GMT+03:00",
    "DENIED",
    "UNDER REVIEW",
    "OPEN",
    "NONE",
    "2021-09-22",
    "JPN",
    "us",
    "Germany",
    "2021-01-01 12:00:00 EEST",
    "pending",
    "fail",
    "wait",
    "CANCELED",
    "PASTDUE",
    "LICENCE_PASTDUE",
    "PAYMENT_RECEIVED",
    "APPROVED",
]
names = st.one_of(st.sampled_from(KNOWN_NAMES), st.text(min_size=1, max_size=12))
values = st.one_of(st.sampled_from(KNOWN_VALUES), st.text(max_size=20))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    channel=st.sampled_from(["ipn", "lcn", "ins"]),
    pairs=st.lists(st.tuples(names, values), min_size=1, max_size=40),
    received_ms=st.integers(min_value=0, max_value=4_102_444_800_000),
    resend=st.booleans(),
)
def test_generated_notifications_give_valid_documents_that_round_trip(
    channel: str, pairs: list[tuple[str, str]], received_ms: int, resend: bool
) -> None:
    # the body goes through the ingress's own parser, as a received notification does
    body = urlencode([(k, v) for k, v in pairs]).encode()
    try:
        fields = protocol.parse_form(body)
    except protocol.FormError:
        return  # refused at the door (e.g. a name that is only separators): never becomes an event
    doc = events.build(
        nid="n~r1" if resend else "n",
        source="s",
        channel=channel,
        received_ms=received_ms,
        fields=fields,
        resend_of="n" if resend else "",
    )
    decoded = json.loads(events.encode(doc))
    VALIDATOR.validate(decoded)
    assert decoded["id"] == "n"
    assert events.fields_from_raw(decoded["raw"]) == fields
    assert decoded["type"] in events.EVENT_TYPES


def test_docs_examples_are_what_the_relay_sends() -> None:
    """docs/events/*.json (linked from docs/events.md) are rebuilt from the code and from their own raw
    fields: exactly the files, every type, each valid and carrying the id the relay gives its body."""
    from datetime import datetime

    files = {p.stem: p.read_text(encoding="utf-8") for p in event_examples.DOCS.glob("*.json")}
    assert sorted(files) == sorted(event_examples.EXAMPLES)
    page = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")
    for name, text in files.items():
        assert text == event_examples.render(event_examples.document(name)), f"docs/events/{name}.json is stale"
        doc = json.loads(text)
        VALIDATOR.validate(doc)
        received = datetime.fromisoformat(doc["received_at"].replace("Z", "+00:00"))
        rebuilt = events.build(
            nid=doc["notification_id"],
            source=doc["source"],
            channel=doc["channel"],
            received_ms=int(received.timestamp() * 1000),
            fields=events.fields_from_raw(doc["raw"]),
            resend_of=doc["resend_of"] or "",
        )
        assert json.loads(events.encode(rebuilt)) == doc
        body = urlencode([tuple(p) for p in doc["raw"]]).encode()
        assert doc["id"] == notification_id(doc["source"], doc["channel"], body)
        assert f"(events/{name}.json)" in page, f"docs/events.md does not link docs/events/{name}.json"
        assert name.split(".ins")[0] == doc["type"]  # the file is named after its type
    assert {json.loads(t)["type"] for t in files.values()} == set(events.EVENT_TYPES)


# --- issue 20: the business truth of each field -------------------------------------------------


@pytest.mark.parametrize(
    ("stamp", "iso"),
    [
        ("2021-01-01 12:00:00 EST", "2021-01-01T12:00:00-05:00"),
        ("2021-07-01 12:00:00 EDT", "2021-07-01T12:00:00-04:00"),
        ("2021-01-01 12:00:00 CET", "2021-01-01T12:00:00+01:00"),
        ("2021-07-01 12:00:00 CEST", "2021-07-01T12:00:00+02:00"),
        ("2021-01-01 12:00:00 EET", "2021-01-01T12:00:00+02:00"),
        ("2021-07-01 12:00:00 EEST", "2021-07-01T12:00:00+03:00"),
        ("2021-01-01 12:00:00 UTC", "2021-01-01T12:00:00Z"),
        ("2021-01-01 12:00:00 GMT", "2021-01-01T12:00:00Z"),
        ("2021-01-01 12:00:00 XYZT", "2021-01-01T12:00:00"),  # a valid time in an unknown zone: kept, no offset
        # no zone named: U.S. Eastern, as the INS 1.1 guide says every time is, DST as on that date
        ("2021-01-01 12:00:00", "2021-01-01T12:00:00-05:00"),
        ("2012-07-19 17:01:19", "2012-07-19T17:01:19-04:00"),  # a real INS's timestamp (omnipay-2checkout)
        ("2024-03-10 01:59:59", "2024-03-10T01:59:59-05:00"),  # the last second before clocks go forward
        ("2024-03-10 03:00:00", "2024-03-10T03:00:00-04:00"),
        ("2024-11-03 01:30:00", "2024-11-03T01:30:00-04:00"),  # the repeated hour: its first pass, EDT
        ("2024-11-03 02:00:00", "2024-11-03T02:00:00-05:00"),
        ("2021-02-30 12:00:00", None),
        ("2021-02-30 12:00:00 EST", None),
        ("yesterday", None),
    ],
)
def test_ins_times_keep_the_zone_they_name(stamp: str, iso: str | None) -> None:
    doc = document("ins", [("message_type", "ORDER_CREATED"), ("timestamp", stamp)])
    VALIDATOR.validate(doc)
    assert doc["occurred_at"] == iso


@pytest.mark.parametrize(
    ("offset", "iso"),
    [
        ("GMT+03:00", "2023-06-12T19:48:11+03:00"),
        ("GMT-05:00", "2023-06-12T19:48:11-05:00"),
        ("GMT+5:30", "2023-06-12T19:48:11+05:30"),
        ("+02:00", "2023-06-12T19:48:11+02:00"),
        ("GMT", "2023-06-12T19:48:11Z"),
        ("GMT+99:00", "2023-06-12T19:48:11"),
        ("Europe/Bucharest", "2023-06-12T19:48:11"),
    ],
)
def test_ipn_and_lcn_times_take_the_timezone_offset(offset: str, iso: str) -> None:
    doc = document("ipn", [("ORDERSTATUS", "COMPLETE"), ("TIMEZONE_OFFSET", offset), ("IPN_DATE", "20230612194811")])
    VALIDATOR.validate(doc)
    assert doc["occurred_at"] == iso
    lcn = document(
        "lcn",
        [
            ("LICENSE_CODE", "X"),
            ("STATUS", "ACTIVE"),
            ("DATE_UPDATED", "2023-06-12 19:48:11"),
            ("TIMEZONE_OFFSET", offset),
        ],
    )
    assert lcn["occurred_at"] == iso


@pytest.mark.parametrize(
    ("pairs", "expires"),
    [
        ([("EXPIRATION_DATE", "2021-09-22")], "2021-09-22"),
        ([("EXPIRATION_DATE", "2021-09-22"), ("EXPIRATION_DATE_TIME", "2021-09-22 15:57:32")], "2021-09-22T15:57:32"),
        ([("EXPIRATION_DATE", "2021-09-22"), ("EXPIRATION_DATE_TIME", "")], "2021-09-22"),
        ([("EXPIRATION_DATE", "2021-09-22"), ("EXPIRATION_DATE_TIME", "soon")], "2021-09-22"),
        ([("EXPIRATION_DATE", "2021-02-30")], None),
        ([("EXPIRATION_DATE", "9999-12-31 23:59:59")], "9999-12-31T23:59:59"),
    ],
)
def test_lcn_expiry_is_never_lost(pairs: list[tuple[str, str]], expires: str | None) -> None:
    doc = document("lcn", [("LICENSE_CODE", "X"), ("STATUS", "ACTIVE"), *pairs])
    VALIDATOR.validate(doc)
    assert doc["license"]["expires_at"] == expires


@pytest.mark.parametrize(
    ("channel", "pairs", "country"),
    [
        ("ipn", [("COUNTRY_CODE", "us"), ("COUNTRY", "United States of America")], "US"),
        ("ipn", [("COUNTRY", "United States of America")], "US"),
        ("ipn", [("COUNTRY_CODE", "zz"), ("COUNTRY", "Atlantis")], None),
        ("ins", [("bill_country", "JPN")], "JP"),
        ("ins", [("bill_country", "DEU")], "DE"),
        ("ins", [("bill_country", "XXX")], None),
        ("lcn", [("LICENSE_CODE", "X"), ("COUNTRY", "Japan")], "JP"),
        ("lcn", [("LICENSE_CODE", "X"), ("COUNTRY_CODE", "ro"), ("COUNTRY", "Romania")], "RO"),
    ],
)
def test_countries_are_iso_alpha_2_on_every_channel(
    channel: str, pairs: list[tuple[str, str]], country: str | None
) -> None:
    doc = document(channel, pairs)
    VALIDATOR.validate(doc)
    customer = doc["license"]["customer"] if channel == "lcn" else doc["order"]["customer"]
    assert customer["country"] == country
    assert events.fields_from_raw(doc["raw"]) == grouped(pairs)  # the original stays in raw


def test_licences_go_to_the_item_of_their_product() -> None:
    # 111 and 222 ordered, a licence only for 222: by position 111 would get it
    doc = document(
        "ipn",
        [
            ("IPN_PID[]", "111"),
            ("IPN_PID[]", "222"),
            ("IPN_PNAME[]", "a"),
            ("IPN_PNAME[]", "b"),
            ("IPN_LICENSE_PROD[]", "222"),
            ("IPN_LICENSE_REF[]", "L2"),
            ("ORDERSTATUS", "COMPLETE"),
        ],
    )
    assert [i["license"] and i["license"]["code"] for i in doc["order"]["items"]] == [None, "L2"]
    assert doc["license"]["code"] == "L2"
    # the same product twice: its k-th licence to its k-th item; a licence of a product not ordered is dropped
    doc = document(
        "ipn",
        [
            ("IPN_PID[]", "7"),
            ("IPN_PID[]", "8"),
            ("IPN_PID[]", "7"),
            ("IPN_LICENSE_PROD[]", "9"),
            ("IPN_LICENSE_PROD[]", "7"),
            ("IPN_LICENSE_PROD[]", "7"),
            ("IPN_LICENSE_REF[]", "L9"),
            ("IPN_LICENSE_REF[]", "L7a"),
            ("IPN_LICENSE_REF[]", "L7b"),
            ("ORDERSTATUS", "COMPLETE"),
        ],
    )
    VALIDATOR.validate(doc)
    assert [i["license"] and i["license"]["code"] for i in doc["order"]["items"]] == ["L7a", None, "L7b"]
    # without IPN_LICENSE_PROD[] (older payloads), by position
    doc = document("ipn", [("IPN_PID[]", "1"), ("IPN_PID[]", "2"), ("IPN_LICENSE_REF[]", "A"), ("ORDERSTATUS", "X")])
    assert [i["license"] and i["license"]["code"] for i in doc["order"]["items"]] == ["A", None]


@pytest.mark.parametrize(
    ("pairs", "etype", "chargeback"),
    [
        ([("CHARGEBACK_RESOLUTION", "NONE"), ("CHARGEBACK_REASON_CODE", "")], "order.completed", None),
        (
            [("CHARGEBACK_RESOLUTION", "OPEN"), ("CHARGEBACK_REASON_CODE", "")],
            "order.completed",
            {"resolution": "OPEN", "reason_code": None},
        ),
        (
            [("CHARGEBACK_RESOLUTION", "OPEN"), ("CHARGEBACK_REASON_CODE", "FRAUD")],
            "order.chargeback",
            {"resolution": "OPEN", "reason_code": "FRAUD"},
        ),
        (
            [("CHARGEBACK_RESOLUTION", "OPEN"), ("CHARGEBACK_REASON_CODE", "FRAUD"), ("MESSAGE_TYPE", "REVERSED")],
            "order.reversed",
            {"resolution": "OPEN", "reason_code": "FRAUD"},
        ),
    ],
)
def test_chargeback_is_read_from_its_resolution(
    pairs: list[tuple[str, str]], etype: str, chargeback: dict[str, Any] | None
) -> None:
    doc = document("ipn", [("ORDERSTATUS", "COMPLETE"), *pairs])
    VALIDATOR.validate(doc)
    assert (doc["type"], doc["order"]["chargeback"]) == (etype, chargeback)


@pytest.mark.parametrize(
    ("pairs", "currency", "total", "price"),
    [
        (
            [
                ("cust_currency", "JPY"),
                ("list_currency", "GBP"),
                ("invoice_list_amount", "5.00"),
                ("item_list_amount_1", "5.00"),
            ],
            "GBP",
            "5.00",
            "5.00",
        ),
        (
            [
                ("cust_currency", "JPY"),
                ("list_currency", "GBP"),
                ("invoice_list_amount", "5.00"),
                ("invoice_cust_amount", "905"),
                ("item_list_amount_1", "5.00"),
            ],
            "JPY",
            "905",
            None,
        ),
        ([("cust_currency", "USD")], "USD", None, None),
        ([("list_currency", "USD"), ("item_list_amount_1", "1.00")], "USD", None, "1.00"),
    ],
)
def test_ins_amounts_are_in_the_currency_given(
    pairs: list[tuple[str, str]], currency: str, total: str | None, price: str | None
) -> None:
    doc = document("ins", [("message_type", "ORDER_CREATED"), ("item_name_1", "x"), *pairs])
    VALIDATOR.validate(doc)
    order = doc["order"]
    assert (order["currency"], order["total"], order["items"][0]["price"]) == (currency, total, price)


def test_content_key_ignores_only_what_2checkout_regenerates() -> None:
    [case] = [c for c in event_vectors.cases() if c["id"] == "ipn-chargeback-on-complete"]
    pairs = [(a, b) for a, b in case["fields"]]
    key = events.content_key("default", "ipn", grouped(pairs))
    for name in ("IPN_DATE", "HASH", "SIGNATURE_SHA2_256", "SIGNATURE_SHA3_256"):
        changed = [
            (a, "20990101000000" if a == "IPN_DATE" else "f" * len(b)) if a == name else (a, b) for a, b in pairs
        ]
        assert events.content_key("default", "ipn", grouped(changed)) == key, name
    for i, (name, value) in enumerate(pairs):  # any other field, one at a time, each array position too
        if name in events.REGENERATED["ipn"]:
            continue
        changed = [*pairs[:i], (name, value + "1"), *pairs[i + 1 :]]
        assert events.content_key("default", "ipn", grouped(changed)) != key, name
    assert events.content_key("other", "ipn", grouped(pairs)) != key
    assert events.content_key("default", "lcn", grouped(pairs)) != key


@pytest.mark.parametrize(
    ("pairs", "etype", "field", "value"),
    [
        ([("STATUS", "CANCELED"), ("DISABLED", "1"), ("EXPIRED", "0")], "license.canceled", "STATUS", "CANCELED"),
        ([("STATUS", "ACTIVE")], "license.updated", "STATUS", "ACTIVE"),
        ([("STATUS", "ACTIVE"), ("DISPATCH_REASON", "LICENCE_FUTURE")], "license.updated", "STATUS", "ACTIVE"),
        ([("STATUS", "PASTDUE")], "license.past_due", "STATUS", "PASTDUE"),
        ([("STATUS", "EXPIRED"), ("DISPATCH_REASON", "LICENCE_CHANGE")], "license.expired", "STATUS", "EXPIRED"),
        (
            [("STATUS", "CANCELED"), ("DISPATCH_REASON", "SCHEDULED_FOR_CANCELATION_ON_DEMAND")],
            "license.updated",
            "DISPATCH_REASON",
            "SCHEDULED_FOR_CANCELATION_ON_DEMAND",
        ),
        ([("EXPIRED", "1"), ("DISABLED", "1")], "license.expired", "EXPIRED", "1"),
    ],
)
def test_lcn_types_without_or_beside_a_dispatch_reason(
    pairs: list[tuple[str, str]], etype: str, field: str, value: str
) -> None:
    doc = document("lcn", [("LICENSE_CODE", "X"), *pairs])
    assert (doc["type"], doc["type_from"]) == (etype, {"field": field, "value": value})


def _doc_tables(heading: str) -> list[list[str]]:
    """The rows of the tables under a docs/events.md heading (up to the next heading), as cells."""
    page = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")
    section = page.split(heading, 1)[1].split("\n#", 1)[0]
    return [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("| ") and not line.startswith("|---")
    ]


def _ticked(cell: str) -> list[str]:
    import re

    return re.findall(r"`([^`]+)`", cell)


def test_the_docs_type_tables_are_what_the_code_does() -> None:
    """Every value docs/events.md's tables map to a type gives that type (a doc that drifts from the
    tables fails here, not in a consumer's billing system)."""
    checked = 0
    for heading, first in (
        ("### IPN (`/ipn`)", "MESSAGE_TYPE"),
        ("### IPN (`/ipn`)", "ORDERSTATUS"),
        ("### INS (`/ins`)", "message_type"),
    ):
        rows = _doc_tables(heading)
        start = next(i for i, row in enumerate(rows) if row[0] == f"`{first}`")
        for row in rows[start + 1 :]:
            if len(row) < 3 or row[1] == "type":  # the next table's header
                break
            types = [t for t in _ticked(row[1]) if t in events.EVENT_TYPES]
            if not types:
                continue
            channel = "ins" if first == "message_type" else "ipn"
            if "INVOICE_STATUS_CHANGED" in row[0]:
                statuses = [v for v in _ticked(row[0]) if v.islower() and v != "invoice_status"]
                pairs = [
                    ([("message_type", "INVOICE_STATUS_CHANGED"), ("invoice_status", s)], t)
                    for s, t in zip(statuses, types * len(statuses) if len(types) == 1 else types, strict=True)
                ]
            else:
                pairs = [([(first, v)], types[0]) for v in _ticked(row[0]) if v.isupper() and v != first]
            for fields, etype in pairs:
                assert events.event_type(channel, grouped(fields))[0] == etype, (heading, fields)
                checked += 1
    for row in _doc_tables("### LCN (`/lcn`)") + _doc_tables("### IPN (`/ipn`)"):
        if len(row) < 3 or " = " not in row[1]:
            continue
        field, *values = _ticked(row[1].split("(")[0])
        types = [t for t in _ticked(row[2]) if t in events.EVENT_TYPES]
        channel = "ipn" if field == "FRAUD_STATUS" else "lcn"
        for value in values:
            fields = [("ORDERSTATUS", "COMPLETE")] if channel == "ipn" else [("LICENSE_CODE", "X")]
            assert events.event_type(channel, grouped([*fields, (field, value)]))[0] == types[0], (field, value)
            checked += 1
    assert checked >= 45  # the tables were found and read

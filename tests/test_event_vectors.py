"""Typed events end to end (issue 20): every case of tests/vectors/events.json is posted, signed, to the
real ingress, delivered by a real worker to a real ``format = "event"`` endpoint, and the document it
receives is checked for its type and fields and validated against the schema the admin API serves."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient
from arq.worker import Worker
from jsonschema import Draft202012Validator
from redis.asyncio import Redis

from config.settings import Settings
from relay import constants as k
from relay import protocol
from relay.server import create_app
from relay.store.ingest import notification_id
from tests import event_vectors
from tests.support import Sink, wait_for

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
TOKEN = "test-admin-token-0123456789"
FAST = [0.05, 0.05, 0.05]
# read from this tree, not from ../shared: these vectors are the relay's own
CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).resolve().parent / "vectors" / "events.json").read_text(encoding="utf-8")
)["vectors"]


def _body(case: dict[str, Any]) -> bytes:
    return urlencode([(a, b) for a, b in case["fields"]]).encode()


def _pointer(doc: Any, pointer: str) -> Any:
    for part in pointer.strip("/").split("/"):
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def _endpoint(name: str, sink: Sink, **kw: Any) -> dict[str, Any]:
    return {"name": name, "url": sink.url, "format": "event", "retry_delays": FAST, "timeout": 2, **kw}


@pytest.fixture
async def relay(
    aiohttp_client: Any, make_settings: Callable[..., Settings], redis: Redis, start_worker: Callable[..., Worker]
) -> AsyncIterator[Callable[..., Any]]:
    """The ingress (test client) and one in-process ARQ worker for a config; closed afterwards."""

    async def start(endpoints: list[dict[str, Any]]) -> TestClient:
        settings = make_settings(endpoints=endpoints, env={"RELAY_ADMIN_TOKEN": TOKEN})
        client = await aiohttp_client(create_app(settings))
        start_worker(settings)
        return client  # type: ignore[no-any-return]

    yield start


async def _post(client: TestClient, channel: str, body: bytes) -> str:
    resp = await client.post(f"/{channel}", data=body, headers=FORM)
    assert resp.status == 200, await resp.text()
    return notification_id("default", channel, body)


async def _served_validator(client: TestClient) -> Draft202012Validator:
    resp = await client.get("/api/schema/event.json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 200, await resp.text()
    return Draft202012Validator(await resp.json())


async def _received(client: TestClient, sink: Sink, count: int) -> dict[str, dict[str, Any]]:
    """The documents a sink received, by notification id, once it has ``count`` of them; each one
    valid against the schema the admin API serves."""
    await wait_for(lambda: len(sink.received) >= count, 30)
    validator = await _served_validator(client)
    docs = {r.headers["Relay-Notification-Id"]: json.loads(r.body) for r in sink.received}
    for doc in docs.values():
        validator.validate(doc)
    return docs


def test_the_vectors_are_signed_notifications_and_match_their_generator() -> None:
    """Each vector verifies as the ingress verifies it, and events.json is what make_events writes."""
    for case in CASES:
        fields = protocol.parse_form(_body(case))
        if case["channel"] == "ins":
            assert protocol.verify_ins(fields, event_vectors.SELLER_ID, [event_vectors.INS_WORD]) == 0
        else:
            algo, _ = protocol.verify_signed(fields, [event_vectors.SECRET_KEY.encode()], "sha3-256")
            assert algo == "sha3-256", case["id"]
        assert case["rests_on"], case["id"]
    assert CASES == json.loads(json.dumps(event_vectors.cases()))
    assert len({c["id"] for c in CASES}) == len(CASES)


def test_the_real_pending_ipn_is_the_one_2checkout_signed() -> None:
    """ipn-real-pending-before-payment carries the VirtueMart plugin's IPN field for field: its own HASH
    verifies over them with the plugin's key, and a one-character change does not."""
    case = next(c for c in CASES if c["id"] == "ipn-real-pending-before-payment")
    real = [*event_vectors.VIRTUEMART_IPN, ("HASH", event_vectors.VIRTUEMART_HASH)]
    assert [tuple(p) for p in case["fields"] if p[0] not in ("HASH", "SIGNATURE_SHA2_256", "SIGNATURE_SHA3_256")] == [
        tuple(p) for p in event_vectors.VIRTUEMART_IPN
    ]
    key = event_vectors.VIRTUEMART_KEY.encode()
    assert protocol.verify_signed(protocol.parse_form(urlencode(real).encode()), [key], "md5") == ("md5", 0)
    changed = [(k, "Virtuemart 2CO connector" if k == "IPN_PNAME[]" else v) for k, v in real]
    with pytest.raises(protocol.SignatureError):
        protocol.verify_signed(protocol.parse_form(urlencode(changed).encode()), [key], "md5")


async def test_each_case_reaches_an_event_endpoint_with_its_type_and_fields(
    relay: Callable[..., Any], sink: Callable[..., Any]
) -> None:
    s = await sink()
    client = await relay([_endpoint("events", s)])
    ids = {case["id"]: await _post(client, case["channel"], _body(case)) for case in CASES}
    assert len(set(ids.values())) == len(CASES)
    received = await _received(client, s, len(CASES))
    wrong = []
    for case in CASES:
        doc = received[ids[case["id"]]]
        expected = case["expected"]
        got = {
            "type": doc["type"],
            "type_from": doc["type_from"],
            **{pointer: _pointer(doc, pointer) for pointer in expected["fields"]},
        }
        want = {"type": expected["type"], "type_from": expected["type_from"], **expected["fields"]}
        if got != want:
            wrong.append((case["id"], {key: (got[key], want[key]) for key in want if got[key] != want[key]}))
    assert wrong == [], "cases whose event differs from the expectation (got, expected): " + repr(wrong)


async def test_a_chargeback_only_endpoint_hears_of_the_chargeback_and_nothing_else(
    relay: Callable[..., Any], sink: Callable[..., Any], redis: Redis
) -> None:
    chargebacks, everything = await sink(), await sink()
    client = await relay(
        [_endpoint("chargebacks", chargebacks, event_types=["order.chargeback"]), _endpoint("all", everything)]
    )
    by_id = {c["id"]: c for c in CASES}
    chosen = [
        "ipn-chargeback-on-complete",
        "ipn-complete-chargeback-none",
        "ipn-refund-of-a-charged-back-order",
        "ipn-fraud-denied",
        "lcn-real-canceled-without-dispatch-reason",
        "ins-fraud-fail",
    ]
    ids = {vid: await _post(client, by_id[vid]["channel"], _body(by_id[vid])) for vid in chosen}
    await _received(client, everything, len(chosen))

    async def settled() -> bool:
        states = [await redis.hget(k.delivery(nid, "chargebacks"), "state") for nid in ids.values()]
        return all(state in (b"delivered", b"skipped") for state in states)

    await wait_for(settled, 15)
    [only] = chargebacks.received
    doc = json.loads(only.body)
    (await _served_validator(client)).validate(doc)
    assert only.headers["Relay-Notification-Id"] == ids["ipn-chargeback-on-complete"]
    assert doc["type"] == "order.chargeback" and doc["order"]["status"] == "COMPLETE"
    assert ["ORDERSTATUS", "COMPLETE"] in doc["raw"]


def _reissued(case: dict[str, Any], ipn_date: str, **changes: str) -> bytes:
    """The case re-generated as 2Checkout reissues it: a new IPN_DATE and new signatures."""
    unsigned = [(a, b) for a, b in case["fields"] if a not in ("HASH", "SIGNATURE_SHA2_256", "SIGNATURE_SHA3_256")]
    unsigned = [(a, ipn_date if a == "IPN_DATE" else changes.get(a, b)) for a, b in unsigned]
    return urlencode(event_vectors.sign(unsigned)).encode()


async def test_a_reissued_ipn_has_a_new_id_and_the_same_content_key(
    relay: Callable[..., Any], sink: Callable[..., Any]
) -> None:
    s = await sink()
    client = await relay([_endpoint("events", s)])
    [case] = [c for c in CASES if c["id"] == "ipn-chargeback-on-complete"]
    first = await _post(client, "ipn", _body(case))
    reissued = await _post(client, "ipn", _reissued(case, "20230613090000"))
    # one business field changed (the amount), regenerated the same way
    changed = await _post(client, "ipn", _reissued(case, "20230613090001", IPN_TOTALGENERAL="0.02"))
    docs = await _received(client, s, 3)
    assert len({first, reissued, changed}) == 3
    assert docs[first]["id"] == first and docs[reissued]["id"] == reissued  # a new id: a new notification
    assert docs[reissued]["occurred_at"] == "2023-06-13T09:00:00+03:00"
    assert docs[first]["content_key"] == docs[reissued]["content_key"]
    assert docs[changed]["content_key"] != docs[first]["content_key"]

"""What issue 26 changed in the stored records to use less Redis memory, and that readers take both the
old and the new shapes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from arq.worker import Worker
from redis.asyncio import Redis

from config.settings import Settings
from relay import constants as k
from relay.server import create_app
from relay.store import body
from relay.store.detail import attempt_record, delivery_record, detail
from relay.store.ingest import notification_id
from relay.store.resend import Resender
from tests.support import ipn_fields, signed_body, wait_for
from workers.attempt import compact

FULL = {
    "n": 2,
    "at": 1_765_000_000_000,
    "ms": 0,
    "outcome": "retry",
    "status": None,
    "error": "timeout",
    "message": None,
    "response": "",
    "next": 1_765_000_060_000,
    "resend": False,
}


def test_a_compact_attempt_record_leaves_out_only_the_fields_that_say_nothing() -> None:
    stored = json.loads(compact(FULL))
    # 0 ms is a measurement, kept; null, false and "" are left out
    assert stored == {
        "n": 2,
        "at": 1_765_000_000_000,
        "ms": 0,
        "outcome": "retry",
        "error": "timeout",
        "next": 1_765_000_060_000,
    }
    assert len(compact(FULL)) < len(json.dumps(FULL, separators=(",", ":"))) - 40


def test_old_full_records_and_compact_ones_read_the_same() -> None:
    old = json.dumps(FULL).encode()
    new = compact(FULL).encode()
    assert attempt_record(old) == attempt_record(new) == FULL
    d = {"state": "retrying", "attempts": "2", "next": "1765000060000", "updated": "1765000000000"}
    old_doc, new_doc = delivery_record(d, [old], None), delivery_record(d, [new], None)
    assert old_doc == new_doc
    [a] = new_doc["attempt_log"]
    assert a["resend"] is False and a["status"] is None and a["message"] is None and a["response"] == ""
    assert a["next"] == "2025-12-06T05:47:40.000Z"


def _recoded(body: bytes) -> bytes:
    """The same form in other bytes: lowercase percent-escapes, %20 for +, an escaped letter and a
    raw UTF-8 value, as a sender may write them (the signature covers the values, not these bytes)."""
    out = body.replace(b"%C3%BC", b"%c3%bc").replace(b"+", b"%20").replace(b"GIFT_ORDER=0", b"GIFT_ORDER=%30")
    return out.replace(b"%C3%91", "Ñ".encode())


@pytest.mark.parametrize("raw", [b"", b"x", bytes(range(256)), "Zoë 東京 \u00a0&=+%".encode() * 40])
def test_pack_and_restore_give_back_every_byte(raw: bytes) -> None:
    field, value = body.pack(raw)
    assert body.restore(*((value, None) if field == body.PLAIN else (None, value))) == raw
    assert field == body.PACKED or value == raw  # stored as it came when compression does not pay


async def test_a_compressed_body_is_delivered_shown_and_resent_byte_for_byte_as_is_an_old_plain_one(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    redis: Redis,
    start_worker: Callable[..., Worker],
    sink: Callable[..., Any],
) -> None:
    s = await sink()
    settings = make_settings(endpoints=[{"name": "x", "url": s.url, "format": "form", "timeout": 2}])
    client = await aiohttp_client(create_app(settings))
    new = _recoded(signed_body(ipn_fields("230000777", name="Ñoño 東京")))
    old = signed_body(ipn_fields("230000778", name="Zoë"))
    between = signed_body(ipn_fields("230000779", name="Øre"))
    nids = {}
    for raw in (new, old, between):
        resp = await client.post("/ipn", data=raw, headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert resp.status == 200, await resp.text()
        nids[raw] = notification_id("default", "ipn", raw)
    stored = await redis.hgetall(k.notification(nids[new]))
    assert b"body" not in stored and b"bodyz" not in stored
    assert len(await redis.get(k.body(nids[new]))) < len(new) * 0.8
    # only short values left: Redis keeps the hash as a listpack, not a hash table
    assert await redis.object("encoding", k.notification(nids[new])) == b"listpack"
    ttl = await redis.pttl(k.body(nids[new]))
    assert ttl > 0 and abs(await redis.pttl(k.notification(nids[new])) - ttl) < 1000  # they expire together
    # the others as a relay before issue 26 stored them (the body as received, in the hash's ``body``),
    # and as its first step did (compressed, in the hash's ``bodyz``)
    for raw, field, value in ((old, "body", old), (between, "bodyz", await redis.get(k.body(nids[between])))):
        await redis.delete(k.body(nids[raw]))
        await redis.hset(k.notification(nids[raw]), field, value)
    start_worker(settings)
    for raw, nid in nids.items():
        await wait_for(lambda nid=nid: redis.hget(k.delivery(nid, "x"), "delivered_at"), 15)
        assert (await detail(redis, nid))["body"] == raw.decode()
        resent = await Resender(redis, settings).one(nid)
        await wait_for(lambda r=resent["id"]: redis.hget(k.delivery(r, "x"), "delivered_at"), 15)
    got: dict[str, list[bytes]] = {}
    for req in s.received:
        got.setdefault(req.headers["Relay-Notification-Id"], []).append(req.body)
    for raw, nid in nids.items():
        assert got[nid] == [raw] and got[f"{nid}~r1"] == [raw]

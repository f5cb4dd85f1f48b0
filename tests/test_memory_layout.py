"""What issue 26 changed in the stored records to use less Redis memory, and that readers take both the
old and the new shapes."""

from __future__ import annotations

import json
import zlib
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
    packed = body.pack(raw)
    assert packed is None or (len(packed) < len(raw) and body.restore(None, packed) == raw)
    if packed is not None:
        assert body.stored(None, None, packed, None) == raw
    assert body.stored(None, None, raw, b"1") == raw  # in relay:b as received, before the fan-out


async def test_a_body_is_delivered_shown_and_resent_byte_for_byte_before_and_after_its_compression(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    redis: Redis,
    start_worker: Callable[..., Worker],
    sink: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every shape a body is stored in (relay/store/body.py): in relay:b as received (this ingress, before
    the fan-out), and as earlier relays stored it: relay:b compressed, the hash's ``body``, its ``bodyz``."""
    s = await sink()
    settings = make_settings(endpoints=[{"name": "x", "url": s.url, "format": "form", "timeout": 2}])
    client = await aiohttp_client(create_app(settings))
    new = _recoded(signed_body(ipn_fields("230000777", name="Ñoño 東京")))
    # mixed-case escapes, an escaped percent sign, a raw "@"
    odd = signed_body(ipn_fields("230000780", name="100%25 Ünïcödé"))
    odd = odd.replace(b"%C3%9C", b"%c3%9C").replace(b"%40", b"@")
    old = signed_body(ipn_fields("230000778", name="Zoë"))
    between = signed_body(ipn_fields("230000779", name="Øre"))
    compressed = signed_body(ipn_fields("230000781", name="Åsa"))
    nids = {}
    for raw in (new, odd, old, between, compressed):
        resp = await client.post("/ipn", data=raw, headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert resp.status == 200, await resp.text()
        nids[raw] = notification_id("default", "ipn", raw)
    for raw in (new, odd):
        # as received, in its own key: the ingress does not compress (the fan-out does)
        stored = await redis.hgetall(k.notification(nids[raw]))
        assert b"body" not in stored and b"bodyz" not in stored and stored[b"braw"] == b"1"
        assert await redis.get(k.body(nids[raw])) == raw
        # only short values left: Redis keeps the hash as a listpack, not a hash table
        assert await redis.object("encoding", k.notification(nids[raw])) == b"listpack"
        ttl = await redis.pttl(k.body(nids[raw]))
        assert ttl > 0 and abs(await redis.pttl(k.notification(nids[raw])) - ttl) < 1000  # they expire together
        assert (await detail(redis, nids[raw]))["body"] == raw.decode()
        assert "braw" not in await detail(redis, nids[raw])
    # resent before its fan-out: the resend's copy is as received too, and compressed by its own fan-out
    early = (await Resender(redis, settings).one(nids[new]))["id"]
    assert await redis.get(k.body(early)) == new and await redis.hget(k.notification(early), "braw") == b"1"
    # the others as earlier relays stored them: the body as received in the hash's ``body`` (before issue
    # 26), compressed in its ``bodyz`` (its first step), compressed in relay:b (its second)
    for raw, field in ((old, "body"), (between, "bodyz"), (compressed, None)):
        nkey = k.notification(nids[raw])
        await redis.hdel(nkey, "braw")
        if field:
            await redis.delete(k.body(nids[raw]))
            await redis.hset(nkey, field, raw if field == "body" else zlib.compress(raw))
        else:
            await redis.set(k.body(nids[raw]), zlib.compress(raw), keepttl=True)
    # a body compression would not shrink stays as received: ``odd`` stands for one (the claims read it plain)
    pack = body.pack
    monkeypatch.setattr(body, "pack", lambda raw: None if raw == odd else pack(raw))
    start_worker(settings)
    for raw, nid in nids.items():
        await wait_for(lambda nid=nid: redis.hget(k.delivery(nid, "x"), "delivered_at"), 15)
        assert (await detail(redis, nid))["body"] == raw.decode()
    await wait_for(lambda: redis.hget(k.delivery(early, "x"), "delivered_at"), 15)
    assert await redis.get(k.body(nids[odd])) == odd and await redis.hget(k.notification(nids[odd]), "braw")
    for nid in (nids[new], early):
        # compressed by the fan-out, in place, the hash still a listpack, the TTL kept
        assert not await redis.hexists(k.notification(nid), "braw")
        packed = await redis.get(k.body(nid))
        assert len(packed) < len(new) * 0.8 and await redis.pttl(k.body(nid)) > 0
        assert await redis.object("encoding", k.notification(nid)) == b"listpack"
    resent = {nid: (await Resender(redis, settings).one(nid))["id"] for nid in nids.values()}
    for r in resent.values():
        await wait_for(lambda r=r: redis.hget(k.delivery(r, "x"), "delivered_at"), 15)
    got: dict[str, list[bytes]] = {}
    for req in s.received:
        got.setdefault(req.headers["Relay-Notification-Id"], []).append(req.body)
    for raw, nid in nids.items():
        assert got[nid] == [raw] and got[resent[nid]] == [raw], raw
        assert (await detail(redis, resent[nid]))["body"] == raw.decode()
    assert got[early] == [new] and (await detail(redis, early))["body"] == new.decode()

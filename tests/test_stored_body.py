"""A notification whose stored body is gone or damaged while its hash remains (relay/store/body.py: the
compressed body lives in relay:b:{nid}, beside the hash; an evicting maxmemory-policy, a hand edit or
bit rot can part them): every view says so, none answers with a traceback."""

from __future__ import annotations

from redis.asyncio import Redis

from relay import constants as k
from relay.store import body
from relay.store.detail import detail
from relay.store.ingest import Store, notification_id
from tests.cli import run_cli
from tests.support import ipn_fields, signed_body


async def _stored(redis: Redis) -> str:
    raw = signed_body(ipn_fields("230000901", name="Zoë %41 東京"))
    nid = notification_id("default", "ipn", raw)
    await Store(redis, retention_ms=86_400_000).ingest(
        nid=nid,
        source="default",
        channel="ipn",
        body=raw,
        content_type="application/x-www-form-urlencoded",
        algo="md5",
        facts={"type": "ORDER_CREATED", "status": "COMPLETE"},
    )
    assert await redis.exists(k.body(nid))  # compressed, in its own key
    return nid


async def test_a_body_gone_apart_from_its_notification_is_said_not_shown_empty(redis: Redis) -> None:
    nid = await _stored(redis)
    await redis.delete(k.body(nid))
    doc = await detail(redis, nid)
    assert doc["body"] == "" and doc["fields"] is None
    assert doc["body_error"].startswith("the stored body is gone"), doc["body_error"]


async def test_a_body_that_does_not_decompress_is_said_not_a_traceback(redis: Redis) -> None:
    nid = await _stored(redis)
    await redis.hdel(k.notification(nid), body.RAW)  # compressed by the fan-out, as it would be
    await redis.set(k.body(nid), b"not zlib", keepttl=True)
    doc = await detail(redis, nid)
    assert doc["body"] == "" and doc["fields"] is None
    assert doc["body_error"].startswith("the stored body does not decompress"), doc["body_error"]
    url = f"redis://127.0.0.1:{redis.connection_pool.connection_kwargs['port']}/0"
    done = run_cli("notifications", "show", nid, redis_url=url)
    assert done.returncode == 0, done
    assert "(no fields: the stored body does not decompress" in done.stdout, done.stdout

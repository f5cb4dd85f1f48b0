"""A notification whose stored body is gone or damaged while its hash remains (relay/store/body.py: the
compressed body lives in relay:b:{nid}, beside the hash; an evicting maxmemory-policy, a hand edit or
bit rot can part them): every view says so, none answers with a traceback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
from arq.worker import Worker
from redis.asyncio import Redis

from config.settings import Settings
from relay import constants as k
from relay.store import body
from relay.store.detail import detail
from relay.store.ingest import Store, notification_id
from tests.cli import run_cli
from tests.support import ipn_fields, signed_body, wait_for
from tests.test_delivery import in_state
from workers import fanout
from workers.engine import Engine


async def _stored(redis: Redis, order: str = "230000901") -> str:
    raw = signed_body(ipn_fields(order, name="Zoë %41 東京"))
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


async def test_a_body_that_does_not_decompress_holds_back_no_other_delivery(
    redis: Redis,
    make_settings: Callable[..., Settings],
    start_worker: Callable[..., Worker],
    sink: Callable[..., Any],
) -> None:
    """The lanes' claims restore each body (workers/step.py): one that raises there must fail only its
    own delivery, not the step call every lane of the worker shares."""
    a, b = await sink(), await sink()
    settings = make_settings(
        endpoints=[
            {"name": "a", "url": a.url, "mode": "concurrent", "timeout": 2},
            {"name": "b", "url": b.url, "timeout": 2},
        ]
    )
    nids = [await _stored(redis, str(230000910 + i)) for i in range(3)]
    engine = Engine(redis, settings, aiohttp.ClientSession())
    try:
        await fanout.route(engine, await fanout.claim(engine))
    finally:
        await engine.session.close()
    assert not await redis.hexists(k.notification(nids[1]), body.RAW)  # compressed by the fan-out
    await redis.set(k.body(nids[1]), b"not zlib", keepttl=True)
    start_worker(settings)
    for nid in (nids[0], nids[2]):
        for ep in ("a", "b"):
            await wait_for(lambda nid=nid, ep=ep: redis.hget(k.delivery(nid, ep), "delivered_at"), 15)
    for ep in ("a", "b"):  # failed, visibly, with why: not retried for ever, not sent empty
        await wait_for(lambda ep=ep: in_state(redis, nids[1], ep, "failed"), 15)
        [attempt] = await redis.lrange(k.attempts(nids[1], ep), 0, -1)
        assert b"does not decompress" in attempt, attempt
    assert len(a.received) == 2 and len(b.received) == 2

"""The batched fan-out (issue 26): notifications claimed from relay:fanout in batches under a lease
(workers/lua/fanclaim.lua) and routed in one route.lua call per batch (workers/fanout.py)."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from redis.asyncio import Redis

from config.settings import Settings
from relay import constants as k
from relay.store.ingest import Store, notification_id
from tests.support import RedisServer, hold_fanout, ipn_fields, signed_body, wait_for
from workers import fanout, wake
from workers.engine import Engine


@pytest.fixture
async def engines(make_settings: Callable[..., Settings], redis: Redis) -> AsyncIterator[Callable[..., Engine]]:
    """Engines that are not started: the test drives their fan-out calls itself."""
    session = aiohttp.ClientSession()
    settings = make_settings(
        endpoints=[
            {"name": "a", "url": "http://127.0.0.1:9/a"},
            {"name": "b", "url": "http://127.0.0.1:9/b", "concurrent": True},
        ]
    )

    def make() -> Engine:
        return Engine(redis, settings, session)

    yield make
    await session.close()


async def store(redis: Redis, n: int, first: int = 0) -> list[str]:
    s = Store(redis, retention_ms=86_400_000)
    nids = []
    for i in range(first, first + n):
        body = signed_body(ipn_fields(f"9{i:05d}"))
        nid = notification_id("default", "ipn", body)
        stored = await s.ingest(
            nid=nid,
            source="default",
            channel="ipn",
            body=body,
            content_type="application/x-www-form-urlencoded",
            algo="md5",
            facts={"type": "ORDER_CREATED", "status": "COMPLETE"},
        )
        assert not stored.duplicate
        nids.append(nid)
    return nids


async def test_two_workers_claim_disjoint_batches_in_order_of_receipt(
    engines: Callable[..., Engine], redis: Redis
) -> None:
    nids = await store(redis, 10)
    one, two = engines(), engines()
    first, second = await asyncio.gather(fanout.claim(one, 4), fanout.claim(two, 4))
    claimed = [w.nid for w in first] + [w.nid for w in second]
    assert sorted(claimed) == sorted(nids[:8]) and len(set(claimed)) == 8  # none claimed twice
    assert [w.nid for w in await fanout.claim(one, 64)] == nids[8:]  # what is left, oldest first
    assert await fanout.claim(two, 64) == []  # all leased
    assert await redis.zcard(k.FANOUT) == 10  # still waiting: routed only by route.lua
    created = await fanout.route(one, first)
    assert created == [2, 2, 2, 2]
    assert await redis.zcard(k.FANOUT) == 6 and await redis.zcard(k.FANOUT_LEASE) == 6


async def test_a_lapsed_lease_is_claimed_again_and_routing_twice_creates_nothing_twice(
    engines: Callable[..., Engine], redis: Redis
) -> None:
    [nid] = await store(redis, 1)
    raw = await redis.get(k.body(nid))
    engine = engines()
    await hold_fanout(redis, nid, for_ms=200)  # a worker killed between its claim and its route call
    assert await fanout.claim(engine) == []
    await asyncio.sleep(0.25)  # the lease's own length, on Redis's clock
    # its body is still as the ingress stored it: whoever routes it compresses it (relay/store/body.py)
    assert await redis.hget(k.notification(nid), "braw") == b"1" and await redis.get(k.body(nid)) == raw
    [again] = await fanout.claim(engine)
    assert again.nid == nid and again.field("type") == "ORDER_CREATED" and again.body == raw
    ttl = await redis.pttl(k.body(nid))
    assert await fanout.route(engine, [again]) == [2]
    packed = await redis.get(k.body(nid))
    assert zlib.decompress(packed) == raw and len(packed) < len(raw) * 0.8
    assert not await redis.hexists(k.notification(nid), "braw")
    assert ttl - 1000 < await redis.pttl(k.body(nid)) <= ttl  # the ingress's TTL kept
    # the killed worker's batch routed late (a stalled worker, an old ingress's job): nothing new, and
    # the body is not compressed twice
    assert await fanout.route(engine, [again]) == [0]
    assert await engine.fanout(nid) == 0
    assert await redis.get(k.body(nid)) == packed
    assert {await redis.hget(k.delivery(nid, ep), "state") for ep in ("a", "b")} == {b"pending"}
    assert await redis.zcard(k.ep_queue("a")) == 1 and not await redis.zcard(k.FANOUT_LEASE)


async def test_a_gone_notification_leaves_the_fanout(engines: Callable[..., Engine], redis: Redis) -> None:
    nids = await store(redis, 2)
    await redis.delete(k.notification(nids[0]))  # past retention
    engine = engines()
    batch = await fanout.claim(engine)
    assert [w.nid for w in batch] == nids
    assert await fanout.route(engine, batch) == [-1, 2]
    assert not await redis.zcard(k.FANOUT) and not await redis.exists(k.delivery(nids[0], "a"))


async def test_the_watch_wakes_the_fanout_on_a_stored_notification_not_on_routing(
    engines: Callable[..., Engine], redis: Redis, redis_server: RedisServer
) -> None:
    watch = wake.QueueWatch(redis_server.url)
    assert await watch.start()
    try:
        watch.stored.clear()
        [nid] = await store(redis, 1)
        await wait_for(watch.stored.is_set, 5, interval=0.005)
        engine = engines()
        batch = await fanout.claim(engine)
        watch.stored.clear()
        watch.changed.clear()
        await fanout.route(engine, batch)
        await redis.zadd(k.QUEUE_NAME, {"cron:x": 1})  # a write that is surely seen after the route's
        await wait_for(watch.changed.is_set, 5, interval=0.005)
        assert not watch.stored.is_set()  # route.lua's writes to relay:fanout wake nobody
        assert await redis.zscore(k.FANOUT, nid) is None
    finally:
        await watch.stop()


async def test_the_loop_routes_a_notification_within_a_few_ms_of_its_receipt(
    engines: Callable[..., Engine], redis: Redis, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Woken by the watch, not by its poll: with the poll a minute long, it still routes at once."""
    monkeypatch.setattr(fanout, "IDLE_S", 60.0)
    watch = wake.QueueWatch(redis_server.url)
    assert await watch.start()
    engine = engines()
    engine.fanout_signal, engine.fanout_watch = watch.stored, watch
    loop = asyncio.create_task(fanout.run(engine))
    try:
        await asyncio.sleep(0.1)  # the loop is waiting
        for i in range(5):
            [nid] = await store(redis, 1, first=i)
            await wait_for(lambda nid=nid: redis.exists(k.delivery(nid, "a")), 2, interval=0.002)
    finally:
        engine.stopping = True
        engine.fanout_signal.set()
        await asyncio.wait_for(loop, 5)
        await watch.stop()


async def test_a_notification_that_cannot_be_routed_does_not_hold_back_its_batch(
    engines: Callable[..., Engine], redis: Redis
) -> None:
    """A poison pill (a field that does not parse: a hand edit) stays in relay:fanout for an operator,
    logged; the rest of its batch is routed. A body that does not decompress (bit rot) is routed as if
    it had none, so its deliveries fail visibly (tests/test_stored_body.py) rather than hold every
    serial lane behind it."""
    nids = await store(redis, 5)
    assert await redis.exists(k.body(nids[1]))  # stored in its own key
    await redis.hdel(k.notification(nids[1]), "type")  # stored before types were: its body is read
    await redis.hdel(k.notification(nids[1]), "braw")  # compressed, by a worker routing it once already
    await redis.set(k.body(nids[1]), b"not zlib")
    await redis.hset(k.notification(nids[3]), "recv", "soon")
    engine = engines()
    loop = asyncio.create_task(fanout.run(engine))
    try:
        for nid in (nids[0], nids[1], nids[2], nids[4]):
            await wait_for(lambda nid=nid: redis.exists(k.delivery(nid, "a")), 5, interval=0.01)
        assert not loop.done()
        assert await redis.zrange(k.FANOUT, 0, -1) == [nids[3].encode()]
        assert not await redis.exists(k.delivery(nids[3], "a"))
    finally:
        engine.stopping = True
        engine.fanout_signal.set()
        await asyncio.wait_for(loop, 5)


async def test_the_loop_looks_at_once_when_its_watch_is_lost(
    engines: Callable[..., Engine], redis: Redis, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop waits up to IDLE_S on a live watch; the watch's connection lost (a Redis restart, a
    CLIENT KILL), what is stored from then on is seen only by polling, which starts at once."""
    monkeypatch.setattr(fanout, "IDLE_S", 60.0)
    watch = wake.QueueWatch(redis_server.url)
    assert await watch.start()
    engine = engines()
    engine.fanout_signal, engine.fanout_watch = watch.stored, watch
    loop = asyncio.create_task(fanout.run(engine))
    try:
        await asyncio.sleep(0.1)  # the loop is waiting on the live watch
        await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")  # the watch's connection
        await wait_for(lambda: not watch.active, 5, interval=0.005)
        # stored with no watch to say so (as while Redis was down): only a poll finds it
        [nid] = await store(redis, 1)
        await wait_for(lambda: redis.exists(k.delivery(nid, "a")), 2, interval=0.01)
    finally:
        engine.stopping = True
        engine.fanout_signal.set()
        await asyncio.wait_for(loop, 5)
        await watch.stop()


async def test_a_stalled_workers_late_batch_leaves_what_another_routed_meanwhile_as_it_was(
    engines: Callable[..., Engine], redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    """A worker stalled past its lease (SIGSTOP, a slow Redis) routes its batch after another worker has
    claimed and routed it again, under a configuration reloaded meanwhile (an endpoint added): the late
    call creates nothing, and must not rewrite the notification's list of endpoints either, which the
    detail, the listings and resends read (it dropped the added endpoint's delivery from them)."""
    [nid] = await store(redis, 1)
    stalled = engines()
    batch = await fanout.claim(stalled)
    await redis.zadd(k.FANOUT_LEASE, {nid: 0})  # its lease lapsed while it was stopped
    session = aiohttp.ClientSession()
    try:
        reloaded = Engine(
            redis,
            make_settings(
                endpoints=[
                    {"name": "a", "url": "http://127.0.0.1:9/a"},
                    {"name": "b", "url": "http://127.0.0.1:9/b", "concurrent": True},
                    {"name": "c", "url": "http://127.0.0.1:9/c"},
                ]
            ),
            session,
        )
        assert await fanout.route(reloaded, await fanout.claim(reloaded)) == [3]
    finally:
        await session.close()
    assert await fanout.route(stalled, batch) == [0]  # continued: late
    assert await redis.hget(k.notification(nid), "eps") == b"a,b,c"
    assert not await redis.zcard(k.FANOUT) and not await redis.zcard(k.FANOUT_LEASE)

"""Every key has a bound: the reference index is trimmed on write, the sweeper trims indexes on
Redis's clock, and the keys of endpoints and sources removed from the config expire."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
from redis.asyncio import Redis

from config.settings import Settings
from relay import constants as k
from relay.store.ingest import Store, notification_id
from tests.support import Sink, ipn_fields, signed_body, wait_for
from workers import jobs, retention
from workers.engine import Engine

RETENTION_DAYS = 1.5 / 86400  # 1.5 s
# retention must outlast the retry window (config/settings.py)
RETRY_WINDOW_HOURS = 1.0 / 3600


async def ingest(redis: Redis, retention_ms: int, refno: str, name: str = "Müller") -> str:
    body = signed_body(ipn_fields(refno, name=name))
    nid = notification_id("default", "ipn", body)
    await Store(redis, retention_ms).ingest(
        nid=nid,
        source="default",
        channel="ipn",
        body=body,
        content_type="application/x-www-form-urlencoded",
        algo="md5",
        facts={"ref": refno},
    )
    return nid


async def test_the_reference_index_keeps_only_the_retention_period(redis: Redis) -> None:
    """A licence code can live for years; its index holds only what retention keeps."""
    retention_ms = 300
    first = await ingest(redis, retention_ms, "LIC-1", name="a")
    await asyncio.sleep(0.4)  # the first one is past its 300 ms retention when the second arrives
    second = await ingest(redis, retention_ms, "LIC-1", name="b")
    members = [m.decode() for m in await redis.zrange(k.idx_ref("LIC-1"), 0, -1)]
    assert members == [second] and first != second
    assert 0 < await redis.pttl(k.idx_ref("LIC-1")) <= retention_ms


async def sweep_with(settings: Settings, redis: Redis, session: aiohttp.ClientSession) -> dict[str, Any]:
    engine = Engine(redis, settings, session)
    walk = retention.Walk()
    ctx: dict[str, Any] = {"engine": engine, "relay_redis": redis, "retention_walk": walk}
    out: dict[str, Any] = {}
    # the SCAN walks a page per sweep: a few sweeps complete a round
    for _ in range(3):
        walk.next_at = 0.0  # a page on every sweep, not one a minute
        out = await jobs.sweep(ctx)
    return out


async def test_removed_endpoints_and_sources_expire_and_come_back(
    make_settings: Callable[..., Settings], redis: Redis, sink: Callable[..., Any]
) -> None:
    s: Sink = await sink()
    both = make_settings(
        endpoints=[{"name": "kept", "url": s.url}, {"name": "gone", "url": s.url}],
        delivery={"retention_days": 1, "retry_window_hours": 12},
    )
    async with aiohttp.ClientSession() as session:
        engine = Engine(redis, both, session)
        nid = await ingest(redis, both.delivery.retention_ms, "9")
        await engine.fanout(nid)
        await engine.start()
        await wait_for(lambda: redis.hget(k.delivery(nid, "gone"), "state"), 10)
        await wait_for(lambda: all_delivered(redis, nid, ("kept", "gone")), 10)
        await engine.stop()
        await redis.hset(k.STATS, mapping={"gone|delivered": 1, "kept|delivered": 1})

        only_kept = make_settings(
            endpoints=[{"name": "kept", "url": s.url, "sources": ["other"]}],
            delivery={"retention_days": 1, "retry_window_hours": 12},
            sources=[{"name": "other", "secret_key_env": "TCO_SECRET_KEY"}],
        )
        out = await sweep_with(only_kept, redis, session)
        assert out["removed_keys_expiring"] >= 0
        gone_keys = [key async for key in redis.scan_iter(match=f"{k.EP_PREFIX}gone:*")]
        assert gone_keys, "the removed endpoint had keys to bound"
        for key in gone_keys:
            if b":m:" not in key:
                assert 0 < await redis.pttl(key) <= only_kept.delivery.retention_ms, key
        for key in [key async for key in redis.scan_iter(match=f"{k.EP_PREFIX}kept:*")]:
            if b":m:" not in key:
                assert await redis.pttl(key) == -1, key
        # the source "default" is no longer configured: its index expires too
        assert 0 < await redis.pttl(k.idx_source("default")) <= only_kept.delivery.retention_ms

        # the endpoint comes back: its keys lose the expiry again
        await sweep_with(both, redis, session)
        for key in gone_keys:
            if b":m:" not in key and await redis.exists(key):
                assert await redis.pttl(key) == -1, key

        # once nothing of it is left, its counters go too; a configured endpoint's stay
        for key in gone_keys:
            await redis.delete(key)
        await sweep_with(only_kept, redis, session)
        assert await redis.hget(k.STATS, "gone|delivered") is None
        assert await redis.hget(k.STATS, "kept|delivered") == b"1"


async def all_delivered(redis: Redis, nid: str, eps: tuple[str, ...]) -> bool:
    return all([await redis.hget(k.delivery(nid, ep), "state") == b"delivered" for ep in eps])


async def test_the_sweeper_trims_by_redis_time_whatever_the_worker_clock(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings(
        endpoints=[], delivery={"retention_days": RETENTION_DAYS, "retry_window_hours": RETRY_WINDOW_HOURS}
    )
    nid = await ingest(redis, settings.delivery.retention_ms, "1")
    async with aiohttp.ClientSession() as session:
        # a worker clock an hour behind would keep everything; one an hour ahead would trim at once
        for offset in (-3600.0, 3600.0):
            engine = Engine(redis, settings, session, clock=lambda o=offset: __import__("time").time() + o)
            await jobs.sweep({"engine": engine, "relay_redis": redis})
            assert await redis.zscore(k.IDX_ALL, nid) is not None
        await asyncio.sleep(1.7)
        await jobs.sweep({"engine": Engine(redis, settings, session, clock=lambda: 0.0), "relay_redis": redis})
        assert await redis.zscore(k.IDX_ALL, nid) is None

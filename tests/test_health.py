"""relay/store/stats.py against a real redis-server seeded with the documented data model."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from config.settings import Settings
from relay import constants as k
from relay.admin.api import health as health_view
from relay.server import create_app
from relay.store.stats import health_report
from tests.support import RedisServer, free_port

NOW = int(time.time() * 1000)
EPS = [{"name": "a", "url": "http://127.0.0.1:9/hook"}, {"name": "b", "url": "http://127.0.0.1:9/other"}]


async def seed_minute(redis: Redis, ep: str, minutes_ago: int, now: int = NOW, **counts: int) -> None:
    key = k.ep_minute(ep, now // 60_000 - minutes_ago)
    for name, n in counts.items():
        await redis.hincrby(key, name, n)


async def seed(redis: Redis) -> None:
    await redis.zadd(k.ep_state("a", "pending"), {"n1": NOW - 120_000, "n2": NOW - 10_000})
    await redis.zadd(k.ep_state("a", "retrying"), {"n3": NOW - 200_000})
    await redis.zadd(k.ep_state("a", "in_flight"), {"n4": NOW - 1_000})
    await redis.zadd(k.ep_state("a", "delivered"), {"n5": NOW, "n6": NOW, "n7": NOW})
    await redis.zadd(k.ep_state("a", "failed"), {"n8": NOW})
    await redis.zadd(k.ep_state("b", "skipped"), {"n9": NOW})
    await seed_minute(redis, "a", 0, ok=3, fail=1)
    await seed_minute(redis, "a", 59, ok=1)
    await seed_minute(redis, "a", 60, fail=5, gaveup=2)
    await seed_minute(redis, "a", 1440, ok=100)  # one minute past the 24 h window
    await redis.hset(k.STATS, mapping={"a|last_ok": NOW - 5_000, "a|last_fail": NOW - 60_000, "a|delivered": 4})
    await redis.zadd(k.WORKERS, {"host:1": NOW - 4_000, "host:2": NOW - 31_000})
    await redis.zadd(k.QUEUE_NAME, {"fanout:x": NOW - 1_000})
    await redis.zadd(k.FANOUT, {"x": 7})


async def test_report_counts_rates_ages_workers_and_queue(redis: Redis, make_settings: Callable[..., Settings]
                                                          ) -> None:
    await seed(redis)
    report = await health_report(redis, make_settings(endpoints=EPS), NOW)

    a, b = report["endpoints"]["a"], report["endpoints"]["b"]
    assert (a["pending"], a["in_flight"], a["retrying"], a["delivered"], a["failed"]) == (2, 1, 1, 3, 1)
    assert a["last_hour"] == {"ok": 4, "fail": 1, "gaveup": 0, "failure_rate": 0.2}
    assert a["last_day"] == {"ok": 4, "fail": 6, "gaveup": 2, "failure_rate": 0.6}
    assert a["oldest_pending_age_s"] == 200.0  # the retrying one, older than both pending ones
    assert (a["last_ok"], a["last_fail"]) == (NOW - 5_000, NOW - 60_000)
    assert b["skipped"] == 1 and b["pending"] == 0
    assert b["last_hour"]["failure_rate"] is None and b["oldest_pending_age_s"] is None
    assert b["last_ok"] is None
    assert report["queue"] == {"arq": 1, "fanout": 1, "depth": 2, "oldest_age_s": 1.0}
    assert report["workers"]["alive"] == 1
    assert [(w["name"], w["alive"]) for w in report["workers"]["list"]] == [("host:1", True), ("host:2", False)]
    assert report["redis"]["reachable"] is True and report["redis"]["used_memory"] > 0
    assert report["redis"]["persistence"] == "none"  # the test server runs with --save "" --appendonly no
    assert report["status"] == "healthy" and report["reasons"] == []
    assert any("persistence is off" in w for w in report["warnings"])


async def test_old_pending_delivery_makes_it_unhealthy(redis: Redis, make_settings: Callable[..., Settings]
                                                       ) -> None:
    await seed(redis)
    settings = make_settings(endpoints=EPS, extra="[health]\nmax_pending_age = 150\n")
    report = await health_report(redis, settings, NOW)
    assert report["status"] == "unhealthy"
    assert report["reasons"] == ["endpoint a: a delivery has waited 200 s (limit 150 s)"]

    override = await health_report(redis, settings, NOW, max_pending_age=250)
    assert override["status"] == "healthy" and override["max_pending_age_s"] == 250


async def test_no_live_worker_is_unhealthy_and_names_the_last_one_seen(
        redis: Redis, make_settings: Callable[..., Settings]) -> None:
    await redis.zadd(k.WORKERS, {"host:9": NOW - 95_000})
    report = await health_report(redis, make_settings(endpoints=EPS), NOW)
    assert report["status"] == "unhealthy"
    assert report["reasons"] == ["no live worker (no heartbeat in the last 30 s; last seen: host:9 95 s ago)"]


async def test_old_fanout_job_makes_it_unhealthy(redis: Redis, make_settings: Callable[..., Settings]) -> None:
    await redis.zadd(k.WORKERS, {"host:1": NOW})
    await redis.zadd(k.QUEUE_NAME, {"fanout:y": NOW - 400_000})
    report = await health_report(redis, make_settings(endpoints=EPS), NOW)
    assert report["reasons"] == ["queue: a fan-out job has waited 400 s (limit 300 s)"]


async def test_unreachable_redis_is_a_reason_not_an_exception(make_settings: Callable[..., Settings]) -> None:
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    try:
        report = await health_report(dead, make_settings(endpoints=EPS), NOW)
    finally:
        await dead.aclose()
    assert report["status"] == "unhealthy"
    assert report["redis"]["reachable"] is False
    assert len(report["reasons"]) == 1 and report["reasons"][0].startswith("redis unreachable (ConnectionError")


async def _persistence(server: RedisServer, settings: Settings) -> str:
    client = Redis.from_url(server.url)
    try:
        report = await health_report(client, settings, int(time.time() * 1000))
        return str(report["redis"]["persistence"])
    finally:
        await client.aclose()


async def test_persistence_modes(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(endpoints=EPS)
    aof = RedisServer(appendonly=True).start()
    try:
        assert await _persistence(aof, settings) == "aof"
        client = Redis.from_url(aof.url)
        await client.config_set("save", "3600 1")
        await client.aclose()
        assert await _persistence(aof, settings) == "aof+rdb"
    finally:
        aof.cleanup()
    # managed Redis often disables CONFIG: the mode is then only known when AOF is on
    locked = RedisServer(extra=["--rename-command", "CONFIG", '""']).start()
    try:
        assert await _persistence(locked, settings) == "unknown"
    finally:
        locked.cleanup()


async def test_health_view_answers_the_report_as_json(aiohttp_client: Any, redis: Redis,
                                                      make_settings: Callable[..., Settings]) -> None:
    await redis.zadd(k.WORKERS, {"host:1": int(time.time() * 1000)})
    app = create_app(make_settings(endpoints=EPS))
    app.router.add_get("/api/health", health_view)  # the admin API registers it behind auth
    client = await aiohttp_client(app)
    resp = await client.get("/api/health")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "healthy"
    assert set(body["endpoints"]) == {"a", "b"}

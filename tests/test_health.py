"""relay/store/stats.py against a real redis-server seeded with the documented data model."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Redis

from config.settings import Settings
from relay import constants as k
from relay.admin.api import health as health_view
from relay.server import create_app
from relay.store.stats import health_report
from tests.support import RedisServer, free_port

NOW = int(time.time() * 1000)
HOUR = 3_600_000
EPS = [{"name": "a", "url": "http://127.0.0.1:9/hook"}, {"name": "b", "url": "http://127.0.0.1:9/other"}]


async def seed(redis: Redis) -> None:
    await redis.zadd(k.ep_state("a", "pending"), {"n1": NOW - 120_000, "n2": NOW - 10_000})
    await redis.zadd(k.ep_state("a", "retrying"), {"n3": NOW - 200_000})
    await redis.zadd(k.ep_state("a", "in_flight"), {"n4": NOW - 1_000})
    await redis.zadd(k.ep_state("a", "delivered"), {"n5": NOW, "n6": NOW - 2 * HOUR, "n7": NOW - 25 * HOUR})
    await redis.zadd(k.ep_state("a", "failed"), {"n8": NOW - 5 * HOUR})  # outside the 4 h window
    await redis.zadd(k.ep_state("b", "skipped"), {"n9": NOW})
    # receipt times: n3 has waited 500 s since receipt, though its last attempt was 200 s ago
    for nid, recv in (("n1", NOW - 120_000), ("n2", NOW - 10_000), ("n3", NOW - 500_000), ("n4", NOW - 2_000)):
        await redis.hset(k.notification(nid), "recv", recv)
        await redis.zadd(k.IDX_ALL, {nid: recv})
    await redis.hset(k.STATS, mapping={"a|last_ok": NOW - 5_000, "a|last_fail": NOW - 60_000, "a|delivered": 4})
    await redis.zadd(k.WORKERS, {"host:1": NOW - 4_000, "host:2": NOW - 31_000})
    await redis.zadd(k.QUEUE_NAME, {"fanout:x": NOW - 1_000, "cron:sweep:1": NOW - 100_000})
    await redis.zadd(k.FANOUT, {"x": 7})
    await redis.hset(k.notification("x"), "recv", NOW - 1_000)


async def test_report_counts_per_delivery_ages_workers_and_queue(
    redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    await seed(redis)
    report = await health_report(redis, make_settings(endpoints=EPS), NOW)

    a, b = report["endpoints"]["a"], report["endpoints"]["b"]
    assert (a["pending"], a["in_flight"], a["retrying"], a["delivered"], a["failed"]) == (2, 1, 1, 3, 1)
    # per delivery, by last change: n3 (retrying) and n5 in the last hour; n6, n8 too in 24 h; n7 is older
    assert (a["last_hour"]["failing"], a["last_hour"]["attempted"], a["last_hour"]["share"]) == (1, 2, 0.5)
    assert (a["last_day"]["failing"], a["last_day"]["attempted"], a["last_day"]["share"]) == (2, 4, 0.5)
    # "oldest waiting" counts from receipt: the retrying one, received before both pending ones
    assert a["oldest_pending_age_s"] == 500.0
    assert (a["last_ok"], a["last_fail"]) == (NOW - 5_000, NOW - 60_000)
    assert b["skipped"] == 1 and b["pending"] == 0
    assert b["last_hour"]["share"] is None and b["oldest_pending_age_s"] is None
    assert b["last_ok"] is None
    # what waits: 1 notification not yet routed, and a's 2 pending + 1 retrying deliveries; never the
    # ARQ queue's own entries (the sweeper's cron jobs, an older ingress's fan-out jobs)
    assert report["queue"] == {"fanout": 1, "deliveries": 3, "depth": 4, "oldest_age_s": 1.0}
    assert report["workers"]["alive"] == 1
    assert [(w["name"], w["alive"]) for w in report["workers"]["list"]] == [("host:1", True), ("host:2", False)]
    assert report["redis"]["reachable"] is True and report["redis"]["used_memory"] > 0
    assert report["redis"]["persistence"] == "none"  # the test server runs with --save "" --appendonly no
    # 1 of 2 deliveries retrying in the window is above 25 %, but 2 is under min_deliveries (10), and
    # the given-up n8 is outside the window: no problem
    assert report["status"] == "healthy" and report["problems"] == []
    assert any("persistence is off" in w for w in report["warnings"])


async def failing_of(redis: Redis, ep: str, failing: int, total: int, state: str = "failed") -> None:
    await redis.zadd(k.ep_state(ep, state), {f"f{i}": NOW - 60_000 - i for i in range(failing)})
    await redis.zadd(k.ep_state(ep, "delivered"), {f"d{i}": NOW - 30_000 for i in range(total - failing)})
    await redis.hset(k.delivery("f0", ep), mapping={"last": "HTTP 503", "updated": NOW - 60_000})


@pytest.mark.parametrize(
    ("failing", "total", "state", "status"),
    [
        (2, 10, "retrying", "healthy"),  # 2 of 10 notifications: 20 %, however many attempts each took
        (3, 10, "retrying", "degraded"),  # 30 % > 25 %
        (12, 40, "retrying", "degraded"),  # 12 of 40 waiting for a retry: 30 %
        (9, 40, "retrying", "healthy"),  # 22.5 %
    ],
)
async def test_failing_share_is_per_delivery(
    redis: Redis, make_settings: Callable[..., Settings], failing: int, total: int, state: str, status: str
) -> None:
    await redis.zadd(k.WORKERS, {"host:1": NOW})
    await failing_of(redis, "a", failing, total, state)
    report = await health_report(redis, make_settings(endpoints=EPS), NOW)
    assert report["status"] == status
    w = report["endpoints"]["a"]["window"]
    assert (w["failing"], w["attempted"]) == (failing, total)
    if status == "degraded":
        (p,) = report["problems"]
        assert p["kind"] == "endpoint_failing" and p["endpoint"] == "a" and p["url_host"] == "127.0.0.1:9"
        assert (p["failing"], p["attempted"], p["share"]) == (failing, total, round(failing / total, 4))
        assert p["last_error"] == "HTTP 503"
        assert p["since"] == datetime.fromtimestamp((NOW - 60_000 - failing + 1) // 1000, UTC).isoformat().replace(
            "+00:00", "Z"
        )
        assert f"{failing} of {total} deliveries" in p["message"]
    else:
        assert report["problems"] == []


async def test_per_endpoint_threshold_overrides_alerts(redis: Redis, make_settings: Callable[..., Settings]) -> None:
    await redis.zadd(k.WORKERS, {"host:1": NOW})
    await failing_of(redis, "a", 2, 10, "retrying")
    await failing_of(redis, "b", 2, 10, "retrying")
    eps = [{**EPS[0], "alert_threshold_percent": 10}, {**EPS[1], "alert_min_deliveries": 11}]
    report = await health_report(redis, make_settings(endpoints=eps, extra="[alerts]\nthreshold_percent = 15\n"), NOW)
    assert [(p["kind"], p["endpoint"], p["threshold_percent"]) for p in report["problems"]] == [
        ("endpoint_failing", "a", 10)
    ]
    assert report["endpoints"]["b"]["window"]["min_deliveries"] == 11


async def test_old_pending_delivery_makes_it_unhealthy(redis: Redis, make_settings: Callable[..., Settings]) -> None:
    await seed(redis)
    settings = make_settings(endpoints=EPS, extra="[health]\nmax_pending_age = 100\n")
    report = await health_report(redis, settings, NOW)
    assert report["status"] == "unhealthy"
    assert report["reasons"] == ["endpoint a: a delivery has waited 120 s to be attempted (limit 100 s)"]
    assert report["problems"][0]["kind"] == "backlog_too_old"

    override = await health_report(redis, settings, NOW, max_pending_age=250)
    assert override["status"] == "healthy" and override["max_pending_age_s"] == 250


async def test_no_live_worker_is_unhealthy_and_names_the_last_one_seen(
    redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    await redis.zadd(k.WORKERS, {"host:9": NOW - 95_000})
    report = await health_report(redis, make_settings(endpoints=EPS), NOW)
    assert report["status"] == "unhealthy"
    assert report["reasons"] == [
        "no live worker (no heartbeat in the last 30 s; last seen: host:9 95 s ago): "
        "nothing is delivered; start relay worker"
    ]
    assert report["problems"][0]["kind"] == "no_worker" and report["problems"][0]["last_worker"] == "host:9"


async def test_a_notification_long_unrouted_makes_it_unhealthy(
    redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    await redis.zadd(k.WORKERS, {"host:1": NOW})
    # relay:fanout is scored by seq: the age is its head's receipt time (y, seq 3; z came later)
    await redis.zadd(k.FANOUT, {"y": 3, "z": 4})
    await redis.hset(k.notification("y"), "recv", NOW - 400_000)
    await redis.hset(k.notification("z"), "recv", NOW - 1_000)
    report = await health_report(redis, make_settings(endpoints=EPS), NOW)
    # what waits is a notification in relay:fanout (issue 26: no fan-out job any more)
    assert report["reasons"] == ["fan-out: a notification has waited 400 s to be routed to its endpoints (limit 300 s)"]
    assert report["problems"][0]["queue"] == "fanout"
    assert report["status"] == "unhealthy"
    assert report["queue"]["oldest_age_s"] == 400.0


async def test_the_schedulers_own_jobs_are_not_a_backlog(redis: Redis, make_settings: Callable[..., Settings]) -> None:
    """queue.oldest_age_s read the head of ARQ's queue, where the sweeper's cron jobs wait too: nothing to
    route, depth 0, and yet an age, and after 300 s backlog_too_old (a cron job
    left behind by a worker that stopped, say)."""
    await redis.zadd(k.WORKERS, {"host:1": NOW})
    await redis.zadd(k.QUEUE_NAME, {"cron:sweep:1": NOW - 400_000})
    report = await health_report(redis, make_settings(endpoints=EPS), NOW)
    assert report["queue"] == {"fanout": 0, "deliveries": 0, "depth": 0, "oldest_age_s": None}
    assert report["problems"] == [] and report["status"] == "healthy"


async def test_unreachable_redis_is_a_problem_not_an_exception(make_settings: Callable[..., Settings]) -> None:
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    try:
        report = await health_report(dead, make_settings(endpoints=EPS), NOW)
    finally:
        await dead.aclose()
    assert report["status"] == "unhealthy"
    assert report["redis"]["reachable"] is False
    (problem,) = report["problems"]
    assert problem["kind"] == "redis_unreachable" and problem["error"].startswith("ConnectionError")


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


async def test_health_view_answers_the_report_as_json(
    aiohttp_client: Any, redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    await redis.zadd(k.WORKERS, {"host:1": int(time.time() * 1000)})
    app = create_app(make_settings(endpoints=EPS))
    app.router.add_get("/api/health", health_view)  # the admin API registers it behind auth
    client = await aiohttp_client(app)
    resp = await client.get("/api/health")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "healthy"
    assert set(body["endpoints"]) == {"a", "b"}


async def test_a_given_up_delivery_is_failing_whatever_min_deliveries_says(
    redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    """Issue 23: min_deliveries damps only the share still retrying; one unresolved given-up delivery
    in the window is a problem, until a delivered resend resolves it (or it leaves the window)."""
    await redis.zadd(k.WORKERS, {"host:1": NOW})
    await failing_of(redis, "a", 1, 40)  # 1 of 40 (2.5 %), 39 delivered
    report = await health_report(redis, make_settings(endpoints=EPS), NOW)
    assert report["status"] == "degraded"
    (p,) = report["problems"]
    assert (p["kind"], p["endpoint"], p["causes"], p["failed"]) == ("endpoint_failing", "a", ["given_up"], 1)
    assert report["endpoints"]["a"]["failing"] is True
    # resolved by a delivered resend: it leaves the failed index for the resolved one
    await redis.zrem(k.ep_state("a", "failed"), "f0")
    await redis.zadd(k.ep_state("a", k.RESOLVED), {"f0": NOW - 60_000})
    report = await health_report(redis, make_settings(endpoints=EPS), NOW)
    assert report["status"] == "healthy" and report["problems"] == []


async def test_a_serial_head_retrying_is_failing_at_once_and_names_what_it_holds_back(
    redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    await redis.zadd(k.WORKERS, {"host:1": NOW})
    eps = [{**EPS[0], "concurrent": False}, {**EPS[1], "concurrent": True}]
    for ep in ("a", "b"):  # the same figures on a serial and a concurrent endpoint
        await redis.zadd(k.ep_queue(ep), {"h": 1, "x": 2, "y": 3})
        await redis.zadd(k.ep_state(ep, "retrying"), {"h": NOW - 5_000})
        await redis.zadd(k.ep_state(ep, "pending"), {"x": NOW - 9_000, "y": NOW - 8_000})
        await redis.hset(
            k.delivery("h", ep),
            mapping={"state": "retrying", "attempts": 1, "last": "HTTP 500", "updated": NOW - 5_000},
        )
        await redis.rpush(k.attempts("h", ep), json.dumps({"n": 1, "at": NOW - 5_000, "outcome": "retry"}))
    report = await health_report(redis, make_settings(endpoints=eps), NOW)
    (p,) = report["problems"]
    assert (p["kind"], p["endpoint"], p["causes"], p["held_back"], p["last_error"]) == (
        "endpoint_failing",
        "a",
        ["head_retrying"],
        2,
        "HTTP 500",
    )
    assert "holding back 2 notifications behind it; last error HTTP 500" in p["message"]
    assert report["endpoints"]["b"]["failing"] is False  # concurrent: 1 retrying is under min_deliveries
    # on its next attempt (in flight, attempt 2) it is still the same blocked head
    await redis.hset(k.delivery("h", "a"), mapping={"state": "in_flight", "attempts": 2})
    report = await health_report(redis, make_settings(endpoints=eps), NOW)
    assert [p["endpoint"] for p in report["problems"]] == ["a"]
    # a head on its first attempt has not failed yet
    await redis.hset(k.delivery("h", "a"), mapping={"state": "in_flight", "attempts": 1})
    await redis.zrem(k.ep_state("a", "retrying"), "h")
    report = await health_report(redis, make_settings(endpoints=eps), NOW)
    assert report["problems"] == []


async def test_silent_source_counts_from_its_last_notification_or_from_when_it_was_watched(
    redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    await redis.zadd(k.WORKERS, {"host:1": NOW})
    sources = [{"name": "default", "secret_key_env": "TCO_SECRET_KEY", "expect_within_hours": 0.5}]
    settings = make_settings(endpoints=EPS, sources=sources)
    # never received, never watched: nothing to count from yet
    assert (await health_report(redis, settings, NOW))["problems"] == []
    await redis.set(k.source_watched("default"), NOW - 31 * 60_000)
    report = await health_report(redis, settings, NOW)
    (p,) = report["problems"]
    assert (p["kind"], p["source"], p["last_at"], p["expect_within_hours"]) == ("source_silent", "default", None, 0.5)
    # a resend is the operator's, not 2Checkout's: it does not end the silence
    await redis.zadd(k.idx_source("default"), {"ipn_1": NOW - 40 * 60_000, "ipn_1~r1": NOW - 1_000})
    (p,) = (await health_report(redis, settings, NOW))["problems"]
    assert p["last_at"] == datetime.fromtimestamp((NOW - 40 * 60_000) // 1000, UTC).isoformat().replace("+00:00", "Z")
    await redis.zadd(k.idx_source("default"), {"ipn_2": NOW - 29 * 60_000})
    report = await health_report(redis, settings, NOW)
    assert report["status"] == "healthy" and report["sources"]["default"]["silent"] is False


async def test_since_is_when_the_first_failing_delivery_first_failed_and_waiting_counts_from_receipt(
    redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    """A delivery received 9 minutes ago, failing since its first attempt then, retried 12 s ago: the
    incident began 9 minutes ago and it has waited 9 minutes (not 12 s, its last change)."""
    await redis.zadd(k.WORKERS, {"host:1": NOW})
    await redis.hset(k.notification("n1"), "recv", NOW - 540_000)
    await redis.zadd(k.IDX_ALL, {"n1": NOW - 540_000})
    await redis.zadd(k.ep_state("a", "retrying"), {"n1": NOW - 12_000})
    await redis.hset(
        k.delivery("n1", "a"), mapping={"state": "retrying", "attempts": 4, "last": "timeout", "updated": NOW - 12_000}
    )
    for n, at in enumerate((NOW - 539_000, NOW - 300_000, NOW - 60_000, NOW - 12_000), 1):
        await redis.rpush(k.attempts("n1", "a"), json.dumps({"n": n, "at": at, "outcome": "retry"}))
    eps = [{**EPS[0], "concurrent": False}, EPS[1]]
    await redis.zadd(k.ep_queue("a"), {"n1": 1})
    report = await health_report(redis, make_settings(endpoints=eps), NOW)
    (p,) = report["problems"]
    assert p["since"] == datetime.fromtimestamp((NOW - 539_000) // 1000, UTC).isoformat().replace("+00:00", "Z")
    assert p["oldest_waiting_s"] == 540.0 and p["held_back"] == 0


async def test_accepted_since_the_last_refusal_is_counted_up_to_a_cap(
    redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    """The latest refusal's record lives 49 h: counting every notification accepted since it walked a
    day of traffic in health.lua at every evaluation (60 ms of Redis time at 100,000 a day). Only the
    first 5 decide anything, so the count stops at 1,000."""
    await redis.zadd(k.WORKERS, {"host:1": NOW})
    await redis.hset(
        k.source_lastrej("default"),
        mapping={
            "at": NOW - 20 * HOUR,
            "first": NOW - 20 * HOUR,
            "reason": "signature_mismatch",
            "detail": "x",
            "channel": "ipn",
        },
    )
    await redis.zadd(k.idx_source("default"), {f"ipn_{n}": NOW - 19 * HOUR + n for n in range(2500)})
    report = await health_report(redis, make_settings(endpoints=EPS), NOW)
    row = report["sources"]["default"]
    assert row["accepted_since_last"] == 1000 and row["rejecting"] is False and report["status"] == "healthy"


def test_a_silence_watch_must_be_shorter_than_the_retention(make_settings: Callable[..., Settings]) -> None:
    """source_silent reads the newest notification in the source's index, which is trimmed to
    delivery.retention_days: a monthly shop's expect_within_hours = 840 with the default 30 days found
    the index empty 30 days after the last notification and counted from the start of the watch,
    raising source_silent about a source heard from 31 days ago. The config says so when it loads."""
    from config.settings import ConfigError

    monthly = [{"name": "default", "secret_key_env": "TCO_SECRET_KEY", "expect_within_hours": 840}]
    with pytest.raises(
        ConfigError,
        match=r"source 'default': expect_within_hours = 840 must be shorter than "
        r"delivery\.retention_days \(now 30, 720 h\)",
    ):
        make_settings(endpoints=EPS, sources=monthly)
    settings = make_settings(endpoints=EPS, sources=monthly, delivery={"retention_days": 40})
    assert settings.sources["default"].expect_within_hours == 840


async def test_a_full_redis_is_redis_unreachable(redis: Redis, make_settings: Callable[..., Settings]) -> None:
    """At maxmemory with noeviction Redis answers reads and refuses every write: notifications are
    answered 503 and workers cannot start, yet health said only no_worker ("start relay worker"), or
    healthy while the workers' heartbeats were fresh, and never why. It is redis_unreachable, with the
    cause, as the alert relay serve sends about it."""
    await redis.zadd(k.WORKERS, {"host:1": NOW})
    settings = make_settings(endpoints=EPS)
    assert (await health_report(redis, settings, NOW))["status"] == "healthy"
    await redis.config_set("maxmemory-policy", "noeviction")
    await redis.config_set("maxmemory", 1)
    try:
        report = await health_report(redis, settings, NOW)
    finally:
        await redis.config_set("maxmemory", 0)
    assert report["status"] == "unhealthy" and report["redis"]["full"] is True
    (p,) = report["problems"]
    assert p["kind"] == "redis_unreachable" and "at maxmemory with maxmemory-policy noeviction" in p["error"]
    assert "every write is refused" in p["message"]


async def test_a_pause_cut_short_is_said_so(redis: Redis, make_settings: Callable[..., Settings]) -> None:
    """A pause whose pages stopped half-way (the CLI killed after its first page, as a fault run did with
    250 waiting: 100 paused, 149 pending, the head retrying) leaves the endpoint paused with work pending
    that nothing will send. Health said only "a delivery has waited … behind its head delivery retrying
    (connect_error)", pointing at the endpoint; it says the pause did not finish, and what to run."""
    await redis.zadd(k.WORKERS, {"host:1": NOW})
    await redis.hset(k.PAUSED, "a", json.dumps({"at": NOW - 60_000, "by": "cli"}))
    await redis.zadd(k.ep_state("a", "paused"), {"p1": NOW - 60_000})
    await redis.zadd(k.ep_state("a", "pending"), {"n1": NOW - 60_000, "n2": NOW - 59_000})
    report = await health_report(redis, make_settings(endpoints=EPS), NOW, max_pending_age=30)
    (p,) = report["problems"]
    assert p["kind"] == "backlog_too_old" and p["endpoint"] == "a"
    assert p["message"].endswith(
        ": a is paused, and its pause or resume did not finish (2 deliveries left pending or retrying, which "
        "a paused endpoint never sends): run relay endpoints pause a again, or resume it"
    ), p["message"]


async def test_a_pause_cut_short_with_only_retrying_work_left_is_said_so(
    redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    """An endpoint is paused because it fails, so what it has waiting is mostly retrying: a pause cut
    short can leave nothing pending, only retrying deliveries that a paused endpoint never sends. Health
    measured the wait by the pending ones alone, so it said nothing (and a paused endpoint is never
    endpoint_failing): healthy, with the deliveries stuck until someone looked."""
    await redis.zadd(k.WORKERS, {"host:1": NOW})
    await redis.hset(k.PAUSED, "a", json.dumps({"at": NOW - 60_000, "by": "cli"}))
    await redis.zadd(k.ep_state("a", "paused"), {"p1": NOW - 60_000})
    await redis.zadd(k.ep_state("a", "retrying"), {"r1": NOW - 50_000, "r2": NOW + 10_000})
    report = await health_report(redis, make_settings(endpoints=EPS), NOW, max_pending_age=30)
    (p,) = report["problems"]
    assert p["kind"] == "backlog_too_old" and p["endpoint"] == "a" and p["oldest_age_s"] == 60
    assert p["message"].endswith(
        ": a is paused, and its pause or resume did not finish (2 deliveries left pending or retrying, which "
        "a paused endpoint never sends): run relay endpoints pause a again, or resume it"
    ), p["message"]
    # within the limit of the pause, it is a pause still under way: nothing said
    report = await health_report(redis, make_settings(endpoints=EPS), NOW, max_pending_age=90)
    assert report["problems"] == []


async def test_a_full_redis_does_not_say_start_relay_worker(
    redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    """A full Redis refuses the workers' heartbeats as every other write, so running workers look gone
    after a few seconds. Health said no_worker beside redis_unreachable ("nothing is delivered; start
    relay worker") while two workers ran (a fault run: maxmemory reached under load). A stale heartbeat
    then says nothing of the workers: the one problem is the full Redis, and a note says why no
    worker is seen."""
    await redis.zadd(k.WORKERS, {"host:1": NOW - 60_000})  # beat last a minute ago: Redis refused the rest
    settings = make_settings(endpoints=EPS)
    await redis.config_set("maxmemory-policy", "noeviction")
    await redis.config_set("maxmemory", 1)
    try:
        report = await health_report(redis, settings, NOW)
    finally:
        await redis.config_set("maxmemory", 0)
    assert [p["kind"] for p in report["problems"]] == ["redis_unreachable"], report["reasons"]
    assert not any("start relay worker" in reason for reason in report["reasons"])
    (note,) = [n for n in report["notes"] if n["kind"] == "workers_unknown"]
    assert "refuses the workers' heartbeats" in note["message"]
    # once Redis takes writes again, a stale heartbeat is no_worker as before
    report = await health_report(redis, settings, NOW)
    assert [p["kind"] for p in report["problems"]] == ["no_worker"]

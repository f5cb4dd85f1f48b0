"""Operator actions while work flows (issue 21): each decides from Redis, never writes a delivery that
retention expired, and a bulk action says exactly what it did."""

# the fixtures are imported from test_api, so test arguments "redefine" them by design

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from arq.worker import Worker
from redis.asyncio import Redis

from config.settings import Settings, load_settings
from relay import constants as k
from relay.server import create_app
from relay.store import audit
from relay.store.control import REMOVED_PAGE as PAGE
from relay.store.control import Control
from tests.support import TEST_ENV, RedisServer, wait_for, write_config
from tests.test_api import (  # noqa: F401  (fixtures used by name)
    RefSink,
    api_settings,
    client,
    ingest,
    settled,
    sinks,
    worker,
)
from tests.test_control import refs, workers  # noqa: F401  (a fixture, used by name)
from tests.test_delivery import ep, in_state
from tests.test_delivery import post as post_ipn
from tests.test_resend import post

ORIGIN = audit.Origin("api", "127.0.0.9")


async def test_bulk_resend_by_filter_twice_while_the_endpoint_is_paused_queues_one_resend(
    client: TestClient, redis: Redis, worker: Worker, sinks: tuple[RefSink, RefSink]
) -> None:
    billing, _ = sinks
    billing.failing = {"100"}
    nid = await ingest(client, "100")
    await settled(redis, nid)
    billing.failing = set()
    status, _ = await post(client, "/api/endpoints/billing/pause")
    assert status == 200
    request = {"filter": {"endpoint": "billing", "state": "failed"}}
    status, doc = await post(client, "/api/resend", request)
    assert status == 202 and doc["count"] == 1, doc
    first = doc["ids"][0]
    await wait_for(lambda: in_state(redis, first, "billing", "paused"), 10)
    # the resend waits, paused: it already carries the notification to billing
    status, doc = await post(client, "/api/resend", request)
    assert status == 202 and doc["count"] == 0 and doc["skipped_count"] == 1, doc
    assert "already resent" in doc["skipped"][0]["reason"]
    status, _ = await post(client, "/api/endpoints/billing/resume")
    assert status == 200
    await wait_for(lambda: in_state(redis, first, "billing", "delivered"), 10)
    assert len([h for h, _ in billing.received if h.get("Relay-Resend") == "true"]) == 1
    assert await redis.zcard(k.resends(nid)) == 1


# -- in-process workers on a config of the test's own ----------------------------------------------


async def test_retry_now_keeps_serial_order_when_the_callers_config_says_concurrent(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    sink: Callable[..., Any],
    redis: Redis,
    workers: Callable[..., Any],
    tmp_path: Path,
    redis_server: RedisServer,
) -> None:
    """The workers run x serial; the operator's file was edited to concurrent but not reloaded."""
    s = await sink([503])
    settings = make_settings(endpoints=[ep("x", s, retry_delays=[60, 60])])
    client: TestClient = await aiohttp_client(create_app(settings))
    await workers(settings, 1)
    nids = [await post_ipn(client, str(i)) for i in range(3)]
    await wait_for(lambda: in_state(redis, nids[0], "x", "retrying"), 15)
    s.script = [200]
    edited = load_settings(
        write_config(tmp_path / "edited.toml", endpoints=[ep("x", s, concurrent=True)]),
        {**TEST_ENV, "REDIS_URL": redis_server.url},
    )
    result = await Control(redis, edited).retry(ORIGIN, endpoint="x")
    assert result["count"] == 1 and result["head"] == nids[0], result
    for nid in nids:
        await wait_for(lambda nid=nid: in_state(redis, nid, "x", "delivered"), 15)
    assert refs(s) == [0, 0, 1, 2]


async def test_resume_after_retention_expired_a_paused_delivery_writes_no_ghost(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    sink: Callable[..., Any],
    redis: Redis,
    workers: Callable[..., Any],
) -> None:
    s = await sink()
    settings = make_settings(endpoints=[ep("x", s)])
    client: TestClient = await aiohttp_client(create_app(settings))
    await workers(settings, 1)
    control = Control(redis, settings)
    await control.pause("x", ORIGIN)
    nid = await post_ipn(client, "1")
    await wait_for(lambda: in_state(redis, nid, "x", "paused"), 15)
    # paused longer than retention: the delivery expired, its index entries remain until trimmed
    await redis.delete(k.delivery(nid, "x"), k.attempts(nid, "x"), k.notification(nid))
    assert (await control.resume("x", ORIGIN))["count"] == 0
    assert not await redis.exists(k.delivery(nid, "x"))
    for state in ("paused", "pending"):
        assert not await redis.zcard(k.ep_state("x", state)), state
    assert not await redis.zcard(k.ep_queue("x"))
    # and the same for pause and retry-all over an index entry whose delivery is gone
    await redis.zadd(k.ep_state("x", "retrying"), {nid: 1})
    await redis.zadd(k.ep_state("x", "pending"), {nid: 1})
    assert (await control.retry(ORIGIN, endpoint="x"))["count"] == 0
    assert (await control.pause("x", ORIGIN))["count"] == 0
    assert not await redis.exists(k.delivery(nid, "x"))
    assert not await redis.zcard(k.ep_state("x", "retrying")) and not await redis.zcard(k.ep_state("x", "pending"))


async def test_cancel_and_retry_across_endpoints_say_exactly_what_was_done(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    sink: Callable[..., Any],
    redis: Redis,
    workers: Callable[..., Any],
) -> None:
    """A second operator acts on one endpoint between the first one's look and act: the first one's
    action is done where it still can be, and its answer names the endpoint it could not act on."""
    a, b = await sink([500]), await sink([500])
    settings = make_settings(
        endpoints=[ep(name, s, retry_delays=[60, 60], concurrent=True) for name, s in (("a", a), ("b", b))]
    )
    client: TestClient = await aiohttp_client(create_app(settings))
    await workers(settings, 1)
    first, second = await post_ipn(client, "1"), await post_ipn(client, "2")
    for nid in (first, second):
        for name in ("a", "b"):
            await wait_for(lambda nid=nid, name=name: in_state(redis, nid, name, "retrying"), 15)

    class SecondOperatorMeanwhile(Control):
        async def _states(self, nid: str, eps: list[str]) -> dict[str, str]:
            states = await super()._states(nid, eps)
            await Control(redis, settings).cancel(nid, audit.Origin("cli", "other@test"), endpoint="b")
            return states

    with_race = SecondOperatorMeanwhile(redis, settings)
    result = await with_race.retry(ORIGIN, nid=first)
    assert result["endpoints"] == {"a": 1} and "b is cancelled, not retrying" in result["refused"]["b"], result
    result = await with_race.cancel(second, ORIGIN)
    assert result["cancelled"] == ["a"] and "already cancelled" in result["refused"]["b"], result
    assert await redis.hget(k.delivery(second, "a"), "cancelled_by") == ORIGIN.label().encode()
    entries = [(e["action"], e["target"]) for e in await audit.read(redis)]
    assert ("cancel", f"{second}:a") in entries and ("retry", f"{first}:a") in entries


async def test_resolving_never_re_creates_a_failed_delivery_that_retention_expired(redis: Redis) -> None:
    """resolve.lua marks an original resolved by its delivered resend: an original whose delivery expired
    (its index entry not trimmed yet) must not come back as a hash with no expiry."""
    from relay.store.resolve import resolve

    orig, resend = "ipn_" + "a" * 24, "ipn_" + "a" * 24 + "~r1"
    secs, micros = await redis.time()
    now = secs * 1000 + micros // 1000
    await redis.zadd(k.ep_resent("x"), {orig: now})
    await redis.zadd(k.ep_state("x", "failed"), {orig: now})
    await redis.zadd(k.resends(orig), {resend: now})
    await redis.hset(k.delivery(resend, "x"), mapping={"state": "delivered"})
    assert await resolve(redis, ["x"]) == 0
    assert not await redis.exists(k.delivery(orig, "x"))
    assert not await redis.zcard(k.ep_state("x", "failed")) and not await redis.zcard(k.ep_resent("x"))


async def _evalsha_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_cancelling_a_removed_endpoints_backlog_never_runs_one_long_script(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """A removed endpoint's work is cancelled at the reload, at every worker start and before a re-add:
    one script walked its whole backlog and held Redis (the ingress, every worker) for as long. It goes
    in pages now; what was routed after a re-add (a higher seq) is passed over, never cancelled, even
    where it sorts first; a delivery still leased stays in flight."""
    name, n, upto = "gone", 3 * PAGE + 7, 10_000
    settings = make_settings(endpoints=[])
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(n):
            nid = f"ipn_{i:024x}"
            later = i % 3 == 0  # a third routed after the re-add, interleaved, some sorting first
            state = ("pending", "retrying", "paused")[i % 3] if not later else "pending"
            pipe.hset(k.delivery(nid, name), mapping={"state": state, "seq": upto + 1 + i if later else i})
            pipe.zadd(k.ep_state(name, state), {nid: i})
            pipe.zadd(k.ep_queue(name), {nid: i})
        pipe.hset(k.delivery("ipn_" + "f" * 24, name), mapping={"state": "in_flight", "seq": 1, "lease": 2**50})
        pipe.zadd(k.ep_state(name, "in_flight"), {"ipn_" + "f" * 24: 1})
        await pipe.execute()
    later = sum(1 for i in range(n) if i % 3 == 0)
    before = await _evalsha_calls(redis)
    count, left = await Control(redis, settings).cancel_removed(name, upto, ORIGIN)
    calls = await _evalsha_calls(redis) - before
    assert (count, left) == (n - later, 1)
    assert calls >= n // PAGE, f"{calls} script calls walked {n} deliveries"
    assert await redis.zcard(k.ep_state(name, "cancelled")) == n - later
    assert await redis.zcard(k.ep_state(name, "pending")) == later
    assert await redis.zcard(k.ep_queue(name)) == later
    assert await redis.zcard(k.ep_state(name, "in_flight")) == 1
    # one audit entry for the whole cancel, with its total
    entries = [e for e in await redis.lrange(k.AUDIT, 0, -1) if b"endpoint removed" in e]
    assert len(entries) == 1 and f'"count":{n - later}'.encode() in entries[0], entries

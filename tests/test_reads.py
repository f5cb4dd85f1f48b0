"""Reads that stay cheap as the store grows (issue 26): health's accepted count from counters, the state
listing across endpoints in pages, and endpoint-wide control actions in pages that a rerun finishes."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from config.settings import Settings
from relay import constants as k
from relay.server import create_app
from relay.store import audit, queries
from relay.store.connection import clock_ms
from relay.store.control import CONTROL_PAGE, Control
from relay.store.resend import Resender
from relay.store.stats import health_report
from tests.support import ipn_fields, signed_body
from tests.test_delivery import FORM, post

ORIGIN = audit.Origin("api", "127.0.0.9")
MIN = 60_000
ENDPOINTS = ("a", "b", "c")


def _eps(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "url": f"http://127.0.0.1:9/{n}", "concurrent": True} for n in names]


async def _walked(redis: Redis, source: str, from_ms: int) -> int:
    """What health.lua counted before issue 26: the source index from ``from_ms``, resends left out."""
    ids = await redis.zrangebyscore(k.idx_source(source), from_ms, "+inf")
    return sum(1 for nid in ids if b"~" not in nid)


async def test_accepted_counters_give_the_figures_the_index_walk_gave(
    aiohttp_client: Any, make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings(endpoints=_eps("a"))
    client: TestClient = await aiohttp_client(create_app(settings))
    nids = [await post(client, str(230_000_000 + i)) for i in range(12)]
    for i in range(3):  # refused: a bad signature
        resp = await client.post("/ipn", data=signed_body(ipn_fields(str(i)), secret="wrong"), headers=FORM)
        assert resp.status == 400
    assert await post(client, str(230_000_000)) == nids[0]  # a duplicate is stored once, counted once
    await Resender(redis, settings).one(nids[1], endpoint="a", origin=ORIGIN)  # a resend is never counted
    now = await clock_ms(redis)
    minutes = round(settings.alerts.source_window_minutes)
    assert await redis.zcard(k.idx_source("default")) == 13
    # evaluated later and later: the window's minutes, as both ways count them, until it has passed
    for later in (0, 5 * MIN, (minutes - 1) * MIN, minutes * MIN, 3 * 3_600_000):
        at = now + later
        first_minute = (at // MIN - minutes + 1) * MIN
        src = (await health_report(redis, settings, at))["sources"]["default"]
        assert src["accepted"] == await _walked(redis, "default", first_minute), later
        assert src["accepted_since_last"] == 0  # every one stored before the refusals
        if later == 0:
            assert (src["accepted"], src["refused"]) == (12, 3)
        if later >= minutes * MIN:
            assert (src["accepted"], src["refused"]) == (0, 0)
    # retention: every counter expires (kept 2 h, longer than the longest window)
    keys = [key async for key in redis.scan_iter("relay:src:default:acc:*")]
    assert sum([int(await redis.get(key)) for key in keys]) == 12
    for key in keys:
        assert 0 < await redis.pttl(key) <= k.SOURCE_ACCEPTED_TTL_MS


# -- the state listing across endpoints --------------------------------------------------------


async def _seed_deliveries(redis: Redis, n: int, at: Callable[[int, str], int | None]) -> list[str]:
    """``n`` notifications routed to ENDPOINTS; ``at(i, ep)`` is when delivery i to ep became pending
    (None: delivered instead). Written as route.lua and the state changes leave them."""
    nids = [f"ipn_{i:024x}" for i in range(n)]
    async with redis.pipeline(transaction=False) as pipe:
        for i, nid in enumerate(nids):
            pipe.hset(
                k.notification(nid),
                mapping={"recv": 1_000 + i, "channel": "ipn", "source": "default", "eps": ",".join(ENDPOINTS)},
            )
            pipe.zadd(k.IDX_ALL, {nid: 1_000 + i})
            pipe.zadd(k.idx_channel("ipn"), {nid: 1_000 + i})
            for ep in ENDPOINTS:
                when = at(i, ep)
                state = "pending" if when is not None else "delivered"
                pipe.hset(k.delivery(nid, ep), mapping={"state": state, "updated": when or 5, "mode": "concurrent"})
                pipe.zadd(k.ep_state(ep, state), {nid: when or 5})
        await pipe.execute()
    return nids


async def _set_state(redis: Redis, nid: str, ep: str, state: str, at: int) -> None:
    old = (await redis.hget(k.delivery(nid, ep), "state")).decode()  # type: ignore[misc]
    await redis.zrem(k.ep_state(ep, old), nid)
    await redis.zadd(k.ep_state(ep, state), {nid: at})
    await redis.hset(k.delivery(nid, ep), mapping={"state": state, "updated": at})  # type: ignore[misc]


async def test_a_state_across_endpoints_lists_each_once_while_deliveries_change_between_pages(redis: Redis) -> None:
    # scores with many ties (a resume gives a whole page one score), each endpoint its own (c's the
    # newest); one in seven notifications is pending nowhere
    base = await clock_ms(redis) - 3_600_000

    def at(i: int, ep: str) -> int | None:
        if i % 7 == 0:
            return None
        return base + (i // 25) * 10 + ENDPOINTS.index(ep) * (i % 3)

    nids = await _seed_deliveries(redis, 300, at)
    f = queries.Filters(state="pending")
    listed: list[str] = []
    touched: set[str] = set()
    cursor: str | None = None
    for _ in range(100):
        page = await queries.scan(redis, f, limit=20, cursor=cursor, endpoints=list(ENDPOINTS))
        assert page.index == "xstate" and len(page.items) <= 20
        listed += [row.nid for row in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
        # between pages, as workers would: the last one listed leaves pending where it was listed (its
        # newest entry: it is still pending, lower down, on a and b), one not yet listed leaves too,
        # and one listed becomes pending again on b (scored now)
        later = [nid for nid in nids if nid not in listed and nids.index(nid) % 7]
        for nid in (listed[-1], *later[:1]):
            touched.add(nid)
            await _set_state(redis, nid, "c", "delivered", await clock_ms(redis))
        touched.add(listed[0])
        await _set_state(redis, listed[0], "b", "pending", await clock_ms(redis))
    assert cursor is None
    assert len(listed) == len(set(listed)), "no notification twice"
    # every one stays pending on a, unchanged: each is listed, even one whose c left pending before
    # the walk reached it
    assert {nid for i, nid in enumerate(nids) if i % 7} == set(listed), "none skipped"
    assert len(touched) > 10
    assert not {nid for i, nid in enumerate(nids) if i % 7 == 0} & set(listed)
    # a page looks at the entries at the top of each index: a handful here, never the ~700 of the backlog
    first = await queries.scan(redis, f, limit=5, endpoints=list(ENDPOINTS))
    assert len(first.items) == 5 and first.scanned <= 5 + 2


async def test_a_state_across_endpoints_never_skips_one_still_in_the_state_nor_lists_one_twice(redis: Redis) -> None:
    # every c entry above every a and b entry (c was resumed later): the first pages list at c
    base = await clock_ms(redis) - 3_600_000
    nids = await _seed_deliveries(redis, 60, lambda i, ep: base + i * 10 + (10_000 if ep == "c" else 0))
    f = queries.Filters(state="pending")
    eps = list(ENDPOINTS)
    page = await queries.scan(redis, f, limit=10, endpoints=eps)
    listed = [row.nid for row in page.items]
    assert listed == nids[::-1][:10]
    # between pages a worker takes c's delivery of one listed (still pending lower on a and b: not listed
    # again) and of one not listed yet (still pending on a and b the whole time: listed later)
    unlisted = nids[20]
    for nid in (listed[0], unlisted):
        await _set_state(redis, nid, "c", "in_flight", await clock_ms(redis))
    cursor = page.next_cursor
    assert cursor is not None
    # and one whose c delivery changes in the very millisecond the first page was read, after it
    began = json.loads(base64.urlsafe_b64decode(cursor + "==="))[5]
    await _set_state(redis, nids[30], "c", "pending", began)
    for _ in range(20):
        if cursor is None:
            break
        page = await queries.scan(redis, f, limit=10, cursor=cursor, endpoints=eps)
        listed += [row.nid for row in page.items]
        cursor = page.next_cursor
    assert cursor is None
    assert len(listed) == len(set(listed)), "no notification twice"
    assert set(listed) == set(nids), "every one pending throughout is listed"


async def test_a_state_across_endpoints_under_random_changes_between_pages(redis: Redis) -> None:
    """Whatever changes between pages: one with a delivery pending and untouched for the whole listing
    is listed once, none is listed twice, and none that never was pending is listed."""
    for seed in range(12):
        await redis.flushdb()
        rnd = random.Random(seed)
        base = await clock_ms(redis) - 3_600_000

        def at(i: int, ep: str, rnd: random.Random = rnd, base: int = base) -> int | None:
            return None if rnd.random() < 0.3 else base + rnd.randrange(0, 400, 5)

        nids = await _seed_deliveries(redis, 80, at)
        pending = {(nid, ep) for nid in nids for ep in ENDPOINTS if await redis.zscore(k.ep_state(ep, "pending"), nid)}
        ever = {nid for nid, _ in pending}
        touched: set[tuple[str, str]] = set()
        listed: list[str] = []
        cursor: str | None = None
        for _ in range(100):
            page = await queries.scan(
                redis,
                queries.Filters(state="pending"),
                limit=rnd.choice((1, 3, 7)),
                cursor=cursor,
                endpoints=list(ENDPOINTS),
            )
            listed += [row.nid for row in page.items]
            if (cursor := page.next_cursor) is None:
                break
            for _ in range(rnd.randrange(4)):
                nid, ep = rnd.choice(nids), rnd.choice(ENDPOINTS)
                state = rnd.choice(("in_flight", "pending", "delivered"))
                touched.add((nid, ep))
                ever |= {nid} if state == "pending" else set()
                await _set_state(redis, nid, ep, state, await clock_ms(redis))
        assert cursor is None
        assert len(listed) == len(set(listed)), seed
        assert {nid for nid, ep in pending - touched} <= set(listed), seed
        assert set(listed) <= ever, seed


async def test_state_across_endpoints_keeps_the_other_filters_and_failed_with_resolved(redis: Redis) -> None:
    nids = await _seed_deliveries(redis, 40, lambda i, ep: 2_000 + i if ep == "b" else None)
    for nid in nids[:10]:
        await _set_state(redis, nid, "c", "failed", 3_000)
    for nid in nids[10:15]:  # failures a delivered resend resolved: left the failed index
        await redis.zadd(k.ep_state("c", k.RESOLVED), {nid: 3_000})
        await redis.hset(k.delivery(nid, "c"), mapping={"state": "failed", "resolved_by": "x~r1"})  # type: ignore[misc]
    await redis.hset(k.notification(nids[3]), "channel", "lcn")  # type: ignore[misc]
    eps = list(ENDPOINTS)
    page = await queries.scan(redis, queries.Filters(state="pending", channel="ipn"), limit=100, endpoints=eps)
    assert {r.nid for r in page.items} == set(nids) - {nids[3]} and page.next_cursor is None
    page = await queries.scan(redis, queries.Filters(state="failed"), limit=100, endpoints=eps)
    assert {r.nid for r in page.items} == set(nids[:10])
    page = await queries.scan(redis, queries.Filters(state="failed", include_resolved=True), limit=100, endpoints=eps)
    assert {r.nid for r in page.items} == set(nids[:15])
    # a removed endpoint's deliveries are still listed
    await redis.hset(k.EP_REMOVED, "c", json.dumps({"at": 1, "seq": 1}))  # type: ignore[misc]
    page = await queries.scan(redis, queries.Filters(state="failed"), limit=100, endpoints=["a", "b"])
    assert {r.nid for r in page.items} == set(nids[:10])


# -- control actions in pages ----------------------------------------------------------------


async def _waiting(redis: Redis, ep: str, n: int, state: str, score: int) -> list[str]:
    """``n`` deliveries to ``ep`` waiting as ``state``, every one with the same index score (a page
    moved by one call), due in an hour if retrying."""
    nids = [f"ipn_{i:024x}" for i in range(n)]
    due = 4_000_000_000_000
    async with redis.pipeline(transaction=False) as pipe:
        for nid in nids:
            d = {"state": state, "mode": "concurrent", "created": 1, "updated": score, "attempts": 1}
            pipe.hset(k.delivery(nid, ep), mapping={**d, **({"next": due} if state == "retrying" else {})})
            pipe.zadd(k.ep_state(ep, state), {nid: score})
            pipe.zadd(k.ep_queue(ep), {nid: due if state == "retrying" else score})
        await pipe.execute()
    return nids


async def _states(redis: Redis, nids: list[str], ep: str) -> set[str]:
    async with redis.pipeline(transaction=False) as pipe:
        for nid in nids:
            pipe.hget(k.delivery(nid, ep), "state")
        return {v.decode() for v in await pipe.execute()}


async def _audits(redis: Redis, action: str) -> list[dict[str, Any]]:
    return [e for e in map(json.loads, await redis.lrange(k.AUDIT, 0, -1)) if e["action"] == action]  # type: ignore[misc]


async def test_pause_and_resume_in_pages_finish_when_rerun_after_a_crash(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    control = Control(redis, make_settings(endpoints=_eps("a")))
    n = 2 * CONTROL_PAGE + 37
    pending = await _waiting(redis, "a", n, "pending", 7_000)
    # a pause cut short after its first page: the flag is set, the rest still pending (and never sent:
    # the claim script gives a paused endpoint nothing)
    entry = audit.entry("pause", ORIGIN, target="a")
    _, moved, detail = await control._call("pause", "a", entry, who="{}", page=CONTROL_PAGE, always="1")
    assert moved == CONTROL_PAGE and json.loads(detail) == {"more": True, "already": False}
    assert await redis.hexists(k.PAUSED, "a") and await _states(redis, pending, "a") == {"paused", "pending"}  # type: ignore[misc]
    again = await control.pause("a", ORIGIN)
    assert again["already"] is True and again["count"] == n - CONTROL_PAGE
    assert await _states(redis, pending, "a") == {"paused"} and await redis.zcard(k.ep_state("a", "pending")) == 0
    assert [e["count"] for e in await _audits(redis, "pause")] == [n - CONTROL_PAGE]
    # a resume cut short: the flag stays until the last page, so nothing is sent out of order meanwhile
    entry = audit.entry("resume", ORIGIN, target="a")
    _, moved, detail = await control._call("resume", "a", entry, page=CONTROL_PAGE)
    assert moved == CONTROL_PAGE and json.loads(detail) == {"more": True}
    assert await redis.hexists(k.PAUSED, "a")  # type: ignore[misc]
    done = await control.resume("a", ORIGIN)
    assert done == {"endpoint": "a", "paused": False, "count": n - CONTROL_PAGE}
    assert not await redis.hexists(k.PAUSED, "a")  # type: ignore[misc]
    assert await _states(redis, pending, "a") == {"pending"} and await redis.zcard(k.ep_state("a", "pending")) == n
    assert await redis.zcard(k.ep_state("a", "paused")) == 0
    # and uninterrupted: one audit entry each, counting every page
    assert (await control.pause("a", ORIGIN))["count"] == n
    assert (await control.resume("a", ORIGIN))["count"] == n
    assert [e["count"] for e in await _audits(redis, "resume")][:2] == [n, n - CONTROL_PAGE]


async def test_retry_all_in_pages_makes_every_retrying_one_due_even_when_rerun(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    control = Control(redis, make_settings(endpoints=_eps("a")))
    n = 2 * CONTROL_PAGE + 11
    # ties (one score for most) and a few of their own, before and after them
    nids = await _waiting(redis, "a", n, "retrying", 8_000)
    for i, nid in enumerate(nids[:30]):
        await redis.zadd(k.ep_state("a", "retrying"), {nid: 7_000 + i if i % 2 else 9_000 + i})
    entry = audit.entry("retry", ORIGIN, target="a")
    _, count, detail = await control._call("retry", "a", entry, nid="", page=CONTROL_PAGE)
    doc = json.loads(detail)
    assert count == CONTROL_PAGE and doc["more"] is True
    # between pages, deliveries leave the index (claimed): the cursor's own, and one not yet reached
    cursor_nid = doc["cursor"].split()[1]
    await redis.zrem(k.ep_state("a", "retrying"), cursor_nid, nids[n - 5])
    for _ in range(5):
        _, more, detail = await control._call(
            "retry", "a", entry, nid="", page=CONTROL_PAGE, done=count, cursor=doc["cursor"], upto=doc["upto"]
        )
        count, doc = count + more, json.loads(detail)
        if not doc["more"]:
            break
    assert count == n - 1 and not doc["more"]
    now = await clock_ms(redis)

    async def late() -> set[str]:
        async with redis.pipeline(transaction=False) as pipe:
            for nid in nids:
                pipe.hget(k.delivery(nid, "a"), "next")
                pipe.zscore(k.ep_queue("a"), nid)
            raw = await pipe.execute()
        return {nid for nid, nxt, q in zip(nids, raw[::2], raw[1::2], strict=True) if int(nxt) > now or q > now}

    assert await late() == {nids[n - 5]}, "every one still retrying made due, none skipped at the cursor"
    # a rerun (after a crash, or twice by hand) makes them due again: harmless, and complete
    assert (await control.retry(ORIGIN, endpoint="a"))["count"] == n - 2
    assert [e["count"] for e in await _audits(redis, "retry")] == [n - 2, n - 1]


async def test_retry_all_of_a_serial_endpoint_makes_only_its_head_due_across_pages(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    control = Control(redis, make_settings(endpoints=_eps("a")))
    nids = await _waiting(redis, "a", CONTROL_PAGE + 30, "retrying", 8_000)
    async with redis.pipeline(transaction=False) as pipe:
        for seq, nid in enumerate(nids):  # a serial queue is ordered by receipt (seq)
            pipe.hset(k.delivery(nid, "a"), "mode", "serial")
            pipe.zadd(k.ep_queue("a"), {nid: seq})
        await pipe.execute()
    done = await control.retry(ORIGIN, endpoint="a")
    assert done == {"endpoint": "a", "count": 1, "head": nids[0]}
    due = [nid for nid in nids if int(await redis.hget(k.delivery(nid, "a"), "next")) < 4_000_000_000_000]  # type: ignore[misc]
    assert due == [nids[0]]


async def test_a_tampered_cursor_is_a_400_not_a_500(
    aiohttp_client: Any, make_settings: Callable[..., Settings], redis: Redis
) -> None:
    token = "test-admin-token-0123456789"
    settings = make_settings(endpoints=_eps(*ENDPOINTS), env={"RELAY_ADMIN_TOKEN": token})
    client: TestClient = await aiohttp_client(create_app(settings))
    auth = {"Authorization": f"Bearer {token}"}
    await _seed_deliveries(redis, 10, lambda i, ep: 1_000_000 + i)

    async def page(**params: str) -> tuple[int, dict[str, Any]]:
        resp = await client.get("/api/notifications", params=params, headers=auth)
        return resp.status, await resp.json()

    for state in ("pending", None):  # the state across endpoints, and an index of its own
        params = {"limit": "2", **({"state": state} if state else {})}
        status, doc = await page(**params)
        assert status == 200 and doc["next_cursor"]
        real = json.loads(base64.urlsafe_b64decode(doc["next_cursor"] + "=="))
        tampered = [
            [*real[:2], True, *real[3:]],  # JSON's true is an int to Python
            [*real[:2], 1e3, *real[3:]],
            [*real[:3], 7, *real[4:]],
            [*real, "more"] if state else [*real, True, "x"],
            [*real[:5], True, *real[6:]],
            [*real[:6], "../x"] if state else [*real, 5, "not hex"],
            {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5},
        ]
        for doc_ in tampered:
            cursor = base64.urlsafe_b64encode(json.dumps(doc_).encode()).decode().rstrip("=")
            status, doc = await page(**params, cursor=cursor)
            assert status == 400 and "cursor" in doc["error"], (doc_, doc)
        for garbage in ("%%%", "eyJ", "a" * 5000, "W10", "bnVsbA"):
            status, doc = await page(**params, cursor=garbage)
            assert status == 400 and "cursor" in doc["error"], (garbage, doc)


async def test_health_after_an_upgrade_counts_what_was_stored_before_the_counters(
    aiohttp_client: Any, make_settings: Callable[..., Settings], redis: Redis
) -> None:
    # a relay before issue 26 stored these without the per-minute counters: right after the upgrade the
    # window's accepted count must still hold them, or a source with a few refusals among thousands of
    # accepted notifications reads as refusing everything (share 1.0) and the alert fires
    settings = make_settings(endpoints=_eps("a"))
    client: TestClient = await aiohttp_client(create_app(settings))
    nids = [await post(client, str(231_000_000 + i)) for i in range(12)]
    await Resender(redis, settings).one(nids[0], endpoint="a", origin=ORIGIN)  # a resend is never counted
    for key in [key async for key in redis.scan_iter("relay:src:default:acc:*")]:
        await redis.delete(key)
    for i in range(2):
        resp = await client.post("/ipn", data=signed_body(ipn_fields(str(i)), secret="wrong"), headers=FORM)
        assert resp.status == 400
    now = await clock_ms(redis)
    src = (await health_report(redis, settings, now))["sources"]["default"]
    assert (src["accepted"], src["refused"]) == (12, 2)
    # a source that accepted nothing in the window (refusing everything) while an operator resent: the
    # resends are not counted there either
    await redis.delete(k.source_accepted("default", now // MIN))
    for key in [key async for key in redis.scan_iter("relay:src:default:acc:*")]:
        await redis.delete(key)
    await redis.zremrangebyscore(k.idx_source("default"), "-inf", "+inf")
    await redis.zadd(k.idx_source("default"), {f"{nids[1]}~r{i}": now - i for i in range(30)})
    src = (await health_report(redis, settings, now))["sources"]["default"]
    assert (src["accepted"], src["refused"]) == (0, 2)


async def test_a_state_listing_begun_among_entries_of_its_own_millisecond_lists_each_once(redis: Redis) -> None:
    # a resume moves a page of deliveries in one millisecond; a listing whose first page is read in it
    # and stops among them still lists the rest (they did not change since)
    now = await clock_ms(redis)
    nids = await _seed_deliveries(redis, 30, lambda i, ep: now + 60_000 if ep == "a" else None)
    f = queries.Filters(state="pending")
    listed: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        page = await queries.scan(redis, f, limit=7, cursor=cursor, endpoints=list(ENDPOINTS))
        listed += [row.nid for row in page.items]
        if (cursor := page.next_cursor) is None:
            break
    assert sorted(listed) == sorted(nids)

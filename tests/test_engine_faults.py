"""The delivery engine and the ingest Batcher cannot wedge: an error injected at every step of the
flush state machine, into a lane, and into the Batcher's flush; and completion is idempotent."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from config.settings import Settings
from relay import constants as k
from relay.store.detail import attempt_record
from relay.store.ingest import Batcher, Interrupted, Store, notification_id
from tests.support import Sink, ipn_fields, signed_body, wait_for
from workers.engine import Engine
from workers.step import StepInterrupted

N = 6


# a lost claim waits for its lease: 1.5 s (timeout 0.5 s + this), not the default 5.5 s. A request is sent
# only while the lease surely holds (attempt.py's send_by, half this margin to spare), so a loop running
# late on a loaded machine gets a request held back and retried, never one sent twice
LEASE_MARGIN_S = 1.0


@pytest.fixture
async def engine_for(make_settings: Callable[..., Settings], redis: Redis) -> AsyncIterator[Callable[..., Any]]:
    made: list[tuple[Engine, aiohttp.ClientSession]] = []

    async def make(sinks: dict[str, tuple[Sink, bool]]) -> Engine:
        settings = make_settings(
            endpoints=[
                {"name": name, "url": s.url, "concurrent": concurrent, "timeout": 0.5, "retry_delays": [0.05]}
                for name, (s, concurrent) in sinks.items()
            ],
            delivery={"lease_margin": LEASE_MARGIN_S},
        )
        session = aiohttp.ClientSession()
        engine = Engine(Redis.from_url(str(settings.redis_url)), settings, session)
        made.append((engine, session))
        return engine

    yield make
    for engine, session in made:
        await engine.stop(grace=2)
        await session.close()
        await engine.redis.aclose()


async def store_notifications(redis: Redis, engine: Engine, n: int) -> list[str]:
    store = Store(redis, retention_ms=engine.retention_ms)
    nids = []
    for i in range(n):
        body = signed_body(ipn_fields(f"77{i:04d}"))
        nid = notification_id("default", "ipn", body)
        await store.ingest(
            nid=nid,
            source="default",
            channel="ipn",
            body=body,
            content_type="application/x-www-form-urlencoded",
            algo="md5",
            facts={},
        )
        await engine.fanout(nid)
        nids.append(nid)
    return nids


async def all_delivered(redis: Redis, nids: list[str], eps: list[str]) -> bool:
    states = [await redis.hget(k.delivery(nid, ep), "state") for nid in nids for ep in eps]
    return all(s == b"delivered" for s in states)


def once(owner: Any, name: str, error: BaseException, *, after: bool = False) -> list[int]:
    """Make ``owner.name`` raise ``error`` on its first call (after running it, with ``after``)."""
    real = getattr(owner, name)
    calls = [0]

    def fail_first(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1 and not after:
            raise error
        result = real(*args, **kwargs)
        if calls[0] == 1:
            if asyncio.iscoroutine(result):

                async def then_raise() -> Any:
                    await result
                    raise error

                return then_raise()
            raise error
        return result

    setattr(owner, name, fail_first)
    return calls


STEPS = [
    # (where, raises before or after the real step, what)
    ("_encode", False, RuntimeError("bug while encoding")),
    ("script", False, RedisConnectionError("lost before the call")),
    ("script", True, RedisConnectionError("lost reply: the script ran")),
    ("script", True, asyncio.CancelledError()),
    ("_settle_results", False, RuntimeError("bug reading the flags")),
    ("_settle_claims", False, RuntimeError("bug reading the claims")),
    ("_settle_claims", False, asyncio.CancelledError()),
]


@pytest.mark.parametrize(
    ("step", "after", "error"), STEPS, ids=[f"{s}-{'after' if a else 'before'}-{type(e).__name__}" for s, a, e in STEPS]
)
async def test_an_error_at_any_flush_step_fails_its_batch_and_the_engine_goes_on(
    engine_for: Callable[..., Any],
    sink: Callable[..., Any],
    redis: Redis,
    step: str,
    after: bool,
    error: BaseException,
) -> None:
    serial, concurrent = await sink(), await sink()
    engine: Engine = await engine_for({"serial": (serial, False), "conc": (concurrent, True)})
    nids = await store_notifications(redis, engine, N)
    # the first step after start fails; results recorded in Redis before the failure must not repeat
    calls = once(engine.step, step, error, after=after)
    await engine.start()
    # a claim whose reply was lost is retried when its lease expires (timeout 0.5 s + LEASE_MARGIN_S)
    await wait_for(lambda: all_delivered(redis, nids, ["serial", "conc"]), timeout=30)
    assert calls[0] >= 2, "the injected step never ran again: the flush state machine wedged"
    for s in (serial, concurrent):
        got = [r.headers["Relay-Notification-Id"] for r in s.received]
        assert sorted(got) == sorted(nids), "each notification answered 200 exactly once"
    assert [r.headers["Relay-Notification-Id"] for r in serial.received] == nids, "serial order held"
    for nid in nids:
        for ep in ("serial", "conc"):
            log = [attempt_record(a) for a in await redis.lrange(k.attempts(nid, ep), 0, -1)]
            assert len({a["n"] for a in log}) == len(log), f"an attempt was logged twice: {log}"
    # the invariant of the flush state machine: queued work always has a flusher
    assert engine.step._next is None or engine.step._flusher is not None


async def test_a_crashed_lane_is_logged_and_restarted(
    engine_for: Callable[..., Any], sink: Callable[..., Any], redis: Redis
) -> None:
    s = await sink()
    engine: Engine = await engine_for({"serial": (s, False)})
    lane = engine.lanes["serial"]
    once(lane, "_wait", RuntimeError("bug in the lane"))
    await engine.start()
    await wait_for(lambda: lane.restarts == 1)
    nids = await store_notifications(redis, engine, 3)
    await wait_for(lambda: all_delivered(redis, nids, ["serial"]))
    assert lane.task is not None and not lane.task.done()


async def test_completion_is_recorded_once_per_attempt(
    engine_for: Callable[..., Any], sink: Callable[..., Any], redis: Redis
) -> None:
    """A step.lua call retried after a lost reply sends the same result again: it counts once."""
    s = await sink()
    engine: Engine = await engine_for({"conc": (s, True)})
    [nid] = await store_notifications(redis, engine, 1)
    _, (code, _, items) = await engine.step.request(engine.lanes["conc"], None, claim=True)
    assert code == "ok"
    # the lane started the claimed item itself; wait for it, then record its result twice more
    await wait_for(lambda: all_delivered(redis, [nid], ["conc"]))
    result = await engine.attempt(engine.settings.endpoints["conc"], items[0])
    for _ in range(2):
        recorded, _ = await engine.step.request(engine.lanes["conc"], result, claim=True)
        assert recorded is True  # "already recorded" is not a failure the caller should retry
    log = await redis.lrange(k.attempts(nid, "conc"), 0, -1)
    assert len(log) == 1
    assert await redis.hget(k.STATS, "conc|delivered") == b"1"
    assert len(s.received) == 2  # the lane's attempt and the one made here by hand


async def test_attempt_log_is_capped_and_the_count_kept(
    engine_for: Callable[..., Any], sink: Callable[..., Any], redis: Redis
) -> None:
    s = await sink([500])
    engine: Engine = await engine_for({"conc": (s, True)})
    [nid] = await store_notifications(redis, engine, 1)
    ep = engine.settings.endpoints["conc"]
    _, (_, _, [item]) = await engine.step.request(engine.lanes["conc"], None, claim=True)
    await engine.stop(grace=2)  # the lane's own attempt finishes; the rest are made here
    extra = k.ATTEMPTS_CAP + 5
    # attempt numbers the lane's own retries never reach: each is a distinct attempt, logged once; made
    # here without a lease to run out (held_until: never), since 205 requests outlast the test's short one
    unleased = dataclasses.replace(item, held_until=math.inf)
    for n in range(1000, 1000 + extra):
        result = await engine.attempt(ep, dataclasses.replace(unleased, attempt=n))
        await engine.step.request(engine.lanes["conc"], result, claim=False)
    log = await redis.lrange(k.attempts(nid, "conc"), 0, -1)
    assert len(log) == k.ATTEMPTS_CAP
    assert json.loads(log[-1])["n"] == 1000 + extra - 1
    dropped = int(await redis.hget(k.delivery(nid, "conc"), "attempts_dropped") or 0)
    assert dropped + len(log) == len(s.received)  # one record per request made, none lost from the count
    assert 0 < await redis.pttl(k.attempts(nid, "conc")) <= await redis.pttl(k.delivery(nid, "conc")) + 50


# -- the ingest Batcher ----------------------------------------------------------------------


async def test_batcher_answers_every_call_whatever_its_flush_raises(redis: Redis) -> None:
    """The flush writes to the real Redis; it fails once with each kind of error."""
    errors: list[BaseException] = [RedisConnectionError("down"), RuntimeError("bug"), asyncio.CancelledError()]
    seen: list[list[int]] = []
    raised: set[int] = set()  # the items of the flushes that raised (two run at once: not seen[:3])

    async def flush(items: list[int]) -> list[int]:
        seen.append(items)
        await redis.rpush("batcher:test", *items)
        await asyncio.sleep(0.01)
        if errors:
            raised.update(items)
            raise errors.pop(0)
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(flush, max_batch=4, max_in_flight=2)
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(batcher.submit(i) for i in range(20)), return_exceptions=True), 10
    )
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert all(isinstance(o, (RedisConnectionError, RuntimeError, Interrupted)) for o in failed)
    assert not any(isinstance(o, asyncio.CancelledError) for o in outcomes), "a caller saw its own cancellation"
    assert {type(o) for o in failed} == {RedisConnectionError, RuntimeError, Interrupted}
    failed_items = raised
    for i, outcome in enumerate(outcomes):
        assert isinstance(outcome, BaseException) == (i in failed_items)
        assert isinstance(outcome, BaseException) or outcome == i * 10
    # nothing left queued or running, and the next call goes straight out
    await wait_for(lambda: not batcher._tasks)
    assert await asyncio.wait_for(batcher.submit(99), 5) == 990


async def test_batcher_flush_answering_short_fails_that_batch_only(redis: Redis) -> None:
    calls = [0]

    async def flush(items: list[int]) -> list[int]:
        calls[0] += 1
        await redis.incr("batcher:calls")
        return [] if calls[0] == 1 else items

    batcher: Batcher[int, int] = Batcher(flush, max_batch=8, max_in_flight=1)
    with pytest.raises(RuntimeError, match="answered 0 of 1"):
        await asyncio.wait_for(batcher.submit(1), 5)
    assert await asyncio.wait_for(batcher.submit(2), 5) == 2


def test_step_interrupted_is_a_redis_error() -> None:
    """Lanes retry Redis errors; a cancelled call must look like one to them, not end them."""
    from redis.exceptions import RedisError

    assert issubclass(StepInterrupted, RedisError) and issubclass(Interrupted, RedisError)

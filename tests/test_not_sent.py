"""Issue 21, finding 13, in one process: a claimed delivery whose lease could run out before its request
ends is given back unsent, recorded as such, counted, and claimed again in order; one whose request
cannot even be built fails with ``request_error`` instead of crashing its lane's attempt.

The stall itself (a worker SIGSTOPped past its lease, 20 times) is tests/faults/test_stalls.py."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from relay import constants as k
from relay.store.detail import attempt_record
from relay.web.delivery_metrics import DeliveryCollector
from tests.support import wait_for
from tests.test_engine_faults import engine_for, store_notifications  # noqa: F401  (the fixture)
from workers import forward
from workers.engine import Engine


async def test_a_claim_past_its_safe_time_is_given_back_unsent_and_claimed_again_in_order(
    engine_for: Callable[..., Any],
    sink: Callable[..., Any],
    redis: Redis,
) -> None:
    s = await sink()
    engine: Engine = await engine_for({"serial": (s, False)})
    first, second = await store_notifications(redis, engine, 2)
    lane, ep = engine.lanes["serial"], engine.settings.endpoints["serial"]
    _, (code, _, [item]) = await engine.step.request(lane, None, claim=True)
    assert code == "ok" and item.nid == first and item.attempt == 1
    # its lease is held for timeout + lease_margin from the claim's call: a worker that got here late
    assert item.held_until - time.monotonic() > ep.timeout
    late = dataclasses.replace(item, held_until=time.monotonic() + ep.timeout)
    result = await engine.attempt(ep, late)
    assert result.outcome == "dropped" and s.received == []  # nothing written

    # recorded (attempt 1 spent, due at once) and, in the same call, the same head claimed again
    recorded, (code, _, [again]) = await engine.step.request(lane, result, claim=True)
    assert recorded and code == "ok" and (again.nid, again.attempt) == (first, 2)
    [record] = [attempt_record(a) for a in await redis.lrange(k.attempts(first, "serial"), 0, -1)]
    assert record["n"] == 1 and record["outcome"] == "retry" and record["error"] == "not_sent"
    assert "lease" in record["message"]
    assert await redis.hget(k.STATS, "serial|not_sent") == b"1"
    assert await redis.hget(k.STATS, "serial|retry") is None  # not an attempt that failed
    sent = await engine.attempt(ep, again)
    assert sent.outcome == "delivered" and [r.headers["Relay-Attempt"] for r in s.received] == ["2"]
    _, (_, _, [following]) = await engine.step.request(lane, sent, claim=True)
    assert await redis.hget(k.delivery(first, "serial"), "state") == b"delivered"
    assert (following.nid, following.attempt) == (second, 1)  # in order of receipt

    # a late "not sent" for an attempt another worker now holds changes and logs nothing
    stale = engine.sender.not_sent(ep, item, "lease_expired", engine.redis_ms())
    recorded, _ = await engine.step.request(lane, stale, claim=False)
    assert recorded is False and await redis.llen(k.attempts(first, "serial")) == 2

    collector = DeliveryCollector(["serial"])
    await collector.refresh(redis, engine.redis_ms())
    [family] = [m for m in collector.collect() if m.name == "relay_delivery_not_sent"]
    assert [(s.labels, s.value) for s in family.samples if s.name.endswith("_total")] == [({"endpoint": "serial"}, 1.0)]


async def test_a_request_that_cannot_be_built_fails_the_delivery_instead_of_crashing(
    engine_for: Callable[..., Any],
    sink: Callable[..., Any],
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = await sink()
    engine: Engine = await engine_for({"serial": (s, False)})
    [nid] = await store_notifications(redis, engine, 1)
    lane, ep = engine.lanes["serial"], engine.settings.endpoints["serial"]
    _, (_, _, [item]) = await engine.step.request(lane, None, claim=True)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("a field the mapping expected")

    monkeypatch.setattr(forward, "build", broken)
    result = await engine.attempt(ep, item)
    assert result.outcome == "failed" and s.received == []
    assert json.loads(result.record)["error"] == "request_error"


async def test_a_claim_given_back_unsent_does_not_count_against_the_retry_schedule(
    engine_for: Callable[..., Any],
    sink: Callable[..., Any],
    redis: Redis,
) -> None:
    s = await sink([500])
    engine: Engine = await engine_for({"serial": (s, False)})  # retry_delays = [0.05]: one retry
    [nid] = await store_notifications(redis, engine, 1)
    lane, ep = engine.lanes["serial"], engine.settings.endpoints["serial"]
    _, (_, _, [item]) = await engine.step.request(lane, None, claim=True)
    dropped = await engine.attempt(ep, dataclasses.replace(item, held_until=time.monotonic()))
    _, (_, _, [again]) = await engine.step.request(lane, dropped, claim=True)
    assert (again.attempt, again.unsent) == (2, 1)
    failed_once = await engine.attempt(ep, again)
    # the endpoint's first failure: its one retry is still to come (Relay-Attempt says 2 all the same)
    assert failed_once.outcome == "retry" and [r.headers["Relay-Attempt"] for r in s.received] == ["2"]
    await engine.step.request(lane, failed_once, claim=False)
    assert await redis.hget(k.delivery(nid, "serial"), "state") == b"retrying"


async def test_a_body_past_its_send_by_time_is_never_written() -> None:
    """The last check, in the step that writes the request's first bytes (headers go with the body):
    past the time, not one byte reaches the endpoint, not even the headers."""
    import asyncio

    import aiohttp

    from tests.support import free_port
    from workers.attempt import Guarded

    got: list[bytes] = []

    async def endpoint(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.append(await reader.read())  # everything the connection carried, up to its close
        writer.close()

    port = free_port()
    server = await asyncio.start_server(endpoint, "127.0.0.1", port)
    try:
        async with aiohttp.ClientSession() as session:
            late = Guarded(b"REFNO=1", time.monotonic() - 0.001)
            with pytest.raises(aiohttp.ClientConnectionError):
                async with session.post(
                    f"http://127.0.0.1:{port}/hook",
                    data=late,
                    timeout=aiohttp.ClientTimeout(3),
                    headers={"Content-Type": "text/plain"},
                ):
                    pass
            assert late.refused
        await wait_for(lambda: got, 5)
    finally:
        server.close()
        await server.wait_closed()
    assert got == [b""]

"""Scenarios 1 and 2: Redis goes away mid-stream and comes back on the same port and data dir.

1. ``appendonly yes``, ``appendfsync everysec``, restarted with SIGTERM (it flushes the AOF on the way
   out): while it is down the ingress answers 503 (not an ack: the generator re-posts later, as 2Checkout
   does); afterwards every acknowledged notification reaches every endpoint.
2. ``ack_after = "fsync"`` on a Redis 7.0 without WAITAOF, so Redis runs ``appendfsync always``, and is
   killed with SIGKILL: no acknowledged notification is missing after the restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable

import pytest
from redis.asyncio import Redis

from relay import constants as k
from tests.faults.harness import (
    Cluster,
    Endpoint,
    LoadGenerator,
    assert_delivered_cleanly,
    command,
    converge,
    pairs_for,
    pick,
    reconcile,
    report,
)
from tests.support import wait_for

pytestmark = [pytest.mark.timeout(pick(120, 420)), pytest.mark.slow]  # slow: not in make check's fast tier

MakeCluster = Callable[..., Awaitable[Cluster]]


async def missing(redis: Redis, nids: Iterable[str]) -> list[str]:
    """Acknowledged notifications whose record is not in Redis."""
    nids = sorted(nids)
    async with redis.pipeline(transaction=False) as pipe:
        for nid in nids:
            pipe.exists(k.notification(nid))
        found = await pipe.execute()
    return [nid for nid, n in zip(nids, found, strict=True) if not n]


def first_restart_delays(c: Cluster, windows: list[tuple[float, float]]) -> dict[int, list[float]]:
    """Per worker process, the delay it chose first in each outage before starting its ARQ loop again."""
    out: dict[int, list[float]] = {}
    for w in c.workers:
        events = w.events("worker_redis_lost")
        delays = []
        for down, up in windows:
            inside = [e for e in events if down - 1 <= e["at"] <= up + 5 and "restart_in_s" in e]
            if inside:
                delays.append(float(inside[0]["restart_in_s"]))
        if delays:
            out[w.pid] = delays
    return out


def at_least(value: Callable[[], int], floor: int) -> Callable[[], bool]:
    return lambda: value() >= floor


def endpoints() -> list[Endpoint]:
    return [Endpoint("billing"), Endpoint("licensing", concurrent=True, max_in_flight=8), Endpoint("crm", delay=0.002)]


async def run_redis_outages(
    cluster: MakeCluster,
    *,
    scenario: str,
    node: str,
    appendfsync: str,
    sig: str,
    server: dict[str, str],
    outages: int,
    count: int,
    duration: float,
) -> None:
    started = time.monotonic()
    c = await cluster(appendfsync=appendfsync)
    eps = endpoints()
    [url] = await c.start(eps, server=server)
    c.supervise()

    # a steady stream: `count` notifications spread over about `duration` seconds (longer with the outages;
    # the outages are placed by how many have been acknowledged, so the stream must post them all)
    gen = LoadGenerator([url], concurrency=4, pace=4 * duration / count, retry_delay=0.2)
    load = asyncio.create_task(gen.run(count, duration * 3))
    refused: list[int] = []
    windows: list[tuple[float, float]] = []  # wall-clock (down, up) of each outage, to read the workers' logs
    refusals = pick(4, 20)  # how many 503s each outage lasts for
    storage_losses: list[str] = []
    try:
        for n in range(outages):
            target = (n + 1) * count // (outages + 2)
            await wait_for(
                at_least(lambda: len(gen.acknowledged), target),
                duration + 30,
                what=f"the stream did not reach {target} acknowledgements before outage {n + 1}",
            )
            before_503 = gen.answered_503
            down = time.time()
            await c.stop_redis(sig)
            # the outage lasts until the ingress has refused a few posts with 503: a refusal, not an ack
            await wait_for(
                at_least(lambda: gen.answered_503, before_503 + refusals),
                30,
                what="the ingress did not answer 503 while Redis was down",
            )
            await c.start_redis()
            windows.append((down, time.time()))
            refused.append(gen.answered_503 - before_503)
            # every notification acknowledged so far is in Redis after the restart
            storage_losses += await missing(c.redis, list(gen.acknowledged))
        await asyncio.wait_for(load, duration * 3 + 60)
    finally:
        gen.stop()
        await asyncio.gather(load, return_exceptions=True)

    pairs = pairs_for(gen.acknowledged, eps)
    settled = await converge(c.redis, pairs, pick(60, 180))
    backoffs = first_restart_delays(c, windows)
    summary = await reconcile(
        scenario,
        c.redis,
        gen.acknowledged,
        eps,
        started,
        load=f"{gen.started} signed IPNs over ~{duration:g} s, 4 concurrent posters, 3 endpoints (2 serial)",
        faults=f"{outages} Redis {'SIGTERM' if sig == 'term' else 'SIGKILL'} restarts (appendfsync {appendfsync}"
        + (', ack_after = "fsync"' if server.get("ack_after") == "fsync" else "")
        + ")",
        inputs="signed IPNs, re-posted after a 503 or a refused connection",
        command=command(node),
        extra={
            "settle_s": settled,
            "answered_503": gen.answered_503,
            "refused_per_outage": refused,
            "connection_errors": sum(n for key, n in gen.outcomes.items() if not key.isdigit()),
            "worker_exits": len(c.worker_exits),
            "worker_restart_delays_s": backoffs,
        },
    )
    report(summary)
    assert not gen.unexpected, gen.unexpected[:5]
    assert not gen.gave_up, f"{len(gen.gave_up)} notifications never acknowledged"
    assert not storage_losses, f"acknowledged but missing from Redis after a restart: {storage_losses[:5]}"
    assert summary.lost == 0, summary.extra.get("lost_examples")
    await assert_delivered_cleanly(c, eps)
    assert all(r > 0 for r in refused)
    # each outage is a new one: a worker that came back from the previous one starts its backoff afresh
    # instead of waiting longer and longer after every Redis restart of its lifetime
    growing = {pid: delays for pid, delays in backoffs.items() if any(d > delays[0] for d in delays[1:])}
    assert not growing, (
        f"relay worker waits longer after each Redis outage although it recovered in between: first restart "
        f"delay per outage (s), by worker pid: {growing}"
    )
    # a Redis restart must not take the delivery workers down with it (a Sentinel failover is one too)
    assert not c.worker_exits, (
        f"{len(c.worker_exits)} relay worker process(es) exited when Redis restarted (a process manager had "
        f"to restart them); first exit code {c.worker_exits[0].returncode}:\n{c.worker_exits[0].tail}"
    )


async def test_redis_sigterm_restart_with_aof_everysec(cluster: MakeCluster) -> None:
    await run_redis_outages(
        cluster,
        scenario="1 Redis restart (AOF everysec, SIGTERM)",
        node="tests/faults/test_redis_restart.py::test_redis_sigterm_restart_with_aof_everysec",
        appendfsync="everysec",
        sig="term",
        server={},
        outages=pick(1, 4),
        count=pick(300, 3000),
        duration=pick(10.0, 90.0),
    )


async def test_redis_sigkill_with_ack_after_fsync(cluster: MakeCluster) -> None:
    await run_redis_outages(
        cluster,
        scenario="2 Redis SIGKILL (ack_after fsync, appendfsync always)",
        node="tests/faults/test_redis_restart.py::test_redis_sigkill_with_ack_after_fsync",
        appendfsync="always",
        sig="kill",
        server={"ack_after": "fsync"},
        outages=pick(2, 6),
        count=pick(300, 3000),
        duration=pick(10.0, 90.0),
    )

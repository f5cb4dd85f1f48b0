"""Scenario 11 (issue 26): the worker SIGKILLed in the middle of a fan-out batch, again and again, under load.

The fan-out claims notifications from ``relay:fanout`` in batches under a lease (workers/lua/fanclaim.lua)
and routes each batch in one route.lua call. A worker killed between the two leaves its batch leased and
unrouted: no other write tells anyone, and the next worker must route it once the lease lapses, each
delivery once.

One ``relay worker`` runs at a time while signed IPNs stream in, so every live lease is its own: it is
stopped (SIGSTOP) at a random moment, and if it then holds a fan-out batch and every request the
endpoints answered is recorded (so the kill repeats no request: what it claimed and had not sent yet
comes back when its lease lapses, as ``worker_lost``), SIGKILLed and replaced; otherwise continued and
tried again a few ms later. Every acknowledged notification must be delivered to
every endpoint exactly once, in order of receipt on the serial one.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable

import pytest

from relay import constants as k
from tests.faults.harness import (
    Cluster,
    Endpoint,
    LoadGenerator,
    Proc,
    assert_delivered_cleanly,
    command,
    converge,
    pairs_for,
    pick,
    reconcile,
    report,
    seqs,
)

pytestmark = [pytest.mark.timeout(pick(240, 480)), pytest.mark.slow]  # slow: not in make check's fast tier

NODE = "tests/faults/test_fanout_kills.py::test_worker_sigkilled_mid_fanout_batch"


async def _leased(c: Cluster) -> int:
    """Live fan-out leases: with one worker running, the batch it is routing."""
    seconds, micros = await c.redis.time()
    return int(await c.redis.zcount(k.FANOUT_LEASE, seconds * 1000 + micros // 1000, "+inf"))


async def _recorded(c: Cluster, eps: list[Endpoint]) -> bool:
    """Every request the endpoints answered is recorded delivered: a kill now repeats no request."""
    await asyncio.sleep(0.03)  # what the worker sent before it stopped reaches Redis and the endpoints first
    recorded = await c.redis.hmget(k.STATS, [f"{ep.name}|delivered" for ep in eps])
    answered = [len(ep.accepted()) if not ep.in_flight else -1 for ep in eps]
    return answered == [int(n or 0) for n in recorded]


async def _stop(worker: Proc, rng: random.Random) -> None:
    await asyncio.sleep(rng.uniform(0.001, 0.02))  # a random moment of its work, not a synchronisation
    os.kill(worker.pid, signal.SIGSTOP)


async def _kill_mid_batch(c: Cluster, eps: list[Endpoint], worker: Proc, rng: random.Random, until: float) -> int:
    """SIGKILL ``worker`` while it holds a fan-out batch it has not routed; the batch's size (0: not caught).

    The worker is stopped (SIGSTOP) at a moment when all it sent is recorded, while notifications pile
    up; continued, it claims them as its next batch at once, and is stopped again as soon as its lease
    shows. If the batch is still unrouted once what it sent has landed, it is SIGKILLed; else it goes on
    and all this is tried again.
    """
    while time.monotonic() < until:
        await _stop(worker, rng)
        if await _leased(c):
            os.kill(worker.pid, signal.SIGCONT)
            continue
        await asyncio.sleep(rng.uniform(0.05, 0.2))  # the backlog its next batch takes
        os.kill(worker.pid, signal.SIGCONT)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and not await _leased(c):
            pass  # each look is a Redis round trip
        os.kill(worker.pid, signal.SIGSTOP)
        held = await _leased(c) if await _recorded(c, eps) else 0
        if held:
            await c.kill_worker(worker)  # a stopped process: it never runs again
            return held
        os.kill(worker.pid, signal.SIGCONT)
    return 0


async def test_worker_sigkilled_mid_fanout_batch(cluster: Callable[..., Awaitable[Cluster]]) -> None:
    started = time.monotonic()
    # the load runs until the kills are done: its duration only bounds a slow machine (a loaded soak run
    # caught 23 of 25 in 90 s, every round a catch: each replaced worker takes seconds to start there;
    # a CI run took 25 s for its 5, runs squeezed on one busy core 41 to 73 s, past the 40 s it had then)
    count, duration = 12000, pick(120.0, 150.0)
    kills_wanted = pick(5, 25)
    c = await cluster()
    eps = [
        Endpoint("ledger"),  # serial: a batch left unrouted holds its later notifications back
        Endpoint("search", concurrent=True, max_in_flight=8),
        Endpoint("crm", concurrent=True, max_in_flight=4),
    ]
    # what a killed worker claimed to deliver is due again sooner: its lease is timeout + lease_margin.
    # Not 1 s: a worker slowed by a loaded machine and by the SIGSTOPs timed out requests the endpoints
    # had answered and sent them again (runs squeezed on one busy core: 110 timeouts and 54 duplicated
    # in one, 7 duplicated in another, and no kill at all, as a duplicate leaves the answered and the
    # recorded counts apart for good; with 3 s, 6 runs: 5 kills each, none duplicated)
    for ep in eps:
        ep.timeout = 3.0
    await c.start_endpoints(eps)
    c.configure(eps, delivery={"lease_margin": 1.0})
    await c.start_redis()
    url = await c.start_ingress()
    await c.start_worker()
    gen = LoadGenerator([url], concurrency=4, pace=0.05)  # ~70 a second, until the kills are done
    load = asyncio.create_task(gen.run(count, duration))
    rng = random.Random(26)
    kills, batches, tries_out = 0, [], 0
    try:
        while kills < kills_wanted and not load.done():  # the load's duration bounds it
            await asyncio.sleep(rng.uniform(0.2, 0.6))  # let the new worker take up the backlog
            [worker] = c.live_workers
            held = await _kill_mid_batch(c, eps, worker, rng, started + duration)
            if held:
                kills += 1
                batches.append(held)
                await c.start_worker()
            else:
                tries_out += 1
        gen.stop()  # enough: what was acknowledged until now is what must arrive
        await asyncio.wait_for(load, 60)
    finally:
        gen.stop()
        await asyncio.gather(load, return_exceptions=True)
    pairs = pairs_for(gen.acknowledged, eps)
    settled = await converge(c.redis, pairs, pick(60, 180))
    seq = await seqs(c.redis, list(gen.acknowledged))
    summary = await reconcile(
        "11 worker SIGKILLs mid fan-out batch",
        c.redis,
        gen.acknowledged,
        eps,
        started,
        load=f"{gen.started} signed IPNs at ~70/s until the kills were done; 1 worker at a time; "
        "3 endpoints (1 serial, 2 concurrent)",
        faults=f"{kills} SIGKILLs of the worker while it held a fan-out batch (sizes {batches}) and no "
        "unrecorded request; each replaced",
        inputs="signed IPNs",
        command=command(NODE),
        extra={"settle_s": settled, "kills": kills, "rounds_not_caught": tries_out},
    )
    report(summary)
    assert not gen.unexpected and not gen.gave_up
    assert kills >= kills_wanted, f"caught the worker mid-batch {kills} times of {kills_wanted}"
    assert summary.lost == 0, summary.extra.get("lost_examples")
    assert summary.delivered == summary.expected == len(gen.acknowledged) * len(eps)
    # no kill left an answered request unrecorded, and a batch routed again creates no delivery twice
    assert summary.duplicated == 0
    await assert_delivered_cleanly(c, eps, seq)
    assert not await c.redis.zcard(k.FANOUT) and not await c.redis.zcard(k.FANOUT_LEASE)
    assert not c.worker_exits

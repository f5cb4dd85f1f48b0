"""Scenario 3: worker processes SIGKILLed every few seconds while notifications stream in.

Three ``relay worker`` processes share five endpoints (serial and concurrent); every couple of seconds
one of them is killed with SIGKILL (no shutdown code runs) and a fresh one started, as a process
manager would. Every delivery must end ``delivered``; a delivery whose answer was lost with its worker
is made again under the same ``webhook-id`` with a higher ``Relay-Attempt``: those are the duplicates.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

import pytest

from tests.faults.harness import (
    Cluster,
    Endpoint,
    LoadGenerator,
    assert_delivered_cleanly,
    command,
    converge,
    error_classes,
    pairs_for,
    pick,
    reconcile,
    report,
    seqs,
)

pytestmark = [pytest.mark.timeout(pick(150, 480)), pytest.mark.slow]  # slow: not in make check's fast tier

NODE = "tests/faults/test_worker_kills.py::test_workers_sigkilled_every_few_seconds"


async def test_workers_sigkilled_every_few_seconds(cluster: Callable[..., Awaitable[Cluster]]) -> None:
    started = time.monotonic()
    count, duration = pick(300, 2000), pick(9.0, 80.0)
    kill_every, min_kills, max_kills = pick(1.5, 3.0), pick(4, 20), pick(6, 40)
    c = await cluster()
    eps = [
        Endpoint("ledger", delay=0.003),  # serial
        Endpoint("audit", retry_delays=[0.1, 0.2] + [0.5] * 30),  # serial
        Endpoint("search", concurrent=True, max_in_flight=6, delay=0.02),
        Endpoint("mailer", concurrent=True, max_in_flight=3, delay=0.01),
        Endpoint("crm", concurrent=True, max_in_flight=10, faults={1: "500"}, fault_every=9),
    ]
    for ep in eps:
        ep.timeout = 1.0  # a killed worker's lease (timeout + 5 s) frees its delivery sooner
    [url] = await c.start(eps, workers=3)

    gen = LoadGenerator([url], concurrency=4, pace=4 * duration / count)
    load = asyncio.create_task(gen.run(count, duration))
    kills = 0
    rng = random.Random(7)
    try:
        deadline = time.monotonic() + duration + pick(30, 90)
        # kill while the stream runs, and at least min_kills times
        while kills < max_kills and time.monotonic() < deadline:
            if kills >= min_kills and load.done():
                break
            await asyncio.sleep(kill_every)  # the fault's period, not a synchronisation
            victim = rng.choice(c.live_workers)
            await c.kill_worker(victim)
            kills += 1
            await c.start_worker()
        await asyncio.wait_for(load, duration + 60)
    finally:
        gen.stop()
        await asyncio.gather(load, return_exceptions=True)

    settled = await converge(c.redis, pairs_for(gen.acknowledged, eps), pick(75, 180))
    seq = await seqs(c.redis, list(gen.acknowledged))
    errors = await error_classes(c.redis, pairs_for(gen.acknowledged, eps))
    summary = await reconcile(
        "3 worker SIGKILLs",
        c.redis,
        gen.acknowledged,
        eps,
        started,
        load=f"{gen.started} signed IPNs over ~{duration:g} s; 3 workers; 5 endpoints (2 serial, 3 concurrent)",
        faults=f"{kills} worker SIGKILLs, one every {kill_every:g} s, each replaced; HTTP 500 on 1 in 9 first tries",
        inputs="signed IPNs",
        command=command(NODE),
        extra={"settle_s": settled, "kills": kills, "failed_attempts": errors},
    )
    report(summary)
    assert not gen.unexpected and not gen.gave_up
    assert kills >= min_kills
    assert summary.lost == 0, summary.extra.get("lost_examples")
    await assert_delivered_cleanly(c, eps, seq)
    over = [ep.name for ep in eps if not ep.serial and ep.peak_in_flight > ep.max_in_flight]
    assert not over, f"more requests in flight than max_in_flight: {over}"
    assert not c.worker_exits

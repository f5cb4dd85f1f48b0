"""Scenario 4: endpoints down for a stretch (their port closed: connection refused), then back.

Notifications are posted one at a time, so REFNO order is receipt order. A serial and a concurrent
endpoint go down a third of the way in and stay down until each has failed a number of retries; a
healthy serial endpoint keeps receiving meanwhile. With short retry delays everything converges once
they are back; the serial endpoints receive in receipt order, a retry only ever repeating the head.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from relay import constants as k
from tests.faults.harness import (
    Cluster,
    Endpoint,
    LoadGenerator,
    assert_delivered_cleanly,
    attempt_records,
    command,
    converge,
    error_classes,
    pairs_for,
    pick,
    reconcile,
    report,
    seqs,
)
from tests.support import wait_for

pytestmark = [pytest.mark.timeout(pick(120, 420)), pytest.mark.slow]  # slow: not in make check's fast tier

NODE = "tests/faults/test_endpoint_down.py::test_endpoint_down_for_a_stretch_then_back"


async def retries(c: Cluster, ep: Endpoint) -> float:
    value = await c.redis.hget(k.STATS, f"{ep.name}|retry")  # type: ignore[misc]
    return float(value or 0)


async def test_endpoint_down_for_a_stretch_then_back(cluster: Callable[..., Awaitable[Cluster]]) -> None:
    started = time.monotonic()
    count, duration = pick(150, 1500), pick(8.0, 75.0)
    down_retries = pick(8, 40)  # the serial endpoint stays down until it has failed this many tries
    patience = [0.1, 0.2, 0.3] + [pick(0.5, 1.0)] * 150  # enough tries to outlast the outage
    c = await cluster()
    ledger = Endpoint("ledger", retry_delays=patience)  # serial, goes down
    search = Endpoint("search", concurrent=True, max_in_flight=5, retry_delays=patience)  # goes down
    audit = Endpoint("audit")  # serial, stays up
    eps = [ledger, search, audit]
    [url] = await c.start(eps)

    gen = LoadGenerator([url], concurrency=1, pace=duration / count)
    load = asyncio.create_task(gen.run(count, duration))
    try:
        await wait_for(lambda: len(gen.acknowledged) >= count // 3, duration + 30, what="the stream stalled")
        await ledger.stop()
        await search.stop()
        outage = time.monotonic()
        at_start = len(audit.accepted())
        await wait_for(
            lambda: _failed_enough(c, ledger, search, down_retries),
            pick(30, 120),
            what="the endpoints that went down were not retried",
        )
        outage = time.monotonic() - outage
        during = len(audit.accepted())
        await ledger.start()
        await search.start()
        await asyncio.wait_for(load, duration + 60)
    finally:
        gen.stop()
        await asyncio.gather(load, return_exceptions=True)

    pairs = pairs_for(gen.acknowledged, eps)
    settled = await converge(c.redis, pairs, pick(45, 150))
    seq = await seqs(c.redis, list(gen.acknowledged))
    errors = await error_classes(c.redis, pairs)
    summary = await reconcile(
        "4 endpoint down, then back",
        c.redis,
        gen.acknowledged,
        eps,
        started,
        load=f"{gen.started} signed IPNs posted one at a time over ~{duration:g} s; 3 endpoints (2 serial)",
        faults=f"2 endpoints' ports closed for {outage:.1f} s (until the serial one had failed {down_retries} tries)",
        inputs="signed IPNs",
        command=command(NODE),
        extra={"settle_s": settled, "outage_s": round(outage, 1), "failed_attempts": errors},
    )
    report(summary)
    assert not gen.unexpected and not gen.gave_up
    assert summary.lost == 0, summary.extra.get("lost_examples")
    # posted one at a time: receipt order is REFNO order
    by_seq = sorted(gen.acknowledged.values(), key=lambda a: seq[a.nid])
    assert [a.refno for a in by_seq] == sorted(a.refno for a in by_seq)
    await assert_delivered_cleanly(c, eps, seq)
    for ep in (ledger, audit):
        assert [h.refno for h in ep.accepted()] == [a.refno for a in by_seq]
    # the healthy endpoint kept receiving while the others were down
    assert during > at_start
    # the outage is recorded as refused connections, then the delivery that made it
    records = await attempt_records(c.redis, [(nid, "ledger") for nid in gen.acknowledged])
    refused = [a for attempts in records.values() for a in attempts if a["error"] == "connect_error"]
    assert len(refused) >= down_retries - 1, errors
    assert all(a["outcome"] == "retry" for a in refused)
    assert not c.worker_exits


async def _failed_enough(c: Cluster, ledger: Endpoint, search: Endpoint, n: int) -> bool:
    return await retries(c, ledger) >= n and await retries(c, search) >= n

"""Scenario 6: two ingress and two worker processes on one Redis.

A load balancer's worth of posters alternate between the two ingresses. Nothing acknowledged is lost,
and the serial guarantee holds across processes: never more than one request in flight to a serial
endpoint, and order of receipt (the notification's ``seq`` in Redis, one counter for all ingresses)
kept, even while a serial endpoint's head waits to be retried.
"""

from __future__ import annotations

import asyncio
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

pytestmark = [pytest.mark.timeout(pick(120, 420)), pytest.mark.slow]  # slow: not in make check's fast tier

NODE = "tests/faults/test_two_of_each.py::test_two_ingresses_two_workers_keep_order_and_lose_nothing"


async def test_two_ingresses_two_workers_keep_order_and_lose_nothing(
    cluster: Callable[..., Awaitable[Cluster]],
) -> None:
    started = time.monotonic()
    count, duration = pick(300, 3000), pick(8.0, 80.0)
    c = await cluster()
    eps = [
        # a serial endpoint whose head fails now and then: the later ones must wait for its retry
        Endpoint("ledger", delay=0.002, faults={1: "500", 2: "reset"}, fault_every=13, retry_delays=[0.05, 0.1, 0.2]),
        Endpoint("audit", delay=0.001),
        Endpoint("search", concurrent=True, max_in_flight=8, delay=0.01),
    ]
    urls = await c.start(eps, ingresses=2)

    gen = LoadGenerator(urls, concurrency=6, pace=6 * duration / count)
    await asyncio.wait_for(gen.run(count, duration), duration + 60)
    pairs = pairs_for(gen.acknowledged, eps)
    settled = await converge(c.redis, pairs, pick(45, 150))
    seq = await seqs(c.redis, list(gen.acknowledged))
    per_ingress = {url: sum(1 for a in gen.acknowledged.values() if a.url.startswith(url)) for url in urls}
    summary = await reconcile(
        "6 two ingresses, two workers",
        c.redis,
        gen.acknowledged,
        eps,
        started,
        load=f"{gen.started} signed IPNs over ~{duration:g} s from 6 posters alternating between 2 ingresses; "
        "2 workers; 3 endpoints (2 serial)",
        faults="HTTP 500 then TCP reset on 1 in 13 first tries at a serial endpoint",
        inputs="signed IPNs",
        command=command(NODE),
        extra={
            "settle_s": settled,
            "acked_per_ingress": list(per_ingress.values()),
            "failed_attempts": await error_classes(c.redis, pairs),
            "peak_in_flight": {ep.name: ep.peak_in_flight for ep in eps},
        },
    )
    report(summary)
    assert not gen.unexpected and not gen.gave_up
    assert all(n > 0 for n in per_ingress.values()), per_ingress
    assert summary.lost == 0, summary.extra.get("lost_examples")
    assert len(set(seq.values())) == len(seq) == len(gen.acknowledged)  # one receipt order for both ingresses
    await assert_delivered_cleanly(c, eps, seq)
    for ep in eps:
        if ep.serial:
            firsts = list(dict.fromkeys(h.nid for h in ep.accepted()))
            assert firsts == sorted(gen.acknowledged, key=lambda nid: seq[nid])
        else:
            assert ep.peak_in_flight <= ep.max_in_flight
    assert not c.worker_exits

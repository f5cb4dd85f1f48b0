"""Issue 21, finding 1: reloads of a busy serial endpoint never send one delivery twice at once.

A reload that changes an endpoint retires its lane and starts a new one under the same name. Claims
used to be keyed by the endpoint's *name*: the retired lane and its successor could both await one
claim, and a serial item went to both, so the endpoint got two requests at once with the same
``webhook-id`` and ``Relay-Attempt`` (12 in 950 reloads under load). A claim now belongs to the lane
object that asked for it.

One real ``relay worker`` drains a serial endpoint (and keeps two concurrent ones busy, so its step
calls are always in flight) while the test reloads it 1,000 times by SIGHUP, each reload moving the
serial endpoint between two URLs. Reloads are made cheap by leaving the ingress and Redis alone: the
test rewrites the small config file and signals the worker, and waits for the worker's own audit entry
of that reload before the next (a bounded wait, no sleep as synchronisation).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from relay import constants as k
from tests.faults.harness import (
    Cluster,
    Endpoint,
    LoadGenerator,
    assert_delivered_cleanly,
    converge,
    pairs_for,
    pick,
    reconcile,
    report,
    seqs,
)
from tests.support import wait_for

pytestmark = [pytest.mark.timeout(pick(240, 600)), pytest.mark.slow]  # slow: not in make check's fast tier

RELOADS = 1000


class Moving(Endpoint):
    """An endpoint whose configured URL alternates between two paths of the same app (a change a reload
    must apply), so every reload replaces its lane."""

    flip = False

    def spec(self) -> dict[str, Any]:
        spec = super().spec()
        if self.flip:
            spec["url"] = spec["url"] + "/moved"
        return spec


async def test_a_thousand_reloads_of_a_busy_serial_endpoint_never_send_one_delivery_twice_at_once(
    cluster: Callable[..., Awaitable[Cluster]],
) -> None:
    started = time.monotonic()
    c = await cluster()
    ledger = Moving("ledger", delay=0.001)
    eps = [
        ledger,
        Endpoint("search", concurrent=True, max_in_flight=16, delay=0.004),
        Endpoint("crm", concurrent=True, max_in_flight=16, delay=0.002),
    ]
    [url] = await c.start(eps, workers=1)
    [worker] = c.workers

    gen = LoadGenerator([url], concurrency=2, pace=0.02)  # busy, with no backlog growing
    load = asyncio.create_task(gen.run(100_000, 600))
    reloads: list[str] = []
    try:
        await wait_for(lambda: len(ledger.hits) >= 50, 30, what="the serial endpoint did not get busy")
        for i in range(RELOADS):
            ledger.flip = i % 2 == 0
            c.configure(eps)
            before = await c.redis.llen(k.AUDIT)
            worker.proc.send_signal(signal.SIGHUP)
            await wait_for(
                lambda before=before: _grew(c, before), 15, what=f"reload {i} was not applied", interval=0.002
            )
            reloads.append(json.loads(await c.redis.lindex(k.AUDIT, 0))["outcome"])
            if not worker.alive:
                raise AssertionError(f"the worker exited:\n{worker.tail()}")
    finally:
        gen.stop()
        await asyncio.gather(load, return_exceptions=True)
    reload_s = time.monotonic() - started

    pairs = pairs_for(gen.acknowledged, eps)
    settled = await converge(c.redis, pairs, 60)
    seq = await seqs(c.redis, list(gen.acknowledged))
    summary = await reconcile(
        "reload storm",
        c.redis,
        gen.acknowledged,
        eps,
        started,
        load=f"{gen.started} signed IPNs; 1 worker; 3 endpoints (1 serial)",
        faults=f"{RELOADS} reloads by SIGHUP, each moving the serial endpoint to another URL",
        extra={"settle_s": settled, "reload_s": round(reload_s, 1), "serial_during_reloads": len(ledger.hits)},
    )
    report(summary)
    assert reloads.count("reloaded") == RELOADS, {o: reloads.count(o) for o in set(reloads)}
    assert not gen.unexpected and not gen.gave_up
    assert summary.lost == 0, summary.extra.get("lost_examples")
    # one request of the serial endpoint at a time, no (webhook-id, Relay-Attempt) sent twice, in order
    await assert_delivered_cleanly(c, eps, seq)
    assert "delivery_crashed" not in worker.log.read_text(errors="replace")


async def _grew(c: Cluster, before: int) -> bool:
    return int(await c.redis.llen(k.AUDIT)) > before

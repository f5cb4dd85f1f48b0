"""Scenario 5: endpoints that misbehave on the wire, next to healthy ones.

The first attempt of each notification meets: an endpoint that accepts and then hangs (a serial one
too, for one notification in ten); one that drips its answer a byte at a time past the timeout; one
that resets the connection (TCP RST), then on the second attempt closes it without answering; one that
answers bytes that are not HTTP; one that answers 500. The next attempt succeeds. Each failed attempt
must be recorded in its retry class, no attempt may hold its worker slot past the endpoint's timeout,
and the healthy endpoints must not wait for the misbehaving ones.
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
    attempt_records,
    command,
    converge,
    error_classes,
    pairs_for,
    pick,
    reconcile,
    report,
    seqs,
    states,
)

pytestmark = [pytest.mark.timeout(pick(120, 420)), pytest.mark.slow]  # slow: not in make check's fast tier

NODE = "tests/faults/test_network.py::test_misbehaving_endpoints_end_in_their_retry_class"
TIMEOUT = 1.0  # the misbehaving endpoints' timeout, seconds
QUICK = [0.02, 0.05, 0.1] + [0.2] * 10  # their retry delays: a serial one retries every notification
MARGIN_MS = 750  # scheduling slack allowed on top of it for an attempt's measured duration

# what the first attempt meets -> the error classes its attempt record may carry
EXPECTED: dict[str, set[str | None]] = {
    "hang": {"timeout"},
    "slow": {"timeout"},
    "reset": {"connection_reset", "disconnected"},
    "close": {"disconnected", "connection_reset"},
    "garbage": {"bad_response"},
    "500": {None},
}


async def test_misbehaving_endpoints_end_in_their_retry_class(cluster: Callable[..., Awaitable[Cluster]]) -> None:
    started = time.monotonic()
    count = pick(40, 400)
    slots = pick(8, 20)
    c = await cluster()
    bad = [
        Endpoint("hang", concurrent=True, max_in_flight=slots, timeout=TIMEOUT, retry_delays=QUICK, faults={1: "hang"}),
        Endpoint("slow", concurrent=True, max_in_flight=slots, timeout=TIMEOUT, retry_delays=QUICK, faults={1: "slow"}),
        Endpoint("hang-serial", timeout=TIMEOUT, retry_delays=QUICK, faults={1: "hang"}, fault_every=10),
        Endpoint("reset", timeout=TIMEOUT, retry_delays=QUICK, faults={1: "reset", 2: "close"}),
        Endpoint("garbage", timeout=TIMEOUT, retry_delays=QUICK, faults={1: "garbage"}),
        Endpoint("status500", concurrent=True, timeout=TIMEOUT, retry_delays=QUICK, faults={1: "500"}),
    ]
    healthy = [Endpoint("healthy"), Endpoint("healthy-c", concurrent=True)]
    eps = bad + healthy
    [url] = await c.start(eps)

    gen = LoadGenerator([url], concurrency=4)
    await asyncio.wait_for(gen.run(count, pick(20.0, 60.0)), pick(60, 180))
    # the healthy endpoints get everything while the hanging one is still working through its first tries
    healthy_pairs = pairs_for(gen.acknowledged, healthy)
    assert await converge(c.redis, healthy_pairs, pick(30, 90)) is not None, "healthy endpoints stalled"
    hang_states = await states(c.redis, pairs_for(gen.acknowledged, bad[:1]))
    still_hanging = sum(1 for s in hang_states if s != "delivered")

    pairs = pairs_for(gen.acknowledged, eps)
    settled = await converge(c.redis, pairs, pick(60, 180))
    wrong: list[str] = []
    longest = 0.0
    for ep in bad:
        records = await attempt_records(c.redis, pairs_for(gen.acknowledged, [ep]))
        refno = {h.nid: h.refno for h in ep.hits}
        for (nid, _), attempts in records.items():
            for a in attempts:
                faulty = nid in refno and refno[nid] % ep.fault_every == 0
                action = ep.faults.get(a["n"]) if faulty else None
                if action is None:
                    continue
                where = f"{ep.name} attempt {a['n']} ({action})"
                if a["outcome"] != "retry" or a["error"] not in EXPECTED[action]:
                    wrong.append(f"{where}: {a['outcome']} / {a['error']}: {a['message']}")
                if action == "500" and a["status"] != 500:
                    wrong.append(f"{where}: status {a['status']}")
                longest = max(longest, a["ms"])
                # no attempt held its worker slot past the endpoint's timeout
                if a["ms"] > TIMEOUT * 1000 + MARGIN_MS:
                    wrong.append(f"{where}: took {a['ms']} ms with a {TIMEOUT:g} s timeout")
            if attempts[-1]["outcome"] != "delivered":
                wrong.append(f"{ep.name}: last attempt {attempts[-1]['outcome']}")
    errors = await error_classes(c.redis, pairs)
    summary = await reconcile(
        "5 network misbehaviour",
        c.redis,
        gen.acknowledged,
        eps,
        started,
        load=f"{gen.started} signed IPNs at full speed; 8 endpoints (4 serial)",
        faults="hang, slow drip, TCP reset then close, non-HTTP answer, HTTP 500 (1 s timeout)",
        inputs="signed IPNs",
        command=command(NODE),
        extra={
            "settle_s": settled,
            "failed_attempts": errors,
            "longest_failed_attempt_ms": longest,
            "hang_unfinished_when_healthy_done": still_hanging,
        },
    )
    report(summary)
    assert not gen.unexpected and not gen.gave_up
    assert summary.lost == 0, summary.extra.get("lost_examples")
    assert still_hanging > 0, "the healthy endpoints only finished after the hanging one"
    assert not wrong, wrong[:10]
    seq = await seqs(c.redis, list(gen.acknowledged))
    await assert_delivered_cleanly(c, eps, seq)
    assert not c.worker_exits

"""One endpoint held back by its ``rate_limit`` under a backlog: what it costs the worker (issue 24).

1,000 notifications are pre-loaded for 8 endpoints, the 8th with ``rate_limit = 5``; one worker
starts. Once the 7 others have every delivery, only the held-back endpoint has work: the worker's
CPU is measured over MEASURE_S while it sends at 5/s with the rest of its backlog waiting. A lane that
polled for its next token would show here as CPU; the claim tells it the ms until the next request
is allowed and it sleeps that long (workers/lua/rate.lua).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from bench.harness import ENDPOINTS, EndpointSpec, cpu_pct, snapshot
from bench.procs import BenchError

if TYPE_CHECKING:
    from bench.delivery import Context, Run

BACKLOG = 1000
RATE = 5.0
MEASURE_S = 10.0
POLL_S = 0.2


def held_back(ctx: Context, run: Run) -> dict[str, Any]:
    h = ctx.h
    n = min(BACKLOG, h.opts.notifications) if h.opts.quick else BACKLOG
    measure = 2.0 if h.opts.quick else MEASURE_S
    h.flush()
    ctx.ctl.reset([0.0] * ENDPOINTS)
    specs = [
        EndpointSpec(f"ep{i + 1}", port, concurrent=True, rate_limit=RATE if i == ENDPOINTS - 1 else None)
        for i, port in enumerate(ctx.sink_ports)
    ]
    config = h.write_config(ctx.serve_port, specs)
    h.preload(ctx.serve_port, n)
    others = [f"ep{i + 1}" for i in range(ENDPOINTS - 1)]
    workers = h.start_workers(run.workers, config, wait=False)
    watched = ctx.watched(workers)
    try:
        deadline = time.monotonic() + max(120.0, 12 * h.opts.duration)
        while h.delivered(others) < n * len(others):
            if time.monotonic() > deadline:
                raise BenchError(f"the 7 unthrottled endpoints got {h.delivered(others)} of {n * len(others)}")
            for child in watched:
                child.check()
            time.sleep(POLL_S)
        quiet = h.wait_quiet()
        sent0, before = h.delivered(["ep8"]), snapshot(watched)
        time.sleep(measure)
        sent1, after = h.delivered(["ep8"]), snapshot(watched)
        memory = {w.name: w.memory() for w in workers}
    finally:
        for w in workers:
            h.cluster.stop(w)
    cpu = cpu_pct(before, after)
    sent = sent1 - sent0
    spent_s = sum(
        cpu - before.procs.get(name, 0.0) for name, cpu in after.procs.items() if name.startswith("relay-worker")
    )
    return {
        "label": run.label(),
        "kind": run.kind,
        "workers": run.workers,
        "mode": run.mode,
        "slow_endpoint": False,
        "notifications": n,
        "expected": n * ENDPOINTS,
        "delivered": h.delivered([*others, "ep8"]),
        "complete": True,  # the backlog is meant to be left waiting: the run measures the wait
        "rate_limit": RATE,
        "measured_s": measure,
        "deliveries_per_s": round(sent / measure, 2),
        "per_endpoint_per_s": round(sent / measure, 2),
        "held_back_at_end": n - sent1,
        "worker_cpu_pct": round(100 * spent_s / measure, 2),
        "worker_cpu_us_per_delivery": round(1e6 * spent_s / sent, 1) if sent else None,
        "cpu_pct": cpu,
        "worker_memory_kb": memory,
        "other_cpu_pct_before": quiet,
    }

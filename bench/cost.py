"""Cost: process memory, and Redis memory and CPU per notification and per delivery record.

One pipeline on an empty Redis: pre-load N notifications through relay serve (no worker), then
one worker delivers them to 8 serial endpoints. Redis figures are deltas of INFO ``used_memory``
and ``used_cpu_sys + used_cpu_user`` over each step divided by its count; MEMORY USAGE of sampled
keys is reported beside them as a cross-check.
"""

from __future__ import annotations

import time
from typing import Any, cast

from bench import delivery
from bench.harness import ENDPOINTS, Harness
from bench.procs import BenchError

SAMPLE_KEYS = 50
SETTLE_S = 1.0
TOP_COMMANDS = 10


def _key_bytes(h: Harness, pattern: str, nids: list[str]) -> float:
    pipe = h.redis.pipeline(transaction=False)
    for nid in nids:
        pipe.memory_usage(pattern.format(nid=nid), samples=0)
    sizes = [int(s) for s in pipe.execute() if s is not None]
    return round(sum(sizes) / len(sizes), 1) if sizes else 0.0


def _commands(h: Harness) -> dict[str, tuple[int, int]]:
    return {
        name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for name, v in h.info("commandstats").items()
    }


def _top(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], per: int) -> list[dict[str, Any]]:
    """Redis commands by time spent per item; a script's time includes the commands it calls."""
    deltas = [
        (name, calls - before.get(name, (0, 0))[0], usec - before.get(name, (0, 0))[1])
        for name, (calls, usec) in after.items()
    ]
    deltas.sort(key=lambda d: -d[2])
    return [
        {"command": name, "calls_per_item": round(calls / per, 2), "usec_per_item": round(usec / per, 1)}
        for name, calls, usec in deltas[:TOP_COMMANDS]
        if calls > 0
    ]


def run(h: Harness) -> dict[str, Any]:
    n = max(100, h.opts.notifications // 2)
    ctx = delivery.start(h)
    try:
        h.flush()
        ctx.ctl.reset([0.0] * ENDPOINTS)
        config = h.write_config(ctx.serve_port, ctx.endpoints(delivery.Run("drain", 1, False)))
        time.sleep(SETTLE_S)
        usage0, commands0 = h.redis_usage(), _commands(h)
        h.preload(ctx.serve_port, n)
        time.sleep(SETTLE_S)
        usage1, commands1 = h.redis_usage(), _commands(h)
        serve_memory = ctx.serve.memory()
        nids = [raw.decode() for raw in cast(list[bytes], h.redis.zrange("relay:ix:all", 0, SAMPLE_KEYS - 1))]
        notification_key = _key_bytes(h, "relay:n:{nid}", nids)
        workers = h.start_workers(1, config, wait=False)
        try:
            names = [f"ep{i + 1}" for i in range(ENDPOINTS)]
            expected = n * ENDPOINTS
            delivery.poll_delivered(ctx, names, expected, max(60.0, 12 * h.opts.duration), workers)
            if h.delivered(names) < expected:
                raise BenchError(f"cost: only {h.delivered(names)} of {expected} deliveries within the time limit")
            time.sleep(SETTLE_S)
            usage2, commands2 = h.redis_usage(), _commands(h)
            worker_memory = workers[0].memory()
        finally:
            for w in workers:
                h.cluster.stop(w)
        delivery_key = _key_bytes(h, "relay:d:{nid}:ep1", nids)
        attempts_key = _key_bytes(h, "relay:a:{nid}:ep1", nids)
    finally:
        h.cluster.stop(ctx.serve)
        h.cluster.stop(ctx.sinks)
    deliveries = n * ENDPOINTS
    return {
        "notifications": n,
        "deliveries": deliveries,
        "serve_memory_kb": serve_memory,
        "worker_memory_kb": worker_memory,
        "redis_bytes_per_notification": round((usage1["used_memory"] - usage0["used_memory"]) / n, 1),
        "redis_bytes_per_delivery": round((usage2["used_memory"] - usage1["used_memory"]) / deliveries, 1),
        "redis_bytes_per_notification_delivered": round((usage2["used_memory"] - usage0["used_memory"]) / n, 1),
        "redis_cpu_us_per_notification_ingest": round(1e6 * (usage1["cpu_s"] - usage0["cpu_s"]) / n, 1),
        "redis_cpu_us_per_delivery": round(1e6 * (usage2["cpu_s"] - usage1["cpu_s"]) / deliveries, 1),
        "redis_commands_ingest_per_notification": _top(commands0, commands1, n),
        "redis_commands_delivery_per_delivery": _top(commands1, commands2, deliveries),
        "memory_usage_sampled": {
            "relay:n:{nid}": notification_key,
            "relay:d:{nid}:{ep}": delivery_key,
            "relay:a:{nid}:{ep}": attempts_key,
        },
    }

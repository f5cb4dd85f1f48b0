"""Memory: Redis bytes per notification by key family, and Redis CPU per delivery by command.

A realistic drain on an empty Redis: N unique signed 1.5 KB notifications pre-loaded through relay
serve, then one worker delivers them to 8 concurrent endpoints; one notification in FAIL_EVERY is
answered 503 once by every sink, so its deliveries are retried once (a log of two attempts). After
the drain every key is measured with ``MEMORY USAGE`` (all samples) and grouped by its template in
relay/constants.py (KEY_TEMPLATES, and the keys spelled there); a family shared by all
notifications (an index, a state zset) is attributed per notification as its total over N. The
``INFO memory`` ``used_memory`` delta over the whole run per notification is the reference: it
includes the main dictionary's and the expires dictionary's own growth, which MEMORY USAGE does not.

Redis CPU per delivery: the ``INFO commandstats`` delta over the delivery phase (fan-out, claims,
results), per command, over the deliveries; a script's time (evalsha) includes the commands it calls,
which are listed beside it as well. ``used_cpu_sys + used_cpu_user`` per delivery is the reference.
"""

from __future__ import annotations

import re
import time
from typing import Any

from bench import delivery
from bench.harness import ENDPOINTS, EndpointSpec, Harness
from bench.procs import BenchError
from relay import constants as k

SETTLE_S = 1.0
FAIL_EVERY = 10
# a 503 is retried after this long (the endpoints' own retry_delays): the drain is not held up
RETRY_S = 0.05
TOP_COMMANDS = 14
SCAN_COUNT = 1000

# the key families that are not in KEY_TEMPLATES, by the template constants.py documents them with
EXTRA_TEMPLATES = {
    "idx_all": k.IDX_ALL,
    "idx_channel": "relay:ix:ch:{c}",
    "idx_type": "relay:ix:type:{type}",
    "idx_ref": "relay:ix:ref:{ref}",
    "ins_triple": "relay:ins:{src}:{sale}:{inv}:{type}",
    "fanout": k.FANOUT,
    "seq": k.SEQ,
    "stats": k.STATS,
    "workers": k.WORKERS,
    "endpoints": k.EP_REGISTRY,
    "procs": k.PROCS,
    "arq_job": "arq:job:{job}",
    "arq_queue": k.QUEUE_NAME,
}


def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile("".join("[^:]+" if p.startswith("{") else re.escape(p) for p in parts) + "$")


def families() -> list[tuple[str, str, re.Pattern[str]]]:
    """(name, template, pattern); a key belongs to the first that matches (the most specific first)."""
    out = [(name, t, _pattern(t)) for name, t in {**k.KEY_TEMPLATES, **EXTRA_TEMPLATES}.items()]
    # ins_triple's parts may hold colons; a template with fewer literal parts matches last
    out.sort(key=lambda f: -len(re.sub(r"\{[^}]+\}", "", f[1])))
    out.append(("other", "(any other key)", re.compile(".*")))
    return out


def key_families(h: Harness, per: int) -> list[dict[str, Any]]:
    """Every key's MEMORY USAGE, summed by family, in bytes per notification (largest first)."""
    fams = families()
    sizes: dict[str, list[int]] = {}
    keys: list[str] = []
    for raw in h.redis.scan_iter(count=SCAN_COUNT):
        keys.append(raw.decode() if isinstance(raw, bytes) else str(raw))
    for start in range(0, len(keys), SCAN_COUNT):
        chunk = keys[start : start + SCAN_COUNT]
        pipe = h.redis.pipeline(transaction=False)
        for key in chunk:
            pipe.memory_usage(key, samples=0)
        for key, size in zip(chunk, pipe.execute(), strict=True):
            name = next(n for n, _, p in fams if p.match(key))
            sizes.setdefault(name, [0, 0])
            sizes[name][0] += 1
            sizes[name][1] += int(size or 0)
    templates = {name: t for name, t, _ in fams}
    rows: list[dict[str, Any]] = [
        {
            "family": templates[name],
            "keys": count,
            "keys_per_notification": round(count / per, 2),
            "bytes_per_notification": round(total / per, 1),
            "bytes_per_key": round(total / count, 1) if count else 0.0,
        }
        for name, (count, total) in sizes.items()
    ]
    rows.sort(key=lambda r: -float(r["bytes_per_notification"]))
    return rows


def _commands(h: Harness) -> dict[str, tuple[int, int]]:
    return {
        name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for name, v in h.info("commandstats").items()
    }


def command_costs(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], per: int
) -> list[dict[str, Any]]:
    """Each command's calls and µs per delivery, and µs per call, most expensive first."""
    rows: list[dict[str, Any]] = []
    for name, (calls, usec) in after.items():
        c0, u0 = before.get(name, (0, 0))
        if calls > c0:
            rows.append(
                {
                    "command": name,
                    "calls_per_delivery": round((calls - c0) / per, 2),
                    "usec_per_call": round((usec - u0) / (calls - c0), 2),
                    "usec_per_delivery": round((usec - u0) / per, 2),
                }
            )
    rows.sort(key=lambda r: -float(r["usec_per_delivery"]))
    return rows[:TOP_COMMANDS]


def run(h: Harness) -> dict[str, Any]:
    n = max(100, h.opts.notifications // 2)
    ctx = delivery.start(h)
    try:
        h.flush()
        h.redis.config_resetstat()
        ctx.ctl.reset([0.0] * ENDPOINTS, fail_every=FAIL_EVERY)
        endpoints = [
            EndpointSpec(f"ep{i + 1}", port, concurrent=True, retry_delays=(RETRY_S,))
            for i, port in enumerate(ctx.sink_ports)
        ]
        config = h.write_config(ctx.serve_port, endpoints)
        time.sleep(SETTLE_S)
        usage0 = h.redis_usage()
        h.preload(ctx.serve_port, n)
        time.sleep(SETTLE_S)
        usage1, commands1 = h.redis_usage(), _commands(h)
        workers = h.start_workers(1, config, wait=False)
        names = [f"ep{i + 1}" for i in range(ENDPOINTS)]
        expected = n * ENDPOINTS
        try:
            delivery.poll_delivered(ctx, names, expected, max(60.0, 12 * h.opts.duration), workers)
            if h.delivered(names) < expected:
                raise BenchError(f"memory: only {h.delivered(names)} of {expected} deliveries within the time limit")
            time.sleep(SETTLE_S)
            usage2, commands2 = h.redis_usage(), _commands(h)
        finally:
            for w in workers:
                h.cluster.stop(w)
        retried = sum(ctx.ctl.stats()["requests"]) - expected
        table = key_families(h, n)
    finally:
        h.cluster.stop(ctx.serve)
        h.cluster.stop(ctx.sinks)
    return {
        "notifications": n,
        "deliveries": expected,
        "retried_deliveries": retried,
        "redis_bytes_per_notification_delivered": round((usage2["used_memory"] - usage0["used_memory"]) / n, 1),
        "memory_usage_bytes_per_notification": round(sum(float(r["bytes_per_notification"]) for r in table), 1),
        "key_families": table,
        "redis_cpu_us_per_delivery": round(1e6 * (usage2["cpu_s"] - usage1["cpu_s"]) / expected, 1),
        "redis_commands_per_delivery": command_costs(commands1, commands2, expected),
    }

"""``python -m bench.idle``: what an idle worker costs, and receipt→delivered at a trickle.

Starts a Redis, ``relay serve``, one ``relay worker`` and a demo endpoint (8 endpoints configured on
it, as in the delivery bench), then

1. leaves them idle and measures the worker's and Redis's CPU over ``--idle`` seconds;
2. sends ``--count`` signed IPNs at ``--rate`` per second (a trickle: the worker is idle between
   them) and reports receipt→delivered (Redis's ``recv`` to ``delivered_at``) over every delivery.

Options: ``--idle S`` (default 30), ``--count N`` (100), ``--rate R`` (5). Prints one markdown row.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import redis

from bench.procs import Cluster, free_port, start_redis, wait_http, wait_until
from config.settings import load_settings
from relay import constants as k
from relay.cli.sendtest import build
from relay.store.ingest import notification_id

ENDPOINTS = 8
SECRETS = {"TCO_SECRET_KEY": "bench-secret-key-idle", "TCO_INS_SECRET_WORD": "bench-word"}


def _config(root: Path, web: int, sink: int) -> Path:
    lines = [
        f"[server]\nport = {web}\n",
        "[admin]\nport = 0\n",
        '[logging]\nformat = "json"\n',
        '[[sources]]\nname = "default"\nsecret_key_env = "TCO_SECRET_KEY"\n'
        'ins_secret_word_env = "TCO_INS_SECRET_WORD"\nseller_id = "1303908"\n',
    ]
    for i in range(ENDPOINTS):
        lines.append(
            f'[[endpoints]]\nname = "ep{i + 1}"\nurl = "http://127.0.0.1:{sink}/ep{i + 1}"\nchannels = ["ipn"]\n'
        )
    path = root / "relay.toml"
    path.write_text("\n".join(lines))
    return path


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__.splitlines()[0])
    p.add_argument("--idle", type=float, default=30.0, help="seconds of idle CPU measurement (default 30)")
    p.add_argument("--count", type=int, default=100, help="notifications sent at a trickle (default 100)")
    p.add_argument("--rate", type=float, default=5.0, help="their rate per second (default 5)")
    ns = p.parse_args(argv)
    cluster = Cluster()
    try:
        redis_child, redis_port = start_redis(cluster)
        web, sink = free_port(), free_port()
        config = _config(cluster.root, web, sink)
        env = {**os.environ, **SECRETS, "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"}
        sink_child = cluster.python("sink", "relay", "demo-sink", "--port", str(sink), env=env)
        serve = cluster.python("serve", "relay", "--config", str(config), "serve", env=env)
        worker = cluster.python("worker", "relay", "--config", str(config), "worker", env=env)
        wait_http(f"http://127.0.0.1:{web}/healthz", serve)
        wait_http(f"http://127.0.0.1:{sink}/", sink_child)
        r: Any = redis.Redis(port=redis_port)  # the sync client: its awaitable-or-value types say little
        wait_until("worker heartbeat", lambda: r.zcard(k.WORKERS) > 0, 30, worker)
        time.sleep(3)  # let start-up work (first sweep, lanes' first claims) pass before measuring idle
        w0, r0, t0 = worker.cpu(), redis_child.cpu(), time.monotonic()
        time.sleep(ns.idle)
        w1, r1, t1 = worker.cpu(), redis_child.cpu(), time.monotonic()
        worker_pct, redis_pct = 100 * (w1 - w0) / (t1 - t0), 100 * (r1 - r0) / (t1 - t0)

        settings = load_settings(config, env)
        source = settings.sources["default"]
        nids = []
        start = time.monotonic()
        for i in range(ns.count):
            time.sleep(max(0.0, start + i / ns.rate - time.monotonic()))
            body = build("ipn", source, ref=f"{700000000 + i}")
            req = urllib.request.Request(
                f"http://127.0.0.1:{web}/ipn",
                data=body,
                method="POST",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert resp.status == 200
            nids.append(notification_id("default", "ipn", body))

        def delivered() -> bool:
            return all(
                r.hget(k.delivery(nid, f"ep{j + 1}"), "state") == b"delivered" for nid in nids for j in range(ENDPOINTS)
            )

        wait_until("every trickle delivery", delivered, 60, worker, interval=0.2)
        r2d: list[float] = []
        for nid in nids:
            recv = int(r.hget(k.notification(nid), "recv") or 0)
            for j in range(ENDPOINTS):
                r2d.append(int(r.hget(k.delivery(nid, f"ep{j + 1}"), "delivered_at") or 0) - recv)
        print(
            "| idle worker CPU % of a core | idle Redis CPU % | trickle | receipt→delivered p50 ms | p99 ms | max ms |"
        )
        print("|---|---|---|---|---|---|")
        print(
            f"| {worker_pct:.1f} | {redis_pct:.1f} | {ns.count} IPNs at {ns.rate:g}/s to {ENDPOINTS} endpoints "
            f"| {statistics.median(r2d):.1f} | {percentile(r2d, 0.99):.1f} | {max(r2d):.1f} |"
        )
        return 0
    finally:
        cluster.close()


if __name__ == "__main__":
    sys.exit(main())

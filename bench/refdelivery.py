"""The delivery reference (r), run as its own process: ``python -m bench.refdelivery '<spec as JSON>'``.

What the HTTP client alone costs: one process (uvloop) POSTs signed IPN bodies to the 8 sinks with
one ``aiohttp.ClientSession`` set up as the worker's (no connection limit, no cookie jar, no
Accept-Encoding) over keep-alive connections, with the headers a worker sends, and nothing else:
no Redis, no claiming, no recording. Each endpoint is served by ``in_flight`` tasks (1: one
delivery at a time, like a serial endpoint), all run with ``asyncio.gather``.

The first ``warmup`` share of the notifications opens the connections and is not counted; over the
rest it reports deliveries/s and the process's CPU µs per POST, and prints them as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp

from bench.bodies import BodySource
from bench.procs import HOST

BODIES = 256
USER_AGENT = "relay-bench-reference/1"


@dataclass
class Spec:
    ports: list[int]
    notifications: int = 4000
    in_flight: int = 1  # tasks per endpoint
    warmup: float = 0.1  # share of the notifications not counted
    seed: int = 1
    timeout: float = 5.0


def headers(nid: str, ep: int, now_s: int) -> dict[str, str]:
    """The headers a worker sends with an original-bytes delivery (workers/forward.py), unsigned."""
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "User-Agent": USER_AGENT,
        "webhook-id": f"msg_{nid}_ep{ep}",
        "webhook-timestamp": str(now_s),
        "Relay-Notification-Id": nid,
        "Relay-Channel": "ipn",
        "Relay-Source": "default",
        "Relay-Attempt": "1",
        "Relay-Resend": "false",
    }


async def deliver(
    spec: Spec, bodies: list[bytes], first: int, last: int, session: aiohttp.ClientSession
) -> dict[str, int]:
    """POST notifications ``first``..``last - 1`` to every endpoint; count answers by outcome."""
    timeout = aiohttp.ClientTimeout(total=spec.timeout)
    counts = {"ok": 0, "errors": 0}
    nxt = [first] * len(spec.ports)

    async def lane(ep: int) -> None:
        url = f"http://{HOST}:{spec.ports[ep]}/hook"
        while nxt[ep] < last:
            i = nxt[ep]
            nxt[ep] += 1
            nid = f"ref{spec.seed}-{i}"
            try:
                async with session.post(
                    url,
                    data=bodies[i % len(bodies)],
                    headers=headers(nid, ep, int(time.time())),
                    allow_redirects=False,
                    timeout=timeout,
                ) as resp:
                    await resp.read()
                    counts["ok" if resp.status == 200 else "errors"] += 1
            except (TimeoutError, aiohttp.ClientError):
                counts["errors"] += 1

    await asyncio.gather(*(lane(ep) for ep in range(len(spec.ports)) for _ in range(spec.in_flight)))
    return counts


async def run(spec: Spec) -> dict[str, Any]:
    source = BodySource(b"bench-reference", spec.seed, dup_every=0)
    bodies = [source.next() for _ in range(BODIES)]
    split = int(spec.notifications * spec.warmup)
    # the session as the worker makes it (workers/jobs.py:startup)
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300, enable_cleanup_closed=True)
    async with aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("Accept-Encoding",),
    ) as session:
        await deliver(spec, bodies, 0, split, session)
        cpu0, t0 = time.process_time(), time.perf_counter()
        counts = await deliver(spec, bodies, split, spec.notifications, session)
        cpu, elapsed = time.process_time() - cpu0, time.perf_counter() - t0
    posts = counts["ok"] + counts["errors"]
    return {
        "spec": asdict(spec),
        "measured_notifications": spec.notifications - split,
        "ok": counts["ok"],
        "errors": counts["errors"],
        "elapsed_s": round(elapsed, 3),
        "deliveries_per_s": round(counts["ok"] / elapsed, 1) if elapsed else 0.0,
        "cpu_pct": round(100 * cpu / elapsed, 1) if elapsed else 0.0,
        "cpu_us_per_post": round(1e6 * cpu / posts, 1) if posts else None,
        "cpu_s": round(time.process_time(), 3),  # the whole process, start-up included
    }


def main() -> None:
    spec = Spec(**json.loads(sys.argv[1]))
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(spec))
    else:
        result = uvloop.run(run(spec))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

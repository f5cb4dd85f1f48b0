"""Reads under a backlog: every operator read at a small and a large backlog, and Redis's SLOWLOG (issue 26).

The backlog is notifications pending to 8 endpoints that nobody drains: the endpoints are paused while
the notifications are stored (the store's own ``Store.ingest``, in bulk, from signed bodies parsed as the
ingress parses them) and two real ``relay worker`` processes route them; the worker stops and the endpoints are
resumed (through the admin API, as an operator would), so every delivery waits as ``pending``. The
small backlog grows to the large one the same way (pause, store the rest, route, resume).

At each size every read is timed ``CALLS`` times, round-robin (medians): the admin API's health, its
notification listing with each filter, and a notification's detail (the reference) over HTTP from
``relay serve``; ``relay health``'s read (``health_report``) and the dashboard's overview model in this
process, with the detail read in this process as their reference. SLOWLOG (commands of 10 ms or more)
is reset before the reads and read after them; the pause and resume that build the backlog are
reported apart (they are operator actions too).
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from bench.bodies import BodySource
from bench.harness import ENDPOINTS, EndpointSpec, Harness
from bench.procs import HOST, BenchError, Child, free_port, wait_http
from config.settings import Settings, load_settings
from relay import events, protocol
from relay.store.connection import clock_ms
from relay.store.detail import detail
from relay.store.ingest import Store, notification_id
from relay.store.overview import overview_model
from relay.store.stats import health_report

SIZES = (5_000, 40_000)
QUICK_SIZES = (300, 2_400)
CALLS = 15
QUICK_CALLS = 3
PAGE = 50
SLOW_US = 10_000  # SLOWLOG's threshold: commands of 10 ms or more
INGEST_CONCURRENCY = 400
ROUTING_WORKERS = 2
TOKEN_ENV = "RELAY_ADMIN_TOKEN"
# the listing's filters, each as an operator would ask for a page of 50
LISTINGS = {
    "none": {},
    "state": {"state": "pending"},
    "state, none in it": {"state": "delivered"},  # an empty page: every candidate looked at in vain
    "endpoint": {"endpoint": "ep3"},
    "state+endpoint": {"state": "pending", "endpoint": "ep3"},
    "channel": {"channel": "ipn"},
    "type": {"type": "{type}"},
    "source": {"source": "default"},
}
HTTP_REFERENCE = "detail (API)"
LOCAL_REFERENCE = "detail (in process)"


def run(h: Harness) -> dict[str, Any]:
    sizes = QUICK_SIZES if h.opts.quick else SIZES
    calls = QUICK_CALLS if h.opts.quick else CALLS
    h.flush()
    token = secrets.token_urlsafe(24)
    dead = free_port()  # nothing listens: nothing is ever sent, the endpoints only hold the backlog
    eps = [EndpointSpec(f"ep{i + 1}", dead, concurrent=True) for i in range(ENDPOINTS)]
    serve_port = free_port()
    config = h.write_config(serve_port, eps)
    admin_port = int(tomllib.loads(Path(config).read_text(encoding="utf-8"))["admin"]["port"])
    env = {**h.env(), TOKEN_ENV: token}
    serve = h.cluster.python("relay-serve", "relay", "--config", config, "serve", env=env)
    try:
        wait_http(f"http://{HOST}:{serve_port}/healthz", serve)
        settings = load_settings(Path(config), env)
        return asyncio.run(_measure(h, settings, config, env, f"http://{HOST}:{admin_port}", token, sizes, calls))
    finally:
        h.cluster.stop(serve)


async def _measure(
    h: Harness,
    settings: Settings,
    config: str,
    env: dict[str, str],
    admin: str,
    token: str,
    sizes: tuple[int, ...],
    calls: int,
) -> dict[str, Any]:
    redis = Redis.from_url(h.redis_url)
    headers = {"Authorization": f"Bearer {token}"}
    out: dict[str, Any] = {"sizes": list(sizes), "calls": calls, "page": PAGE, "at": {}}
    try:
        async with aiohttp.ClientSession(admin, headers=headers) as http:
            bodies = BodySource(h.secret_key.encode(), h.seed(), dup_every=0)
            stored = 0
            for size in sizes:
                build = await _grow(h, redis, http, settings, config, env, bodies, size - stored)
                stored = size
                out["at"][str(size)] = {"build": build, **await _reads(h, redis, http, settings, calls)}
    finally:
        await redis.aclose()
    small, large = (out["at"][str(s)] for s in (sizes[0], sizes[-1]))
    reads = large["ms"]
    out["ratios"] = {
        "growth": {name: _ratio(reads[name], small["ms"][name]) for name in reads},
        "over_detail": {
            name: _ratio(ms, reads[LOCAL_REFERENCE if name in LOCAL_READS else HTTP_REFERENCE])
            for name, ms in reads.items()
            if name not in (HTTP_REFERENCE, LOCAL_REFERENCE)
        },
    }
    return out


def _ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else 0.0


async def _grow(
    h: Harness,
    redis: Redis,
    http: aiohttp.ClientSession,
    settings: Settings,
    config: str,
    env: dict[str, str],
    bodies: BodySource,
    count: int,
) -> dict[str, Any]:
    """``count`` more notifications pending to every endpoint; the time of each step and SLOWLOG of the
    operator actions (pause, resume) among them."""
    started = time.monotonic()
    await _slowlog_reset(redis)
    for ep in settings.endpoints:
        await _post(http, f"/api/endpoints/{ep}/pause")
    paused_at = time.monotonic()
    control_slow = await _slowlog(redis)
    store = Store(redis, settings.delivery.retention_ms)
    sem = asyncio.Semaphore(INGEST_CONCURRENCY)

    async def one() -> None:
        body = bodies.next()
        fields = protocol.parse_form(body)
        facts = protocol.facts("ipn", fields)
        facts["type"] = events.event_type("ipn", fields)[0]
        nid = notification_id("default", "ipn", body, fields, protocol.signature_source(fields))
        async with sem:
            await store.ingest(
                nid=nid,
                source="default",
                channel="ipn",
                body=body,
                content_type="application/x-www-form-urlencoded",
                algo="sha256",
                facts=facts,
            )

    await asyncio.gather(*(one() for _ in range(count)))
    stored_at = time.monotonic()
    workers = h.start_workers(ROUTING_WORKERS, config)
    try:
        await _routed(redis, workers, 60 + count / 200)
    finally:
        for worker in workers:
            h.cluster.stop(worker)
    routed_at = time.monotonic()
    await _slowlog_reset(redis)
    for ep in settings.endpoints:
        await _post(http, f"/api/endpoints/{ep}/resume")
    control_slow = _merge_slow(control_slow, await _slowlog(redis))
    pending = sum([int(await redis.zcard(f"relay:ep:{ep}:st:pending")) for ep in settings.endpoints])
    return {
        "added": count,
        "pending_deliveries": pending,
        "pause_s": round(paused_at - started, 2),
        "store_s": round(stored_at - paused_at, 2),
        "route_s": round(routed_at - stored_at, 2),
        "resume_s": round(time.monotonic() - routed_at, 2),
        "control_slowlog": control_slow,
    }


async def _routed(redis: Redis, workers: list[Child], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while int(await redis.zcard("relay:fanout")):
        if time.monotonic() > deadline or not all(w.alive() for w in workers):
            raise BenchError(
                f"reads: the workers did not route the backlog within {timeout:.0f} s; see {workers[0].log}"
            )
        await asyncio.sleep(0.2)


async def _post(http: aiohttp.ClientSession, path: str) -> None:
    async with http.post(path, json={}) as r:
        if r.status != 200:
            raise BenchError(f"reads: POST {path} answered {r.status}: {(await r.text())[:300]}")
        await r.read()


async def _get(http: aiohttp.ClientSession, path: str, params: dict[str, str] | None = None) -> Any:
    async with http.get(path, params=params) as r:
        if r.status != 200:
            raise BenchError(f"reads: GET {path} {params or ''} answered {r.status}: {(await r.text())[:300]}")
        return await r.json()


LOCAL_READS = ("relay health", "dashboard overview", LOCAL_REFERENCE)


async def _reads(
    h: Harness, redis: Redis, http: aiohttp.ClientSession, settings: Settings, calls: int
) -> dict[str, Any]:
    """Each read's median ms over ``calls`` rounds (each round calls every read once), the items each
    listing returned, and SLOWLOG over all of them."""
    newest = await redis.zrevrange("relay:ix:all", 0, 0)
    middle = await redis.zrange("relay:ix:all", int(await redis.zcard("relay:ix:all")) // 2, -1)
    nid, etype = middle[0].decode(), ""
    raw_type = await redis.hget(f"relay:n:{newest[0].decode()}", "type")  # type: ignore[misc]
    etype = raw_type.decode() if raw_type else ""
    items: dict[str, int] = {}

    def listing(name: str, filters: dict[str, str]) -> Callable[[], Awaitable[None]]:
        params = {key: value.format(type=etype) for key, value in filters.items()} | {"limit": str(PAGE)}

        async def read() -> None:
            doc = await _get(http, "/api/notifications", params)
            items[name] = len(doc["items"])

        return read

    async def api_health() -> None:
        await _get(http, "/api/health")

    async def api_detail() -> None:
        await _get(http, f"/api/notifications/{nid}")

    async def cli_health() -> None:
        await health_report(redis, settings, await clock_ms(redis))

    async def overview() -> None:
        await overview_model(redis, settings, await clock_ms(redis))

    async def local_detail() -> None:
        await detail(redis, nid)

    reads: dict[str, Callable[[], Awaitable[None]]] = {
        "/api/health": api_health,
        **{f"listing: {name}": listing(name, f) for name, f in LISTINGS.items()},
        HTTP_REFERENCE: api_detail,
        "relay health": cli_health,
        "dashboard overview": overview,
        LOCAL_REFERENCE: local_detail,
    }
    for _ in range(2):  # warm: connections, script caches, the processes' caches after the build
        for read in reads.values():
            await read()
    h.wait_quiet()
    await _slowlog_reset(redis)
    samples: dict[str, list[float]] = {name: [] for name in reads}
    for _ in range(calls):
        for name, read in reads.items():
            t0 = time.perf_counter()
            await read()
            samples[name].append((time.perf_counter() - t0) * 1000)
    slow = await _slowlog(redis)
    short = {name: n for name, n in items.items() if n < PAGE and name != "state, none in it"}
    if short:
        raise BenchError(f"reads: listings returned short pages (of {PAGE}): {short}")
    return {"ms": {name: round(statistics.median(s), 2) for name, s in samples.items()}, "slowlog": slow}


async def _slowlog_reset(redis: Redis) -> None:
    await redis.config_set("slowlog-log-slower-than", SLOW_US)
    await redis.config_set("slowlog-max-len", 1024)
    await redis.slowlog_reset()


async def _slowlog(redis: Redis) -> dict[str, Any]:
    entries = await redis.slowlog_get(1024)
    commands: list[dict[str, Any]] = [
        {
            "us": int(e["duration"]),
            "command": (
                e["command"].decode(errors="replace") if isinstance(e["command"], bytes) else str(e["command"])
            )[:80],
        }
        for e in entries
    ]
    commands.sort(key=lambda c: -c["us"])
    return {"count": len(commands), "max_us": commands[0]["us"] if commands else 0, "slowest": commands[:5]}


def _merge_slow(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    slowest = sorted(a["slowest"] + b["slowest"], key=lambda c: -c["us"])[:5]
    return {"count": a["count"] + b["count"], "max_us": max(a["max_us"], b["max_us"]), "slowest": slowest}

"""ARQ job functions: the worker's start and stop, the periodic sweeper, and an older ingress's fan-out job.

The fan-out itself runs in the engine (workers/fanout.py), in batches; ARQ runs the cron jobs."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any

import aiohttp
import structlog

from config.settings import Settings, load_settings
from relay import constants as k
from relay.alerting.send import notify
from relay.alerting.watch import RedisOutage
from relay.store import audit, endpoints
from relay.store.connection import REDIS_ERRORS, connect, redis_url
from relay.store.reload import Reloader
from workers import removed, retention
from workers.engine import Engine

logger = structlog.get_logger()

HEARTBEAT_S = 5
REMOVED_NAMES_EVERY_S = 60


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx.get("settings") or load_settings()
    ctx["settings"] = settings
    redis = connect(redis_url(settings))
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300, enable_cleanup_closed=True)
    # no cookie jar: a Set-Cookie from one answer must not ride along on every later delivery (and
    # filtering the jar is per-request work); no Accept-Encoding: answers are kept as snippets, never
    # decompressed, so asking for gzip would store compressed bytes as the endpoint's "response"
    session = aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("Accept-Encoding",),
    )
    engine = Engine(redis, settings, session, **ctx.get("engine_options", {}))
    watch = ctx.get("queue_watch")  # RelayWorker's (workers/wake.py): it wakes the fan-out loop
    if watch is not None:
        engine.fanout_signal, engine.fanout_watch = watch.stored, watch
    ctx["relay_redis"], ctx["session"], ctx["engine"] = redis, session, engine
    # tests running several workers in one process name them apart
    ctx.setdefault("worker_name", f"{socket.gethostname()}:{os.getpid()}")
    # an endpoint the file no longer has (edited, then restarted rather than reloaded) is removed as a
    # reload removes it; and the old work of every removed endpoint is cancelled before any lane starts,
    # so a re-added one sends only what is routed to it from now on
    gone = await endpoints.register(redis, settings, start=True)
    engine.removed = await endpoints.removed(redis)
    await removed.cancel(redis, settings, engine.removed, audit.Origin("reload", ctx["worker_name"]), everything=True)
    if gone:
        logger.warning("endpoints_removed_at_start", endpoints=gone)
    await engine.start()
    # back after an outage this process alerted about (workers/main.py): its recovery, once per host
    outage: RedisOutage | None = ctx.get("redis_outage")
    if outage is not None:
        await notify(await asyncio.to_thread(outage.up, settings, engine.redis_ms()), settings, session)
    # every process beats on its own (the sweeper cron runs on only one worker per tick)
    ctx["heartbeat"] = asyncio.create_task(_beat(ctx), name="heartbeat")
    reloader = Reloader(
        redis,
        settings,
        role="worker",
        name=ctx["worker_name"],
        apply=lambda old, new: reconfigure(ctx, old, new),
        load=ctx.get("load_settings", load_settings),
    )
    ctx["reloader"], ctx["background"] = reloader, set()
    reloader.start()
    ctx["started"] = True  # workers/main.py: a later loss of Redis is a new outage (its backoff starts again)
    logger.info("worker_started", worker=ctx["worker_name"], endpoints=sorted(settings.endpoints))


async def shutdown(ctx: dict[str, Any]) -> None:
    """Stop the lanes (in-flight deliveries finish or are left to their leases), then disconnect.

    Safe to call twice and with Redis down: it also runs after a lost connection.
    """
    if "heartbeat" in ctx:
        ctx.pop("heartbeat").cancel()
    reloader: Reloader | None = ctx.pop("reloader", None)
    if reloader is not None:
        await reloader.stop()
    for task in ctx.pop("background", ()):
        task.cancel()
    engine: Engine | None = ctx.pop("engine", None)
    if engine is not None:
        await engine.stop(grace=max((ep.timeout for ep in engine.settings.endpoints.values()), default=5))
    if "session" in ctx:
        await ctx.pop("session").close()
    redis = ctx.pop("relay_redis", None)
    if redis is not None:
        try:
            await redis.zrem(k.WORKERS, ctx["worker_name"])
        except REDIS_ERRORS:
            pass  # it ages out of relay:workers
        await redis.aclose()
    logger.info("worker_stopped", worker=ctx.get("worker_name"))


async def reconfigure(ctx: dict[str, Any], old: Settings, new: Settings) -> dict[str, Any]:
    """Apply a reloaded config: lanes follow the endpoints; a removed endpoint's work is cancelled.

    The removal is recorded in Redis (relay/store/endpoints.py) and its work routed before it is
    cancelled now; what was in flight on the retired lanes is cancelled once recorded, and whatever
    this misses (a Redis error here, a worker still on the old config) by the sweeper. If the new config
    runs but the removal could not be recorded, the answer says so (``incomplete``) and it is retried
    in the background until it is. Every worker does this, which is safe: cancelling what is already
    cancelled changes nothing, and only work routed before the removal is ever touched.
    """
    engine: Engine = ctx["engine"]
    redis = ctx["relay_redis"]
    origin = audit.Origin("reload", ctx["worker_name"])
    # an endpoint coming back: its old work is cancelled before its new lane starts
    back = {name: r for name, r in engine.removed.items() if name in new.endpoints and name not in old.endpoints}
    if back:
        await removed.cancel(redis, new, back, origin, everything=True)
    # held from the moment the new config runs: recording the removal in Redis comes a round trip
    # later (or, if that fails, from the background retry), and a notification received before the
    # reload but fanned out meanwhile was routed to nobody, with no record. Until the record is read
    # back, every fan-out of this worker records a cancelled delivery to it (workers/removed.py)
    records = removed.held(engine.removed, engine.removed, new)  # less what ``new`` configures again
    engine.removed = {**records, **removed.provisional(old, new, engine.redis_ms())}
    changes: dict[str, Any] = await engine.reconfigure(new)
    ctx["settings"] = new
    gone = {name: old.endpoints[name] for name in changes["removed"]}
    try:
        changes["cancelled"] = await _record_removal(ctx, new, gone)
    except REDIS_ERRORS as exc:
        # the new config runs: say what is left undone, and finish it as soon as Redis lets us
        changes["incomplete"] = (
            f"recording the removed endpoints and cancelling their work failed "
            f"({type(exc).__name__}: {exc}); retried in the background"
        )
        logger.error("reload_incomplete", error=f"{type(exc).__name__}: {exc}", removed=sorted(gone))
        _background(ctx, _retry_removal(ctx, gone), "reload-removal")
    if gone:

        async def after_drain() -> None:
            await engine.drain_retired(max(ep.timeout for ep in gone.values()) + 1)
            try:
                # only work routed before the removal: what a re-add meanwhile routed is never touched
                await removed.cancel(
                    redis, new, {n: r for n, r in engine.removed.items() if n in gone}, origin, everything=True
                )
            except REDIS_ERRORS:
                pass  # the sweeper cancels what is left

        _background(ctx, after_drain(), "reload-drain")
    return changes


async def _record_removal(ctx: dict[str, Any], settings: Settings, gone: dict[str, Any]) -> dict[str, int]:
    """Register ``settings``' endpoints, record ``gone`` as removed, cancel their work routed before."""
    engine: Engine = ctx["engine"]
    redis = ctx["relay_redis"]
    await endpoints.register(redis, settings, start=False, removed=gone)
    engine.removed = await endpoints.removed(redis)
    records = {name: r for name, r in engine.removed.items() if name in gone}
    return await removed.cancel(redis, settings, records, audit.Origin("reload", ctx["worker_name"]), everything=True)


async def _retry_removal(ctx: dict[str, Any], gone: dict[str, Any]) -> None:
    backoff = 0.5
    while True:  # bounded by the process: shutdown cancels it, and a restart records it at start-up
        await asyncio.sleep(backoff)
        # the config in force now (a later reload may have re-added a name meanwhile: it is not removed)
        settings: Settings = ctx["settings"]
        gone = {name: ep for name, ep in gone.items() if name not in settings.endpoints}
        try:
            cancelled = await _record_removal(ctx, settings, gone)
            logger.info("reload_completed", removed=sorted(gone), cancelled=cancelled)
            return
        except REDIS_ERRORS as exc:
            backoff = min(backoff * 2, 10.0)
            logger.warning("reload_removal_retry", error=type(exc).__name__, retry_in=backoff)


def _background(ctx: dict[str, Any], coro: Any, name: str) -> None:
    task = asyncio.create_task(coro, name=name)
    ctx["background"].add(task)
    task.add_done_callback(ctx["background"].discard)


async def heartbeat(ctx: dict[str, Any]) -> None:
    # scored on Redis's clock as last learned, so health judges every machine's beat alike
    await ctx["relay_redis"].zadd(k.WORKERS, {ctx["worker_name"]: ctx["engine"].redis_ms()})


async def _beat(ctx: dict[str, Any]) -> None:
    while True:
        try:
            await heartbeat(ctx)
        except REDIS_ERRORS:
            pass  # health shows the gap; the lanes log the outage
        except Exception:  # a bug must not silently stop the beat: health would call the worker dead
            logger.exception("heartbeat_failed")
        await asyncio.sleep(HEARTBEAT_S)


async def fanout(ctx: dict[str, Any], nid: str) -> int | None:
    """Route notification ``nid``: the job an ingress older than the batched fan-out wrote for each
    notification. Still registered so such jobs, queued before an upgrade, run rather than fail; the
    fan-out loop routes the same notifications anyway (route.lua creates each delivery once)."""
    engine: Engine = ctx["engine"]
    return await engine.fanout(nid)


async def sweep(ctx: dict[str, Any]) -> dict[str, int]:
    """Every few seconds: trim what retention bounds (workers/retention.py), cancel removed endpoints' work."""
    engine: Engine = ctx["engine"]
    redis = ctx["relay_redis"]
    await retention.trim(redis, engine.settings)
    walk: retention.Walk = ctx.setdefault("retention_walk", retention.Walk())
    expiring = 0
    # removed names change only with a config change: a SCAN page a minute is plenty
    if time.monotonic() >= walk.next_at:
        walk.next_at = time.monotonic() + REMOVED_NAMES_EVERY_S
        expiring = await retention.expire_removed(redis, engine.settings, walk)
    # removals other workers recorded, and what is left of removed endpoints' work: cheap (a removed
    # endpoint's indexes only shrink; a re-added one's in-flight index is small), and a delivery in
    # flight when its endpoint went is cancelled within a sweep of its lease running out
    engine.removed = removed.held(engine.removed, await endpoints.removed(redis), engine.settings)
    await removed.cancel(
        redis,
        engine.settings,
        engine.removed,
        audit.Origin("reload", ctx.get("worker_name", "sweeper")),
        everything=False,
    )
    # no fan-out to recover: the fan-out loop claims a killed worker's batch again once its lease lapses
    if expiring:
        logger.info("removed_names_expiring", keys=expiring)
    return {"removed_keys_expiring": expiring}

"""Reconciliation passes: 2Checkout's order list against the IPNs the relay stored.

The cron job ``reconcile`` runs every few seconds on one worker; for each source with a
``[sources.reconcile]`` table whose turn has come (relay/store/reconcile.py: one pass at a time across
all workers, every ``interval_seconds`` on Redis's clock) it lists the lookback window's orders
(workers/tco_api.py) and records which lack their IPN. ``relay reconcile`` runs ``run_pass`` too.

An API that cannot be read is never taken for "nothing missing" nor for "everything missing": the
error is recorded beside the last known list (``reconcile_failing``) and the next interval tries again.
"""

from __future__ import annotations

import asyncio
import os
import socket
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog
from redis.asyncio import Redis

from config.settings import Settings, Source
from relay.store import reconcile as store
from relay.store.connection import clock_ms
from workers.tco_api import ApiError, list_orders

logger = structlog.get_logger()

# a pass is stopped before its lease (relay/store/reconcile.py LEASE_MS) could let a second one start
PASS_BUDGET_S = store.LEASE_MS / 1000 - 30


async def run_pass(redis: Redis, session: aiohttp.ClientSession, source: Source) -> dict[str, Any]:
    """List the source's orders, compare, and store the result; returns the stored document."""
    cfg = source.reconcile
    assert cfg is not None
    started = await clock_ms(redis)
    try:
        if source.secret_key is None:
            raise ApiError(f"the secret key of source {source.name} is not set (its secret_key_env)", retry=False)
        async with asyncio.timeout(PASS_BUDGET_S):
            orders = await list_orders(session, cfg, source.secret_key, datetime.now(UTC))
    except (ApiError, TimeoutError) as exc:
        status = exc.http_status if isinstance(exc, ApiError) else None
        message = exc.message if isinstance(exc, ApiError) else f"the listing took over {PASS_BUDGET_S:g} s"
        logger.warning("reconcile_failed", source=source.name, http_status=status, error=message)
        return await store.save(
            redis,
            source.name,
            await clock_ms(redis),
            cfg.lookback_ms,
            error={"http_status": status, "message": message},
        )
    now = await clock_ms(redis)
    missing = await store.compare(redis, source.name, orders, now, cfg.grace_ms, cfg.lookback_ms)
    doc = await store.save(redis, source.name, now, cfg.lookback_ms, orders=len(orders), missing=missing)
    logger.info("reconciled", source=source.name, orders=len(orders), missing=len(missing), took_ms=now - started)
    return doc


async def due_passes(
    redis: Redis, session: aiohttp.ClientSession, settings: Settings, who: str, *, now: bool = False
) -> dict[str, dict[str, Any] | None]:
    """Run the pass of every reconciled source whose turn has come (``now``: whatever the interval says,
    unless a pass is running); None for a source whose turn it was not."""
    done: dict[str, dict[str, Any] | None] = {}
    for name in store.reconciled_sources(settings):
        source = settings.sources[name]
        assert source.reconcile is not None
        if not await store.take_turn(redis, name, who, now=now):
            done[name] = None
            continue
        try:
            done[name] = await run_pass(redis, session, source)
        finally:
            await store.end_turn(redis, name, who, source.reconcile.interval_ms)
    return done


async def reconcile(ctx: dict[str, Any]) -> dict[str, int]:
    """Cron, every 5 s: the reconciliation passes that are due (most ticks find none)."""
    settings: Settings = ctx["settings"]
    if not store.reconciled_sources(settings):
        return {}
    who = ctx.get("worker_name") or f"{socket.gethostname()}:{os.getpid()}"
    done = await due_passes(ctx["relay_redis"], ctx["session"], settings, who)
    return {name: doc["count"] for name, doc in done.items() if doc is not None}

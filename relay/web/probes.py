"""Unauthenticated probes: /healthz for orchestrators, /metrics for Prometheus."""

from __future__ import annotations

import os

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from relay.store.connection import REDIS_ERRORS, clock_ms
from relay.web import appkeys
from relay.web.delivery_metrics import collector_for


async def healthz(request: web.Request) -> web.Response:
    """Live (the process answers) and ready (Redis answers): 200, else 503. With ``relay serve
    --processes N`` the answer is the one process's the kernel handed the connection to, and says
    which (``process``: its index, ``pid``)."""
    app = request.app
    which = {"process": app[appkeys.PROCESS], "pid": os.getpid()} if appkeys.PROCESS in app else {}
    try:
        await app[appkeys.REDIS].ping()
    except REDIS_ERRORS as exc:
        return web.json_response(
            {"status": "unavailable", "redis": f"unreachable: {type(exc).__name__}", **which}, status=503
        )
    return web.json_response({"status": "ok", "redis": "ok", **which})


async def metrics(request: web.Request) -> web.Response:
    """The ingress counters of this process (with ``relay serve --processes N``: summed over all N, see
    relay/server.py), and the delivery metrics read from Redis now."""
    app = request.app
    registry = app[appkeys.REGISTRY]
    collector = collector_for(registry, list(app[appkeys.LIVE].settings.endpoints))
    # worker heartbeats and queue scores are on Redis's clock: ages are measured on it too, or an
    # ingress whose clock is off would count no live worker while /api/health sees them
    redis = app[appkeys.REDIS]
    await collector.refresh(redis, await clock_ms(redis))
    body = generate_latest(registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

"""Unauthenticated probes: /healthz for orchestrators, /metrics for Prometheus."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from relay import appkeys


async def healthz(request: web.Request) -> web.Response:
    """Live (the process answers) and ready (Redis answers): 200, else 503."""
    try:
        await request.app[appkeys.REDIS].ping()
    except (RedisError, OSError) as exc:
        return web.json_response({"status": "unavailable", "redis": f"unreachable: {type(exc).__name__}"},
                                 status=503)
    return web.json_response({"status": "ok", "redis": "ok"})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[appkeys.REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

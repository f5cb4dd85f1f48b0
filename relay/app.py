"""The aiohttp application factory for ``relay serve``."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry

from config.settings import Settings
from relay import appkeys, ingress, middleware, probes
from relay.api import setup_api
from relay.metrics import IngressMetrics
from relay.redis_conn import connect, redis_url
from relay.store import Store


def create_app(settings: Settings) -> web.Application:
    """Build the relay's web app: the public listeners, probes, metrics and the admin API."""
    app = web.Application(
        client_max_size=settings.server.max_body_bytes,
        middlewares=[middleware.errors],
    )
    app[appkeys.SETTINGS] = settings
    registry = CollectorRegistry()
    app[appkeys.REGISTRY] = registry
    app[appkeys.METRICS] = IngressMetrics(registry)
    app.cleanup_ctx.append(_redis)
    channel = "{channel:ipn|lcn|ins}"
    app.add_routes([
        web.post(f"/{channel}", ingress.receive),
        web.post(f"/{channel}/{{source}}", ingress.receive),
        web.get(f"/{channel}", ingress.listener_check),  # GET also answers HEAD
        web.get(f"/{channel}/{{source}}", ingress.listener_check),
        web.get("/healthz", probes.healthz),
        web.get("/metrics", probes.metrics),
    ])
    setup_api(app)
    return app


async def _redis(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    redis = connect(redis_url(settings), timeout=settings.server.redis_timeout)
    app[appkeys.REDIS] = redis
    app[appkeys.STORE] = Store(redis, retention_ms=int(settings.delivery.retention_days * 86_400_000))
    yield
    await redis.aclose()

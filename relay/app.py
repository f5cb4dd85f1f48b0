"""The aiohttp application factory for ``relay serve``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from config.settings import Settings
from relay import appkeys, ingress, middleware, probes
from relay.api import setup_api
from relay.dashboard import setup_dashboard
from relay.metrics import IngressMetrics
from relay.networks import parse_networks
from relay.redis_conn import connect, redis_url
from relay.store import NotDurable, Store

logger = structlog.get_logger()


def create_app(settings: Settings, *, public: bool = True, admin: bool = True) -> web.Application:
    """Build the relay's web app.

    ``public``: the 2Checkout listeners. ``admin``: the admin API and the dashboard. Both carry the
    probes and metrics. ``relay serve`` runs them as two apps on two listeners (the admin one on
    loopback by default, see ``[admin]``); tests and ``[admin] port = 0`` use one app with both.
    """
    app = web.Application(
        client_max_size=settings.server.max_body_bytes,
        middlewares=[middleware.errors],
    )
    app[appkeys.SETTINGS] = settings
    registry = CollectorRegistry()
    app[appkeys.REGISTRY] = registry
    app[appkeys.METRICS] = IngressMetrics(registry)
    app[appkeys.TRUSTED_PROXIES] = parse_networks(settings.server.trusted_proxies)
    app.cleanup_ctx.append(_redis)
    channel = "{channel:ipn|lcn|ins}"
    if public:
        app.add_routes([
            web.post(f"/{channel}", ingress.receive),
            web.post(f"/{channel}/{{source}}", ingress.receive),
            web.get(f"/{channel}", ingress.listener_check),  # GET also answers HEAD
            web.get(f"/{channel}/{{source}}", ingress.listener_check),
        ])
    app.add_routes([web.get("/healthz", probes.healthz), web.get("/metrics", probes.metrics)])
    if admin:
        setup_api(app)
        setup_dashboard(app)
    return app


async def _redis(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    redis = connect(redis_url(settings), timeout=settings.server.redis_timeout)
    app[appkeys.REDIS] = redis
    server = settings.server
    store = Store(redis, retention_ms=int(settings.delivery.retention_days * 86_400_000),
                  ack_after=server.ack_after, ack_replicas=server.ack_replicas, ack_timeout=server.ack_timeout)
    app[appkeys.STORE] = store
    try:
        via = await store.check_durability()
        logger.info("ingress_ready", ack_after=server.ack_after, durability=via)
    except NotDurable as exc:
        logger.error("durability_unavailable", ack_after=server.ack_after, problem=str(exc))
    except (RedisError, OSError) as exc:
        # not fatal: the ingress answers 503 until Redis is back, and 2Checkout retries
        logger.warning("redis_unreachable_at_start", error=type(exc).__name__, url=_safe_url(redis_url(settings)))
    yield
    await redis.aclose()


def _safe_url(url: str) -> str:
    """A Redis URL for logs, without its password."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{':' + str(parts.port) if parts.port else ''}{parts.path}"

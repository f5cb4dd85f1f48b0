"""What ``relay serve`` runs: the public app (relay.web) and the admin app (relay.admin, relay.dashboard),
each on its own listener."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from config.networks import parse_networks
from config.settings import Settings
from relay import constants as k
from relay.admin.api import setup_api
from relay.dashboard.routes import setup_dashboard
from relay.store.connection import connect, redis_url, safe_url
from relay.store.ingest import NotDurable, Store
from relay.web import appkeys, ingress, middleware, probes
from relay.web.metrics import IngressMetrics

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
    store = Store(redis, retention_ms=settings.delivery.retention_ms,
                  ack_after=server.ack_after, ack_replicas=server.ack_replicas, ack_timeout=server.ack_timeout)
    app[appkeys.STORE] = store
    try:
        via = await store.check_durability()
        logger.info("ingress_ready", ack_after=server.ack_after, durability=via)
    except NotDurable as exc:
        logger.error("durability_unavailable", ack_after=server.ack_after, problem=str(exc))
    except (RedisError, OSError) as exc:
        # not fatal: the ingress answers 503 until Redis is back, and 2Checkout retries
        logger.warning("redis_unreachable_at_start", error=type(exc).__name__, url=safe_url(redis_url(settings)))
    yield
    await redis.aclose()


async def serve(settings: Settings, *, host: str | None = None, port: int | None = None) -> None:
    """Run until SIGTERM or SIGINT. The admin API and dashboard get their own listener (loopback by
    default) so the public one, which 2Checkout reaches, never serves them."""
    server, admin = settings.server, settings.file.admin
    limits = {"max_line_size": server.max_header_bytes, "max_field_size": server.max_header_bytes,
              "max_headers": server.max_headers}
    listeners: list[tuple[web.Application, str, int, str]] = []
    if admin.port:
        listeners.append((create_app(settings, admin=False), host or server.host, port or server.port, "public"))
        listeners.append((create_app(settings, public=False), admin.host, admin.port, "admin"))
    else:
        listeners.append((create_app(settings), host or server.host, port or server.port, "public+admin"))
    runners: list[web.AppRunner] = []
    try:
        for app, h, p, role in listeners:
            runner = web.AppRunner(app, access_log=None, **limits)  # type: ignore[arg-type]
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, h, p).start()
            logger.info("listening", role=role, url=f"http://{h}:{p}")
        # everything allocated so far lives for the whole process: keep the cyclic GC from re-scanning
        # it, and let it run less often (request objects are freed by reference counting anyway)
        gc.collect()
        gc.freeze()
        gc.set_threshold(k.GC_THRESHOLD, 20, 20)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()

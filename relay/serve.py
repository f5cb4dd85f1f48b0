"""``relay serve``: the public listener and, apart from it, the admin listener."""

from __future__ import annotations

import asyncio
import gc
import signal

import structlog
from aiohttp import web

from config.settings import Settings
from relay.app import create_app

logger = structlog.get_logger()
GC_THRESHOLD = 20_000


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
        gc.set_threshold(GC_THRESHOLD, 20, 20)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()

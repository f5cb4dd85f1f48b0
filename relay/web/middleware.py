"""Request middleware: one clear text error for every failure, never a traceback."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

logger = structlog.get_logger()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        text = exc.text or ""
        if exc.status == 413:
            text = f"rejected: body_too_large: the body is over the {request.client_max_size} byte limit\n"
        elif exc.status == 404 and text.startswith("404"):
            text = f"not found: {request.path} (listener URLs are /ipn, /lcn, /ins and /<channel>/<source>)\n"
        elif exc.status == 405 and text.startswith("405"):
            text = f"method {request.method} not allowed on {request.path}\n"
        headers = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
        return web.Response(status=exc.status, text=text, headers=headers)
    except Exception:
        logger.exception("unhandled_error", path=request.path, method=request.method)
        return web.Response(status=500, text="internal error; see the relay's log\n")

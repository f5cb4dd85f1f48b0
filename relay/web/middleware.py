"""The one middleware of both listeners: marks the connection busy, refuses what cannot be read as
text, and gives every failure one clear text answer, never a traceback.

One middleware for the three concerns rather than one each: every middleware is a coroutine and a
call per request (about 2 µs each on the ingress's hot path). Each concern's rules stay in its own
module: ``limits`` (the connection guard), ``inputs`` (defensive decoding); the answers to errors
are here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from relay.web import inputs, limits

logger = structlog.get_logger()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def front(request: web.Request, handler: Handler) -> web.StreamResponse:
    # busy from the moment the request reaches the app until its answer is ready: a busy connection
    # is never timed out or evicted (relay/web/limits.py)
    conn = limits.started(request)
    try:
        reason = inputs.problem(request)
        if reason is not None:
            return inputs.refused(request, reason)
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _answer(request, exc)
    except Exception:
        logger.exception("unhandled_error", path=request.path, method=request.method)
        return web.Response(status=500, text="internal error; see the relay's log\n")
    finally:
        if conn is not None:
            conn.guard.finished(conn)


def _answer(request: web.Request, exc: web.HTTPException) -> web.Response:
    text = exc.text or ""
    if exc.status == 413:
        text = f"rejected: body_too_large: the body is over the {request.client_max_size} byte limit\n"
    elif exc.status == 404 and text.startswith("404"):
        text = f"not found: {request.path} (listener URLs are /ipn, /lcn, /ins and /<channel>/<source>)\n"
    elif exc.status == 405 and text.startswith("405"):
        text = f"method {request.method} not allowed on {request.path}\n"
    headers = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
    return web.Response(status=exc.status, text=text, headers=headers)

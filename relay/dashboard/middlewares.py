"""The dashboard's gate, as small middlewares, each with one concern, outermost first (``MIDDLEWARES``).

- ``error_pages``: anything that goes wrong below becomes an error page (a JSON error under ``/data/``),
  never a traceback: a store refusal with its status, 404/405 in words, 503 while Redis is away, 500.
- ``static_cache``: the static files are public and cached for a day; the middlewares after it let them by.
- ``off_switch``: without a configured admin token every path answers 404 saying how to turn it on.
- ``cross_site``: a browser's ``Sec-Fetch-Site: cross-site`` or ``same-site`` is refused outright.
- ``security_headers``: every answer carries the security headers and ``Cache-Control: no-store``.
- ``require_session``: but for the login, a page without a session redirects to the login and a
  ``/data/`` answer is 401.
- ``check_csrf``: every POST but the login needs the session's CSRF token (form field ``csrf`` or
  header ``X-CSRF-Token``).
"""

from __future__ import annotations

from urllib.parse import urlencode

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from relay.dashboard import sessions
from relay.dashboard.render import BASE, error_page, off_page, redirect, secure
from relay.dashboard.sessions import Session, current_session
from relay.store.connection import REDIS_ERRORS
from relay.store.queries import QueryError
from relay.web import appkeys, inputs

logger = structlog.get_logger()

# the session require_session found, for the error page's signed-in frame
SESSION = web.RequestKey("dashboard_session", Session)


def _path(request: web.Request) -> str:
    return request.path.removeprefix(BASE)


def _static(request: web.Request) -> bool:
    return _path(request).startswith("/static/")


def _data(request: web.Request) -> bool:
    return _path(request).startswith("/data/")


def _login(request: web.Request) -> bool:
    return _path(request) == "/login"


def _not_static(middleware: Middleware) -> Middleware:
    """``middleware`` for the pages and data; a static file passes it by (public, no session, cached)."""

    @web.middleware
    async def gated(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _static(request):
            return await handler(request)
        return await middleware(request, handler)

    return gated


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except QueryError as exc:
        return error_page(request, exc.status, exc.message, request.get(SESSION))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = {
            404: f"no dashboard page {request.path}",
            405: f"method {request.method} is not allowed on {request.path}",
        }.get(exc.status, exc.reason)
        return error_page(request, exc.status, message, request.get(SESSION))
    except REDIS_ERRORS as exc:
        logger.warning("dashboard_redis_unavailable", path=request.path, error=type(exc).__name__)
        return error_page(
            request, 503, f"Redis is unavailable ({type(exc).__name__}); retry in a moment", request.get(SESSION)
        )
    except Exception:
        logger.exception("dashboard_error", path=request.path, method=request.method)
        return error_page(request, 500, "internal error; see the relay's log", request.get(SESSION))


@web.middleware
async def static_cache(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if _static(request):
        response.headers["Cache-Control"] = "public, max-age=86400"
    return response


async def off_switch(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.config_dict[appkeys.LIVE].settings.admin_token is None:
        return off_page(request, _data(request))
    return await handler(request)


async def cross_site(request: web.Request, handler: Handler) -> web.StreamResponse:
    if sessions.cross_site(request):
        logger.warning("dashboard_cross_site_refused", path=request.path, remote=request.remote)
        return error_page(request, 403, "cross-site request refused", None)
    return await handler(request)


async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    return secure(await handler(request))


async def require_session(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _login(request):
        return await handler(request)
    session = await current_session(request)
    if session is None:
        if _data(request):
            return web.json_response(
                {"error": f"not logged in (no session, or it expired): log in at {BASE}/login"}, status=401
            )
        if request.method in ("GET", "HEAD"):
            return redirect(f"{BASE}/login?{urlencode({'next': request.path_qs})}")
        return redirect(f"{BASE}/login")
    request[SESSION] = session
    return await handler(request)


async def check_csrf(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _login(request) or request.method in ("GET", "HEAD"):
        return await handler(request)
    session = request[SESSION]
    if not sessions.csrf_ok(request, await inputs.form(request), session):
        logger.warning("dashboard_csrf_refused", path=request.path, remote=request.remote)
        return error_page(
            request, 403, "the form's CSRF token is missing or wrong: reload the page and try again", session
        )
    return await handler(request)


MIDDLEWARES: list[Middleware] = [
    error_pages,
    static_cache,
    *(_not_static(m) for m in (off_switch, cross_site, security_headers, require_session, check_csrf)),
]

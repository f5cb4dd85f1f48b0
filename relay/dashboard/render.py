"""How the dashboard answers: whole pages, refreshed sections, redirects, error pages, security headers.

Pages are Jinja2 templates (``templates/``) with autoescape on, so every value reaches the page as
text; the helpers they call are in ``view.py``. Every answer but a static file carries
``SECURITY_HEADERS`` and ``Cache-Control: no-store`` (``secure``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from relay.dashboard import view
from relay.dashboard.sessions import Session
from relay.web import appkeys

BASE = view.BASE
REFRESH_MS = 5000
STATIC = Path(__file__).resolve().parent / "static"
TEMPLATES = Path(__file__).resolve().parent / "templates"
ASSETS = web.AppKey("dashboard_assets", str)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def secure(response: web.StreamResponse) -> web.StreamResponse:
    response.headers.update(SECURITY_HEADERS)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def render_page(
    request: web.Request,
    template: str,
    context: Mapping[str, Any],
    status: int = 200,
    *,
    session: Session | None = None,
    current: str = "",
    refresh_ms: int = 0,
) -> web.Response:
    """A whole page from ``templates/``; with ``session``, the signed-in frame (navigation, logout)."""
    frame = {
        "assets": request.config_dict[ASSETS],
        "csrf": session.csrf if session else None,
        "current": current,
        "refresh_ms": refresh_ms,
    }
    return aiohttp_jinja2.render_template(template, request, {**frame, **context}, status=status)


def render_section(request: web.Request, template: str, context: Mapping[str, Any]) -> str:
    """A refreshed section's HTML: the same template the page includes, so the digests agree."""
    return aiohttp_jinja2.render_string(template, request, dict(context))


def redirect(location: str) -> web.Response:
    response = web.Response(status=303, headers={"Location": location})
    secure(response)
    return response


def fragment(doc: dict[str, Any], html: str, summary: str) -> web.Response:
    """A refresh answer: the data, the section's HTML with its digest (unchanged: nothing to do) and a
    one-line summary for screen readers."""
    return web.json_response({**doc, "html": html, "digest": view.digest(html), "summary": summary})


def error_page(
    request: web.Request, status: int, message: str, session: Session | None, back: str | None = None
) -> web.StreamResponse:
    if request.path.startswith(f"{BASE}/data/"):
        return secure(web.json_response({"error": message}, status=status))
    return secure(
        render_page(
            request, "error.html", {"status": status, "message": message, "back": back}, status, session=session
        )
    )


def off_page(request: web.Request, data: bool) -> web.StreamResponse:
    env = request.config_dict[appkeys.LIVE].settings.server.admin_token_env
    if data:
        return secure(
            web.json_response(
                {
                    "error": f"the dashboard is off: set the environment variable {env} (named by "
                    "server.admin_token_env) to a long random token and restart the relay (relay dev "
                    "generates one when it is unset)"
                },
                status=404,
            )
        )
    return secure(render_page(request, "off.html", {"token_env": env}, 404))

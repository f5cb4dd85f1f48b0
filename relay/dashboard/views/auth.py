"""Login and logout: the admin token starts a session (``sessions.py``: cookie, Redis record, CSRF token)."""

from __future__ import annotations

import structlog
from aiohttp import web

from relay.dashboard import sessions
from relay.dashboard.render import BASE, redirect, render_page
from relay.dashboard.sessions import current_session, session_of
from relay.web import appkeys, inputs

logger = structlog.get_logger()


async def login_form(request: web.Request) -> web.StreamResponse:
    next_url = sessions.safe_next(request.query.get("next"))
    if await current_session(request) is not None:
        return redirect(next_url)
    notice = "You are logged out." if request.query.get("out") == "1" else None
    env = request.config_dict[appkeys.LIVE].settings.server.admin_token_env
    return render_page(request, "login.html", {"next_url": next_url, "notice": notice, "error": None, "token_env": env})


async def login(request: web.Request) -> web.StreamResponse:
    settings = request.config_dict[appkeys.LIVE].settings
    form = await inputs.form(request)
    next_url = sessions.safe_next(form.get("next"))
    if not sessions.token_matches(form.get("token"), settings):
        logger.warning("dashboard_login_failed", remote=request.remote)
        return render_page(
            request,
            "login.html",
            {
                "next_url": next_url,
                "notice": None,
                "token_env": settings.server.admin_token_env,
                "error": "That is not the admin token.",
            },
            401,
        )
    response = redirect(next_url)
    await sessions.start(request, response)
    logger.info("dashboard_login", remote=request.remote)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    response = redirect(f"{BASE}/login?out=1")
    await sessions.end(request, session_of(request), response)
    logger.info("dashboard_logout", remote=request.remote)
    return response

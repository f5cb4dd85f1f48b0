"""The operator dashboard under ``/dashboard``: server-rendered pages that refresh themselves.

Auth is the admin API's token: ``POST /dashboard/login`` with it starts a session (``sessions.py``:
the signed cookie, its Redis record, the CSRF token). Every POST but the login also needs the
session's CSRF token (form field ``csrf`` or header ``X-CSRF-Token``), and a browser's
``Sec-Fetch-Site: cross-site`` or ``same-site`` is refused outright.

Pages are Jinja2 templates (``templates/``) with autoescape on, so every value reaches the page as
text; the helpers they call are in ``view.py``.

Without a configured token the dashboard is off, as the API is: every path answers 404 with a page
saying how to turn it on. Pages fetch ``/dashboard/data/...`` (JSON with an ``html`` member) to refresh.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import aiohttp_jinja2
import jinja2
from aiohttp import web

from relay.dashboard import view
from relay.dashboard.middlewares import MIDDLEWARES
from relay.dashboard.render import ASSETS, BASE, STATIC, TEMPLATES, redirect
from relay.dashboard.routes import setup_routes
from relay.store.resend import Resender
from relay.web import appkeys


def setup_dashboard(app: web.Application) -> None:
    """Mount the dashboard on ``app`` at ``/dashboard`` (its own sub-application, sessions and error pages)."""
    dash = web.Application(middlewares=MIDDLEWARES)
    dash[ASSETS] = _asset_version()
    # autoescape on for every template: attacker-controlled text can only ever be shown as text;
    # StrictUndefined turns a misspelt name into an error (a 500 page and a log line), not an empty cell
    env = aiohttp_jinja2.setup(
        dash,
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        default_helpers=False,
        finalize=_blank_none,
        filters=view.FILTERS,
    )
    env.globals.update(view.GLOBALS)

    async def share(dash: web.Application) -> AsyncIterator[None]:
        dash[appkeys.RESENDER] = resender = Resender(app[appkeys.REDIS], app[appkeys.LIVE].settings)
        app[appkeys.LIVE].on_reload.append(resender.follow)
        yield

    dash.cleanup_ctx.append(share)
    setup_routes(dash)
    app.router.add_get(BASE, _to_dashboard)
    app.add_subapp(BASE, dash)


async def _to_dashboard(request: web.Request) -> web.StreamResponse:
    return redirect(f"{BASE}/")


def _blank_none(value: object) -> object:
    """``{{ None }}`` prints nothing (Jinja's default would print "None")."""
    return "" if value is None else value


def _asset_version() -> str:
    digest = hashlib.blake2b(digest_size=6)
    for name in ("dashboard.css", "dashboard.js"):
        digest.update((STATIC / name).read_bytes())
    return digest.hexdigest()

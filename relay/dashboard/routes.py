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
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp_jinja2
import jinja2
import structlog
from aiohttp import web

from config.event_types import EVENT_TYPES
from config.settings import CHANNELS
from relay import constants as k
from relay.dashboard import sessions, view
from relay.dashboard.sessions import Session, current_session, session_of
from relay.redact import redact_notification, redact_rows
from relay.store import audit, endpoints, queries
from relay.store.connection import REDIS_ERRORS, clock_ms
from relay.store.control import Control
from relay.store.detail import detail as notification_detail
from relay.store.overview import overview_model
from relay.store.queries import QueryError
from relay.store.resend import Resender
from relay.web import appkeys, inputs

logger = structlog.get_logger()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BASE = view.BASE
REFRESH_MS = 5000
STATIC = Path(__file__).resolve().parent / "static"
TEMPLATES = Path(__file__).resolve().parent / "templates"
ASSETS = web.AppKey("dashboard_assets", str)
LIST_FILTERS = ("channel", "source", "state", "endpoint", "ref", "type", "include_resolved")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def setup_dashboard(app: web.Application) -> None:
    """Mount the dashboard on ``app`` at ``/dashboard`` (its own sub-application, sessions and error pages)."""
    dash = web.Application(middlewares=[gate])
    dash[ASSETS] = _asset_version()
    # autoescape on for every template: attacker-controlled text can only ever be shown as text;
    # StrictUndefined turns a misspelt name into an error (a 500 page and a log line), not an empty cell
    env = aiohttp_jinja2.setup(dash, loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                               undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                               default_helpers=False, finalize=_blank_none, filters=view.FILTERS)
    env.globals.update(view.GLOBALS)

    async def share(dash: web.Application) -> AsyncIterator[None]:
        dash[appkeys.RESENDER] = resender = Resender(app[appkeys.REDIS], app[appkeys.LIVE].settings)
        app[appkeys.LIVE].on_reload.append(resender.follow)
        yield

    dash.cleanup_ctx.append(share)
    dash.add_routes([
        web.get("/", overview),
        web.get("/login", login_form),
        web.post("/login", login),
        web.post("/logout", logout),
        web.get("/notifications", notifications),
        web.get("/notifications/{id}", detail),
        web.post("/notifications/{id}/resend", resend_one),
        web.get("/resend", bulk_confirm),
        web.post("/resend", bulk_resend),
        web.get("/endpoints/{name}/{action:pause|resume|retry}", control_confirm),
        web.post("/endpoints/{name}/{action:pause|resume|retry}", control_endpoint),
        web.get("/notifications/{id}/{action:retry|cancel}", control_confirm),
        web.post("/notifications/{id}/{action:retry|cancel}", control_notification),
        web.get("/data/overview", overview_data),
        web.get("/data/notifications", notifications_data),
        web.get("/data/notifications/{id}", detail_data),
        web.static("/static", STATIC),
    ])
    app.router.add_get(BASE, _to_dashboard)
    app.add_subapp(BASE, dash)


async def _to_dashboard(request: web.Request) -> web.StreamResponse:
    return _redirect(f"{BASE}/")


def _blank_none(value: object) -> object:
    """``{{ None }}`` prints nothing (Jinja's default would print "None")."""
    return "" if value is None else value


def _asset_version() -> str:
    digest = hashlib.blake2b(digest_size=6)
    for name in ("dashboard.css", "dashboard.js"):
        digest.update((STATIC / name).read_bytes())
    return digest.hexdigest()


# -- the gate: off switch, sessions, CSRF, error pages, headers --------------------------------------


@web.middleware
async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings = request.config_dict[appkeys.LIVE].settings
    path = request.path.removeprefix(BASE)
    data = path.startswith("/data/")
    session: Session | None = None
    try:
        if path.startswith("/static/"):
            response = await handler(request)
            response.headers["Cache-Control"] = "public, max-age=86400"
            return response
        if settings.admin_token is None:
            return _off(request, data)
        if sessions.cross_site(request):
            logger.warning("dashboard_cross_site_refused", path=request.path, remote=request.remote)
            return _error(request, 403, "cross-site request refused", None)
        if path == "/login":
            return _secure(await handler(request))
        session = await current_session(request)
        if session is None:
            if data:
                return _secure(web.json_response(
                    {"error": f"not logged in (no session, or it expired): log in at {BASE}/login"}, status=401))
            if request.method in ("GET", "HEAD"):
                return _redirect(f"{BASE}/login?{urlencode({'next': request.path_qs})}")
            return _redirect(f"{BASE}/login")
        if request.method not in ("GET", "HEAD"):
            if not sessions.csrf_ok(request, await inputs.form(request), session):
                logger.warning("dashboard_csrf_refused", path=request.path, remote=request.remote)
                return _error(request, 403, "the form's CSRF token is missing or wrong: reload the page and try "
                                            "again", session)
        return _secure(await handler(request))
    except QueryError as exc:
        return _error(request, exc.status, exc.message, session)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = {404: f"no dashboard page {request.path}",
                   405: f"method {request.method} is not allowed on {request.path}"}.get(exc.status, exc.reason)
        return _error(request, exc.status, message, session)
    except REDIS_ERRORS as exc:
        logger.warning("dashboard_redis_unavailable", path=request.path, error=type(exc).__name__)
        return _error(request, 503, f"Redis is unavailable ({type(exc).__name__}); retry in a moment", session)
    except Exception:
        logger.exception("dashboard_error", path=request.path, method=request.method)
        return _error(request, 500, "internal error; see the relay's log", session)


def _secure(response: web.StreamResponse) -> web.StreamResponse:
    response.headers.update(SECURITY_HEADERS)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _page(request: web.Request, template: str, context: Mapping[str, Any], status: int = 200, *,
          session: Session | None = None, current: str = "", refresh_ms: int = 0) -> web.Response:
    """A whole page from ``templates/``; with ``session``, the signed-in frame (navigation, logout)."""
    frame = {"assets": request.config_dict[ASSETS], "csrf": session.csrf if session else None,
             "current": current, "refresh_ms": refresh_ms}
    return aiohttp_jinja2.render_template(template, request, {**frame, **context}, status=status)


def _render(request: web.Request, template: str, context: Mapping[str, Any]) -> str:
    """A refreshed section's HTML: the same template the page includes, so the digests agree."""
    return aiohttp_jinja2.render_string(template, request, dict(context))


def _redirect(location: str) -> web.Response:
    response = web.Response(status=303, headers={"Location": location})
    _secure(response)
    return response


def _fragment(doc: dict[str, Any], html: str, summary: str) -> web.Response:
    """A refresh answer: the data, the section's HTML with its digest (unchanged: nothing to do) and a
    one-line summary for screen readers."""
    return web.json_response({**doc, "html": html, "digest": view.digest(html), "summary": summary})


def _error(request: web.Request, status: int, message: str, session: Session | None,
           back: str | None = None) -> web.StreamResponse:
    if request.path.startswith(f"{BASE}/data/"):
        return _secure(web.json_response({"error": message}, status=status))
    return _secure(_page(request, "error.html", {"status": status, "message": message, "back": back}, status,
                         session=session))


def _off(request: web.Request, data: bool) -> web.StreamResponse:
    env = request.config_dict[appkeys.LIVE].settings.server.admin_token_env
    if data:
        return _secure(web.json_response(
            {"error": f"the dashboard is off: set the environment variable {env} (named by "
                      "server.admin_token_env) to a long random token and restart the relay (relay dev "
                      "generates one when it is unset)"}, status=404))
    return _secure(_page(request, "off.html", {"token_env": env}, 404))


# -- login and logout --------------------------------------------------------------------------------


async def login_form(request: web.Request) -> web.StreamResponse:
    next_url = sessions.safe_next(request.query.get("next"))
    if await current_session(request) is not None:
        return _redirect(next_url)
    notice = "You are logged out." if request.query.get("out") == "1" else None
    env = request.config_dict[appkeys.LIVE].settings.server.admin_token_env
    return _page(request, "login.html", {"next_url": next_url, "notice": notice, "error": None, "token_env": env})


async def login(request: web.Request) -> web.StreamResponse:
    settings = request.config_dict[appkeys.LIVE].settings
    form = await inputs.form(request)
    next_url = sessions.safe_next(form.get("next"))
    if not sessions.token_matches(form.get("token"), settings):
        logger.warning("dashboard_login_failed", remote=request.remote)
        return _page(request, "login.html", {"next_url": next_url, "notice": None, "token_env":
                                             settings.server.admin_token_env,
                                             "error": "That is not the admin token."}, 401)
    response = _redirect(next_url)
    await sessions.start(request, response)
    logger.info("dashboard_login", remote=request.remote)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    response = _redirect(f"{BASE}/login?out=1")
    await sessions.end(request, session_of(request), response)
    logger.info("dashboard_logout", remote=request.remote)
    return response


# -- overview ----------------------------------------------------------------------------------------


async def overview(request: web.Request) -> web.StreamResponse:
    redis = request.config_dict[appkeys.REDIS]
    model = await overview_model(redis, request.config_dict[appkeys.LIVE].settings, await clock_ms(redis))
    return _page(request, "overview.html", {**model, "summary": view.overview_summary(model)},
                 session=session_of(request), current="overview", refresh_ms=REFRESH_MS)


async def overview_data(request: web.Request) -> web.StreamResponse:
    redis = request.config_dict[appkeys.REDIS]
    model = await overview_model(redis, request.config_dict[appkeys.LIVE].settings, await clock_ms(redis))
    return _fragment(model, _render(request, "overview_fragment.html", model), view.overview_summary(model))


# -- the notification list ---------------------------------------------------------------------------


def list_params(request: web.Request) -> dict[str, str]:
    """The list's query parameters, trimmed, empty ones dropped (the last of a repeated one wins)."""
    return {name: value.strip() for name, value in request.query.items() if value.strip()}


def list_filters(params: Mapping[str, str], now_ms: int,
                 known: Mapping[str, Collection[str]] | None = None) -> queries.Filters:
    raw: dict[str, object] = {name: params[name] for name in LIST_FILTERS if name in params}
    period = params.get("period")
    if period in view.PERIODS:
        raw["since"] = now_ms - view.PERIODS[period][1]
    elif period == "custom":
        raw.update({name: params[name] for name in ("since", "until") if name in params})
    f = queries.parse_filters(raw)
    return f if known is None else queries.check_known(f, known)


def frozen(params: Mapping[str, str], f: queries.Filters, *, until: int | None = None) -> dict[str, str]:
    """The same selection with its time range as absolute times, so a cursor or a bulk resend stays valid."""
    out = {name: params[name] for name in LIST_FILTERS if name in params}
    end = f.until if f.until is not None else until
    if f.since is not None or end is not None:
        out["period"] = "custom"
        out.update({name: str(v) for name, v in (("since", f.since), ("until", end)) if v is not None})
    return out


@dataclass(frozen=True)
class Listing:
    items: list[dict[str, Any]]
    next_url: str | None
    first_url: str | None
    data_url: str
    filters: queries.Filters
    frozen: dict[str, str]


async def listing(request: web.Request, params: Mapping[str, str]) -> Listing:
    settings = request.config_dict[appkeys.LIVE].settings
    f = list_filters(params, int(time.time() * 1000),
                     await endpoints.known_names(request.config_dict[appkeys.REDIS], settings))
    cursor = params.get("cursor")
    page = await queries.scan(request.config_dict[appkeys.REDIS], f, limit=queries.DEFAULT_LIMIT, cursor=cursor,
                              endpoints=list(settings.endpoints))
    fixed = frozen(params, f)
    url = f"{BASE}/notifications"
    next_url = f"{url}?{urlencode({**fixed, 'cursor': page.next_cursor})}" if page.next_cursor else None
    plain = {n: v for n, v in params.items() if n not in ("cursor", "queued", "replayed")}
    first_url = f"{url}?{urlencode(plain)}" if cursor else None
    current = {**fixed, "cursor": cursor} if cursor else plain
    data_url = f"{BASE}/data/notifications" + (f"?{urlencode(current)}" if current else "")
    items = redact_rows((row.summary() for row in page.items), settings)
    return Listing(items, next_url, first_url, data_url, f, fixed)


def _list_context(result: Listing) -> dict[str, Any]:
    """What list_fragment.html needs."""
    return {"items": result.items, "next_url": result.next_url, "first_url": result.first_url,
            "filtered": not result.filters.empty}


async def notifications(request: web.Request) -> web.StreamResponse:
    settings = request.config_dict[appkeys.LIVE].settings
    params = list_params(request)
    choices: dict[str, list[str]] = {"channel": list(CHANNELS), "source": sorted(settings.sources),
                                     "endpoint": sorted(settings.endpoints), "state": list(k.STATES),
                                     "type": list(EVENT_TYPES)}
    page = {"params": params, "choices": choices, "error": None, "bulk_url": None,
            "queued": int(params["queued"]) if params.get("queued", "").isdigit() else None,
            "replayed": bool(params.get("replayed"))}
    try:
        result = await listing(request, params)
    except QueryError as exc:
        return _page(request, "list.html", {**page, "error": exc.message}, exc.status,
                     session=session_of(request), current="notifications")
    if not result.filters.empty:
        page["bulk_url"] = f"{BASE}/resend?{urlencode(frozen(params, result.filters, until=int(time.time() * 1000)))}"
    return _page(request, "list.html", {**page, **_list_context(result), "data_url": result.data_url,
                                        "summary": view.list_summary(result.items)},
                 session=session_of(request), current="notifications", refresh_ms=REFRESH_MS)


async def notifications_data(request: web.Request) -> web.StreamResponse:
    result = await listing(request, list_params(request))
    next_cursor = result.next_url is not None
    return _fragment({"items": result.items, "has_next": next_cursor},
                     _render(request, "list_fragment.html", _list_context(result)), view.list_summary(result.items))


# -- one notification --------------------------------------------------------------------------------


async def load_detail(request: web.Request, nid: str) -> dict[str, Any]:
    """The API's detail document, redacted as the API and the CLI redact it (relay/redact.py)."""
    doc = await notification_detail(request.config_dict[appkeys.REDIS], nid)
    return redact_notification(doc, request.config_dict[appkeys.LIVE].settings)


async def detail(request: web.Request) -> web.StreamResponse:
    settings = request.config_dict[appkeys.LIVE].settings
    nid = request.match_info["id"]
    try:
        doc = await load_detail(request, nid)
    except queries.NotFound as exc:
        return _error(request, 404, exc.message, session_of(request), back=f"{BASE}/notifications")
    resent = request.query.get("resent", "")
    routed = [ep for ep in doc.get("deliveries", {}) if ep in settings.endpoints]
    choices = routed or sorted(settings.endpoints)
    # the resend defaults to where the delivery failed (and no delivered resend resolved it)
    failed = [ep for ep in routed if doc["deliveries"][ep].get("state") == "failed"
              and not doc["deliveries"][ep].get("resolved_by")]
    context = {"doc": doc, "endpoints": choices, "failed": failed, "idempotency_key": _idempotency_key(),
               # the flash names the resend only when it is a notification id
               "resent": resent if queries.NID.fullmatch(resent) else None,
               "replayed": bool(request.query.get("replayed")),
               "data_url": f"{BASE}/data/notifications/{quote(nid, safe='')}", "summary": view.detail_summary(doc)}
    return _page(request, "detail.html", context, session=session_of(request), current="notifications",
                 refresh_ms=REFRESH_MS)


async def detail_data(request: web.Request) -> web.StreamResponse:
    doc = await load_detail(request, request.match_info["id"])
    return _fragment({"notification": doc}, _render(request, "detail_fragment.html", {"doc": doc}),
                     view.detail_summary(doc))


def _idempotency_key() -> str:
    """One per rendered form: submitting the same form twice resends once."""
    return f"dash-{secrets.token_urlsafe(16)}"


def _form_text(form: Mapping[str, Any], name: str) -> str | None:
    value = form.get(name)
    return value.strip() or None if isinstance(value, str) else None


async def resend_one(request: web.Request) -> web.StreamResponse:
    nid = request.match_info["id"]
    form = await inputs.form(request)
    back = f"{BASE}/notifications/{quote(nid, safe='')}"
    try:
        # one endpoint, several (comma-separated: "where it failed"), or none for every endpoint
        names = (_form_text(form, "endpoint") or "").split(",")
        names = [n.strip() for n in names if n.strip()]
        result = await request.app[appkeys.RESENDER].one(
            nid, endpoint=names[0] if len(names) == 1 else None, endpoints=names if len(names) > 1 else (),
            idempotency_key=_form_text(form, "idempotency_key"))
    except QueryError as exc:
        return _error(request, exc.status, f"cannot resend {nid}: {exc.message}", session_of(request), back=back)
    logger.info("dashboard_resend", nid=nid, resend=result["id"], targets=result["targets"],
                replayed=bool(result.get("replayed")))
    params = {"resent": result["id"], "replayed": "1" if result.get("replayed") else None}
    query = urlencode({n: v for n, v in params.items() if v})
    return _redirect(f"{BASE}/notifications/{quote(result['resend_of'], safe='')}?{query}")


# -- bulk resend -------------------------------------------------------------------------------------


async def bulk_confirm(request: web.Request) -> web.StreamResponse:
    params = list_params(request)
    session = session_of(request)
    back = f"{BASE}/notifications?{urlencode(params)}"
    try:
        f = list_filters(params, int(time.time() * 1000),
                         await endpoints.known_names(request.config_dict[appkeys.REDIS],
                                                     request.config_dict[appkeys.LIVE].settings))
        dry = await request.app[appkeys.RESENDER].bulk(filters=f, dry_run=True)
    except QueryError as exc:
        return _error(request, exc.status, exc.message, session, back=back)
    fixed = frozen(params, f, until=int(time.time() * 1000))
    selection = [(name, getattr(f, name)) for name in ("channel", "source", "endpoint", "state", "ref", "type")
                 if getattr(f, name) is not None]
    context = {"filters": fixed, "selection": selection, "since": f.since, "until": f.until, "dry": dry,
               "back": back, "idempotency_key": _idempotency_key()}
    return _page(request, "bulk.html", context, session=session, current="notifications")


async def bulk_resend(request: web.Request) -> web.StreamResponse:
    form = await inputs.form(request)
    params = {name: value for name in (*LIST_FILTERS, "period", "since", "until")
              if (value := _form_text(form, name)) is not None}
    back = f"{BASE}/notifications?{urlencode(params)}"
    try:
        f = list_filters(params, int(time.time() * 1000),
                         await endpoints.known_names(request.config_dict[appkeys.REDIS],
                                                     request.config_dict[appkeys.LIVE].settings))
        result = await request.app[appkeys.RESENDER].bulk(filters=f,
                                                          idempotency_key=_form_text(form, "idempotency_key"))
    except QueryError as exc:
        return _error(request, exc.status, f"bulk resend refused: {exc.message}", session_of(request), back=back)
    logger.info("dashboard_bulk_resend", count=result["count"], skipped=result["skipped_count"],
                expected=_form_text(form, "expected"), replayed=bool(result.get("replayed")))
    # the resends are new notifications, received now and not yet in the chosen state: list what is
    # newest under the same channel, source, endpoint and reference, so they show at the top
    done: dict[str, str] = {name: params[name] for name in ("channel", "source", "endpoint", "ref") if name in params}
    done.update({"queued": str(result["count"]), **({"replayed": "1"} if result.get("replayed") else {})})
    return _redirect(f"{BASE}/notifications?{urlencode(done)}")


# -- operator control (relay/store/control.py): confirm with the count, then act; audited as "dashboard" --

CONTROL_TEXT = {
    "pause": ("Pause endpoint {target}", "Its waiting deliveries will wait as paused: no attempts, no retries spent.",
              "Pause"),
    "resume": ("Resume endpoint {target}", "Its paused deliveries will be sent again (serial: in receipt order).",
               "Resume"),
    "retry": ("Retry now: {target}", "Retrying deliveries will be sent now instead of at their next retry.",
              "Retry now"),
    "cancel": ("Cancel: {target}", "Waiting deliveries will be cancelled (they can be resent later).", "Cancel"),
}


def _control(request: web.Request) -> Control:
    return Control(request.config_dict[appkeys.REDIS], request.config_dict[appkeys.LIVE].settings)


async def control_confirm(request: web.Request) -> web.StreamResponse:
    action, session = request.match_info["action"], session_of(request)
    control = _control(request)
    name, nid = request.match_info.get("name"), request.match_info.get("id")
    endpoint = request.query.get("endpoint") or None
    try:
        if name is not None:
            count = (await control.counts(name))[action]
            target, back, act = name, f"{BASE}/", f"{BASE}/endpoints/{quote(name, safe='')}/{action}"
        else:
            assert nid is not None
            count = await control.waiting(nid, endpoint, retrying_only=action == "retry")
            target = f"{nid}" + (f" to {endpoint}" if endpoint else "")
            back = f"{BASE}/notifications/{quote(nid, safe='')}"
            act = f"{back}/{action}"
    except QueryError as exc:
        return _error(request, exc.status, exc.message, session, back=f"{BASE}/")
    title, question, button = CONTROL_TEXT[action]
    context = {"title": title.format(target=target), "question": question, "count": count, "button": button,
               "action": act, "back": back, "endpoint": endpoint}
    return _page(request, "control.html", context, session=session)


async def control_endpoint(request: web.Request) -> web.StreamResponse:
    action, name = request.match_info["action"], request.match_info["name"]
    origin = audit.Origin("dashboard", request.remote)
    control = _control(request)
    try:
        if action == "pause":
            await control.pause(name, origin)
        elif action == "resume":
            await control.resume(name, origin)
        else:
            await control.retry(origin, endpoint=name)
    except QueryError as exc:
        return _error(request, exc.status, f"{action} {name}: {exc.message}", session_of(request), back=f"{BASE}/")
    return _redirect(f"{BASE}/")


async def control_notification(request: web.Request) -> web.StreamResponse:
    action, nid = request.match_info["action"], request.match_info["id"]
    form = await inputs.form(request)
    endpoint = _form_text(form, "endpoint")
    origin = audit.Origin("dashboard", request.remote)
    back = f"{BASE}/notifications/{quote(nid, safe='')}"
    try:
        if action == "retry":
            await _control(request).retry(origin, nid=nid, endpoint=endpoint)
        else:
            await _control(request).cancel(nid, origin, endpoint=endpoint)
    except QueryError as exc:
        return _error(request, exc.status, f"{action} {nid}: {exc.message}", session_of(request), back=back)
    return _redirect(back)

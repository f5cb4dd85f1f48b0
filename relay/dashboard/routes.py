"""The operator dashboard under ``/dashboard``: server-rendered pages that refresh themselves.

Auth is the admin API's token (``settings.admin_token``): ``POST /dashboard/login`` with it sets a
session cookie whose value is ``{sid}.{expiry}.{HMAC}``, signed with a key derived from the token, and
the session exists in Redis (``relay:dash:session:{sid}``) until it expires or ``/dashboard/logout``
deletes it. The cookie is HttpOnly, SameSite=Strict, Path=/dashboard, and Secure when the request came
over https (or a trusted proxy said so with ``X-Forwarded-Proto: https``). Every POST but the login
also needs the session's CSRF token (form field ``csrf`` or header ``X-CSRF-Token``), and a browser's
``Sec-Fetch-Site: cross-site`` or ``same-site`` is refused outright.

Without a configured token the dashboard is off, as the API is: every path answers 404 with a page
saying how to turn it on. Pages fetch ``/dashboard/data/...`` (JSON with an ``html`` member) to refresh.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus, urlencode, urlsplit

import structlog
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from config.networks import allowed
from config.settings import CHANNELS, Settings
from relay import constants as k
from relay.dashboard import html as view
from relay.store import queries
from relay.store.queries import QueryError
from relay.store.resend import Resender
from relay.store.stats import DAY_MIN, health_report, queue_minutes
from relay.web import appkeys

logger = structlog.get_logger()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BASE = view.BASE
COOKIE = "relay_dashboard"
SESSION_TTL_S = 12 * 3600
REFRESH_MS = 5000
RECENT_FAILURE_MS = 5 * 60_000
SENSITIVE = ("PASSWORD", "SECRET", "TOKEN")
STATIC = Path(__file__).resolve().parent / "static"
ASSETS = web.AppKey("dashboard_assets", str)
LIST_FILTERS = ("channel", "source", "state", "endpoint", "ref")
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

    async def share(dash: web.Application) -> AsyncIterator[None]:
        dash[appkeys.RESENDER] = Resender(app[appkeys.REDIS], app[appkeys.SETTINGS])
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
        web.get("/data/overview", overview_data),
        web.get("/data/notifications", notifications_data),
        web.get("/data/notifications/{id}", detail_data),
        web.static("/static", STATIC),
    ])
    app.router.add_get(BASE, _to_dashboard)
    app.add_subapp(BASE, dash)


async def _to_dashboard(request: web.Request) -> web.StreamResponse:
    return _redirect(f"{BASE}/")


def _asset_version() -> str:
    digest = hashlib.blake2b(digest_size=6)
    for name in ("dashboard.css", "dashboard.js"):
        digest.update((STATIC / name).read_bytes())
    return digest.hexdigest()


# -- sessions ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    sid: str
    expires: int  # epoch seconds
    csrf: str


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def signing_key(settings: Settings) -> bytes:
    """Derived from the admin token: changing the token ends every session."""
    assert settings.admin_token is not None
    return hmac.new(settings.admin_token.reveal().encode(), b"relay dashboard session v1", hashlib.sha256).digest()


def _sign(key: bytes, message: str) -> str:
    return _b64(hmac.new(key, message.encode(), hashlib.sha256).digest())


def parse_cookie(value: str | None, key: bytes, now: float) -> Session | None:
    """The session a cookie names, if its signature holds and it has not expired (Redis not asked)."""
    if not value or value.count(".") != 2:
        return None
    sid, expires, sig = value.split(".")
    if not expires.isdigit() or not hmac.compare_digest(sig.encode(), _sign(key, f"{sid}.{expires}").encode()):
        return None
    if int(expires) <= now:
        return None
    return Session(sid, int(expires), _sign(key, f"csrf.{sid}"))


async def current_session(request: web.Request) -> Session | None:
    settings = request.config_dict[appkeys.SETTINGS]
    if settings.admin_token is None:
        return None
    session = parse_cookie(request.cookies.get(COOKIE), signing_key(settings), time.time())
    if session is None or not await request.config_dict[appkeys.REDIS].exists(k.dash_session(session.sid)):
        return None
    return session


def session_of(request: web.Request) -> Session:
    """The session ``gate`` already checked for this request."""
    session = parse_cookie(request.cookies.get(COOKIE), signing_key(request.config_dict[appkeys.SETTINGS]),
                           time.time())
    assert session is not None
    return session


def is_https(request: web.Request) -> bool:
    """The browser talks https: directly, or through a trusted proxy that says so in X-Forwarded-Proto."""
    if request.scheme == "https":
        return True
    try:
        peer = ipaddress.ip_address((request.remote or "").split("%")[0])
    except ValueError:
        return False
    trusted = request.config_dict[appkeys.TRUSTED_PROXIES]
    if not allowed(peer, trusted):
        return False
    protos = request.headers.get("X-Forwarded-Proto", "").lower().split(",")
    return "https" in (p.strip() for p in protos)


def safe_next(value: object) -> str:
    """A post-login destination inside the dashboard, never another site."""
    if not isinstance(value, str) or not value.startswith(f"{BASE}/") or "\\" in value \
            or any(ord(c) < 32 for c in value) or value.startswith(f"{BASE}/login"):
        return f"{BASE}/"
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc else f"{BASE}/"


# -- the gate: off switch, sessions, CSRF, error pages, headers --------------------------------------


@web.middleware
async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings = request.config_dict[appkeys.SETTINGS]
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
        if request.method not in ("GET", "HEAD") and request.headers.get("Sec-Fetch-Site") in ("cross-site",
                                                                                              "same-site"):
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
            form = await request.post()
            given = request.headers.get("X-CSRF-Token") or form.get("csrf")
            if not isinstance(given, str) or not hmac.compare_digest(given.encode(), session.csrf.encode()):
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
    except (RedisError, OSError) as exc:
        logger.warning("dashboard_redis_unavailable", path=request.path, error=type(exc).__name__)
        return _error(request, 503, f"Redis is unavailable ({type(exc).__name__}); retry in a moment", session)
    except Exception:
        logger.exception("dashboard_error", path=request.path, method=request.method)
        return _error(request, 500, "internal error; see the relay's log", session)


def _secure(response: web.StreamResponse) -> web.StreamResponse:
    response.headers.update(SECURITY_HEADERS)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _redirect(location: str) -> web.Response:
    response = web.Response(status=303, headers={"Location": location})
    _secure(response)
    return response


def _fragment(doc: dict[str, Any], html: str, summary: str) -> web.Response:
    """A refresh answer: the data, the section's HTML with its digest (unchanged: nothing to do) and a
    one-line summary for screen readers."""
    return web.json_response({**doc, "html": html, "digest": view.digest(html), "summary": summary})


def _assets(request: web.Request) -> str:
    return request.config_dict[ASSETS]


def _error(request: web.Request, status: int, message: str, session: Session | None,
           back: str | None = None) -> web.StreamResponse:
    if request.path.startswith(f"{BASE}/data/"):
        return _secure(web.json_response({"error": message}, status=status))
    text = view.error_page(status, message, assets=_assets(request),
                           csrf=session.csrf if session else None, back=back)
    return _secure(_html(text, status))


def _off(request: web.Request, data: bool) -> web.StreamResponse:
    env = request.config_dict[appkeys.SETTINGS].server.admin_token_env
    if data:
        return _secure(web.json_response(
            {"error": f"the dashboard is off: set the environment variable {env} (named by "
                      "server.admin_token_env) to a long random token and restart relay serve"}, status=404))
    return _secure(_html(view.off_page(assets=_assets(request), token_env=env), 404))


# -- login and logout --------------------------------------------------------------------------------


async def login_form(request: web.Request) -> web.StreamResponse:
    next_url = safe_next(request.query.get("next"))
    if await current_session(request) is not None:
        return _redirect(next_url)
    notice = "You are logged out." if request.query.get("out") == "1" else None
    env = request.config_dict[appkeys.SETTINGS].server.admin_token_env
    return _html(view.login_page(assets=_assets(request), next_url=next_url, notice=notice, token_env=env))


async def login(request: web.Request) -> web.StreamResponse:
    settings = request.config_dict[appkeys.SETTINGS]
    assert settings.admin_token is not None
    form = await request.post()
    given = form.get("token")
    next_url = safe_next(form.get("next"))
    if not isinstance(given, str) or not hmac.compare_digest(given.strip().encode(),
                                                             settings.admin_token.reveal().encode()):
        logger.warning("dashboard_login_failed", remote=request.remote)
        text = view.login_page(assets=_assets(request), next_url=next_url, token_env=settings.server.admin_token_env,
                               error="That is not the admin token.")
        return _html(text, 401)
    key = signing_key(settings)
    sid = secrets.token_urlsafe(18)
    expires = int(time.time()) + SESSION_TTL_S
    await request.config_dict[appkeys.REDIS].set(k.dash_session(sid), expires, ex=SESSION_TTL_S)
    response = _redirect(next_url)
    response.set_cookie(COOKIE, f"{sid}.{expires}.{_sign(key, f'{sid}.{expires}')}", max_age=SESSION_TTL_S,
                        path=BASE, httponly=True, samesite="Strict", secure=is_https(request))
    logger.info("dashboard_login", remote=request.remote)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    session = session_of(request)
    await request.config_dict[appkeys.REDIS].delete(k.dash_session(session.sid))
    response = _redirect(f"{BASE}/login?out=1")
    response.del_cookie(COOKIE, path=BASE, httponly=True, samesite="Strict", secure=is_https(request))
    logger.info("dashboard_logout", remote=request.remote)
    return response


# -- overview ----------------------------------------------------------------------------------------


def endpoint_state(row: Mapping[str, Any], alerting: bool, now_ms: int) -> str:
    """alerting: an alert is open; failing: failures in the last hour, and either none of them has been
    followed by a success yet or the latest is under five minutes old; healthy otherwise."""
    if alerting:
        return "alerting"
    if row.get("last_hour", {}).get("fail", 0) > 0:
        last_fail, last_ok = row.get("last_fail") or 0, row.get("last_ok") or 0
        if last_fail >= last_ok or now_ms - last_fail < RECENT_FAILURE_MS:
            return "failing"
    return "healthy"


def _target(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host


async def overview_model(redis: Redis, settings: Settings, now_ms: int) -> dict[str, Any]:
    """The health report, each endpoint's state and hourly chart, and whether anything was ever received."""
    report = await health_report(redis, settings, now_ms)
    model: dict[str, Any] = {"report": report, "endpoints": {}, "total": None}
    if not report["redis"]["reachable"]:
        return model
    endpoints = list(settings.endpoints)
    now_min = now_ms // 60_000
    span = min(DAY_MIN, 23 * 60 + now_min % 60 + 1)  # this clock hour so far, and the 23 before it
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcard(k.IDX_ALL)
        for ep in endpoints:
            pipe.exists(k.alert_open(ep))
        queue_minutes(pipe, endpoints, now_ms, span)
        rows = await pipe.execute()
    model["total"] = int(rows[0])
    alerting = rows[1:1 + len(endpoints)]
    minutes = rows[1 + len(endpoints):]
    hour_now = now_min // 60
    for i, ep in enumerate(endpoints):
        hours = [{"start": (hour_now - 23 + h) * 3_600_000, "ok": 0, "fail": 0} for h in range(24)]
        for m, (ok, fail, _) in enumerate(minutes[i * span:(i + 1) * span]):
            slot = hours[23 - (hour_now - (now_min - m) // 60)]
            slot["ok"] += int(ok or 0)
            slot["fail"] += int(fail or 0)
        row = report["endpoints"].get(ep, {})
        model["endpoints"][ep] = {"state": endpoint_state(row, bool(alerting[i]), now_ms), "hours": hours,
                                  "target": _target(settings.endpoints[ep].url)}
    return model


async def overview(request: web.Request) -> web.StreamResponse:
    model = await overview_model(request.config_dict[appkeys.REDIS], request.config_dict[appkeys.SETTINGS],
                                 int(time.time() * 1000))
    return _html(view.overview_page(model, assets=_assets(request), csrf=session_of(request).csrf,
                                    refresh_ms=REFRESH_MS))


async def overview_data(request: web.Request) -> web.StreamResponse:
    model = await overview_model(request.config_dict[appkeys.REDIS], request.config_dict[appkeys.SETTINGS],
                                 int(time.time() * 1000))
    return _fragment(model, view.overview_fragment(model), view.overview_summary(model))


# -- the notification list ---------------------------------------------------------------------------


def list_params(request: web.Request) -> dict[str, str]:
    """The list's query parameters, trimmed, empty ones dropped (the last of a repeated one wins)."""
    return {name: value.strip() for name, value in request.query.items() if value.strip()}


def list_filters(params: Mapping[str, str], now_ms: int) -> queries.Filters:
    raw: dict[str, object] = {name: params[name] for name in LIST_FILTERS if name in params}
    period = params.get("period")
    if period in view.PERIODS:
        raw["since"] = now_ms - view.PERIODS[period][1]
    elif period == "custom":
        raw.update({name: params[name] for name in ("since", "until") if name in params})
    return queries.parse_filters(raw)


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
    fragment: str
    filters: queries.Filters
    frozen: dict[str, str]


async def listing(request: web.Request, params: Mapping[str, str]) -> Listing:
    f = list_filters(params, int(time.time() * 1000))
    cursor = params.get("cursor")
    page = await queries.scan(request.config_dict[appkeys.REDIS], f, limit=queries.DEFAULT_LIMIT, cursor=cursor)
    fixed = frozen(params, f)
    url = f"{BASE}/notifications"
    next_url = f"{url}?{urlencode({**fixed, 'cursor': page.next_cursor})}" if page.next_cursor else None
    plain = {n: v for n, v in params.items() if n not in ("cursor", "queued", "replayed")}
    first_url = f"{url}?{urlencode(plain)}" if cursor else None
    current = {**fixed, "cursor": cursor} if cursor else plain
    data_url = f"{BASE}/data/notifications" + (f"?{urlencode(current)}" if current else "")
    items = [row.summary() for row in page.items]
    fragment = view.list_fragment(items, next_url=next_url, first_url=first_url, filtered=not f.empty,
                                  clear_url=url)
    return Listing(items, next_url, first_url, data_url, fragment, f, fixed)


async def notifications(request: web.Request) -> web.StreamResponse:
    settings = request.config_dict[appkeys.SETTINGS]
    params = list_params(request)
    choices: dict[str, list[str]] = {"channel": list(CHANNELS), "source": sorted(settings.sources),
                                     "endpoint": sorted(settings.endpoints), "state": list(k.STATES)}
    notice = ""
    if params.get("queued", "").isdigit():
        n = int(params["queued"])
        again = " (this request was already made: nothing new was queued)" if params.get("replayed") else ""
        notice = view.flash("ok", f"{n} resend{'s' if n != 1 else ''} queued{again}. Resends are marked RESEND "
                                  "at the top of this list and update as they are delivered.")
    try:
        result = await listing(request, params)
    except QueryError as exc:
        text = view.list_page(params=params, choices=choices, fragment="", summary="", data_url="", notice=notice,
                              error=exc.message, bulk_url=None, assets=_assets(request),
                              csrf=session_of(request).csrf, refresh_ms=0)
        return _html(text, exc.status)
    bulk_url = None
    if not result.filters.empty:
        bulk_url = f"{BASE}/resend?{urlencode(frozen(params, result.filters, until=int(time.time() * 1000)))}"
    text = view.list_page(params=params, choices=choices, fragment=result.fragment,
                          summary=view.list_summary(result.items), data_url=result.data_url,
                          notice=notice, error=None, bulk_url=bulk_url, assets=_assets(request),
                          csrf=session_of(request).csrf, refresh_ms=REFRESH_MS)
    return _html(text)


async def notifications_data(request: web.Request) -> web.StreamResponse:
    result = await listing(request, list_params(request))
    next_cursor = result.next_url is not None
    return _fragment({"items": result.items, "has_next": next_cursor}, result.fragment,
                     view.list_summary(result.items))


# -- one notification --------------------------------------------------------------------------------


def sensitive(name: str) -> bool:
    upper = name.upper()
    return any(word in upper for word in SENSITIVE)


def hidden_values(settings: Settings) -> list[str]:
    """Every configured secret, also as it appears percent-encoded in a form body."""
    plain = queries.secrets(settings)
    return sorted({v for s in plain for v in (s, quote_plus(s), quote(s, safe=""))}, key=len, reverse=True)


def redact_body(body: str) -> str:
    pieces = body.split("&")
    for i, piece in enumerate(pieces):
        name, sep, _ = piece.partition("=")
        if sep and sensitive(unquote_plus(name)):
            pieces[i] = f"{name}={queries.REDACTED}"
    return "&".join(pieces)


async def load_detail(request: web.Request, nid: str) -> dict[str, Any]:
    """The API's detail document, with configured secrets and PASSWORD/SECRET/TOKEN fields redacted."""
    doc: dict[str, Any] = await queries.detail(request.config_dict[appkeys.REDIS], nid)
    doc = queries.redact(doc, hidden_values(request.config_dict[appkeys.SETTINGS]))
    if doc.get("fields"):
        doc["fields"] = {name: [queries.REDACTED] * len(values) if sensitive(name) else values
                         for name, values in doc["fields"].items()}
    doc["body"] = redact_body(doc.get("body", ""))
    return doc


async def detail(request: web.Request) -> web.StreamResponse:
    settings = request.config_dict[appkeys.SETTINGS]
    nid = request.match_info["id"]
    try:
        doc = await load_detail(request, nid)
    except queries.NotFound as exc:
        return _error(request, 404, exc.message, session_of(request), back=f"{BASE}/notifications")
    notice = ""
    resent = request.query.get("resent", "")
    if queries.NID.match(resent):
        again = "This resend was already queued by the same request; nothing new was sent. " \
            if request.query.get("replayed") else ""
        notice = view.flash("ok", f'{again}Resend <a href="{view.detail_href(resent)}">{view.e(resent)}</a> '
                                  "queued; its deliveries show below and update by themselves.")
    routed = [ep for ep in doc.get("deliveries", {}) if ep in settings.endpoints]
    choices = routed or sorted(settings.endpoints)
    text = view.detail_page(doc, fragment=view.detail_fragment(doc), notice=notice, endpoints=choices,
                            idempotency_key=_idempotency_key(), assets=_assets(request),
                            csrf=session_of(request).csrf, refresh_ms=REFRESH_MS)
    return _html(text)


async def detail_data(request: web.Request) -> web.StreamResponse:
    doc = await load_detail(request, request.match_info["id"])
    return _fragment({"notification": doc}, view.detail_fragment(doc), view.detail_summary(doc))


def _idempotency_key() -> str:
    """One per rendered form: submitting the same form twice resends once."""
    return f"dash-{secrets.token_urlsafe(16)}"


def _form_text(form: Mapping[str, Any], name: str) -> str | None:
    value = form.get(name)
    return value.strip() or None if isinstance(value, str) else None


async def resend_one(request: web.Request) -> web.StreamResponse:
    nid = request.match_info["id"]
    form = await request.post()
    back = f"{BASE}/notifications/{quote(nid, safe='')}"
    try:
        result = await request.app[appkeys.RESENDER].one(nid, endpoint=_form_text(form, "endpoint"),
                                                         idempotency_key=_form_text(form, "idempotency_key"))
    except QueryError as exc:
        return _error(request, exc.status, f"cannot resend {nid}: {exc.message}", session_of(request), back=back)
    logger.info("dashboard_resend", nid=nid, resend=result["id"], targets=result["targets"],
                replayed=bool(result.get("replayed")))
    params = {"resent": result["id"], "replayed": "1" if result.get("replayed") else None}
    query = urlencode({n: v for n, v in params.items() if v})
    return _redirect(f"{BASE}/notifications/{quote(result['resend_of'], safe='')}?{query}")


# -- bulk resend -------------------------------------------------------------------------------------


def describe(f: queries.Filters) -> str:
    parts = [f"{name} <strong>{view.e(getattr(f, name))}</strong>"
             for name in ("channel", "source", "endpoint", "state", "ref") if getattr(f, name) is not None]
    if f.since is not None or f.until is not None:
        parts.append(f"received between {view.when(f.since, empty='the start')} and {view.when(f.until, empty='now')}")
    return ", ".join(parts) or "everything"


async def bulk_confirm(request: web.Request) -> web.StreamResponse:
    params = list_params(request)
    session = session_of(request)
    back = f"{BASE}/notifications?{urlencode(params)}"
    try:
        f = list_filters(params, int(time.time() * 1000))
        dry = await request.app[appkeys.RESENDER].bulk(filters=f, dry_run=True)
    except QueryError as exc:
        return _error(request, exc.status, exc.message, session, back=back)
    fixed = frozen(params, f, until=int(time.time() * 1000))
    text = view.bulk_page(filters=fixed, description=describe(f), dry=dry, back=back,
                          idempotency_key=_idempotency_key(), assets=_assets(request), csrf=session.csrf)
    return _html(text)


async def bulk_resend(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    params = {name: value for name in (*LIST_FILTERS, "period", "since", "until")
              if (value := _form_text(form, name)) is not None}
    back = f"{BASE}/notifications?{urlencode(params)}"
    try:
        f = list_filters(params, int(time.time() * 1000))
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

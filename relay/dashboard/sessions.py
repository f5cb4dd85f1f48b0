"""Dashboard sessions: the signed cookie, its Redis record, the CSRF token, and where a login may lead.

Auth is the admin API's token (``settings.admin_token``): a login sets a session cookie whose value is
``{sid}.{expiry}.{HMAC}``, signed with a key derived from the token, and the session exists in Redis
(``relay:dash:session:{sid}``) until it expires or the logout deletes it. The cookie is HttpOnly,
SameSite=Strict, Path=/dashboard, and Secure when the request came over https (or a trusted proxy
said so with ``X-Forwarded-Proto: https``). The CSRF token is an HMAC of the session id, so it needs
no storage and dies with the session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from config.networks import allowed
from config.settings import Settings
from relay import constants as k
from relay.dashboard.view import BASE
from relay.web import appkeys

COOKIE = "relay_dashboard"
SESSION_TTL_S = 12 * 3600


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
    settings = request.config_dict[appkeys.LIVE].settings
    if settings.admin_token is None:
        return None
    session = parse_cookie(request.cookies.get(COOKIE), signing_key(settings), time.time())
    if session is None or not await request.config_dict[appkeys.REDIS].exists(k.dash_session(session.sid)):
        return None
    return session


def session_of(request: web.Request) -> Session:
    """The session ``require_session`` (``middlewares.py``) already checked for this request."""
    session = parse_cookie(
        request.cookies.get(COOKIE), signing_key(request.config_dict[appkeys.LIVE].settings), time.time()
    )
    assert session is not None
    return session


def token_matches(given: object, settings: Settings) -> bool:
    """The login form's token is the admin token (compared in constant time)."""
    assert settings.admin_token is not None
    return isinstance(given, str) and hmac.compare_digest(
        given.strip().encode(), settings.admin_token.reveal().encode()
    )


def csrf_ok(request: web.Request, form: Mapping[str, object], session: Session) -> bool:
    """The session's CSRF token came with a state-changing request, as a header or a form field."""
    given = request.headers.get("X-CSRF-Token") or form.get("csrf")
    return isinstance(given, str) and hmac.compare_digest(given.encode(), session.csrf.encode())


def cross_site(request: web.Request) -> bool:
    """A browser says this state-changing request comes from another site: refused outright."""
    return request.method not in ("GET", "HEAD") and request.headers.get("Sec-Fetch-Site") in (
        "cross-site",
        "same-site",
    )


async def start(request: web.Request, response: web.StreamResponse) -> None:
    """A new session in Redis, and its cookie on ``response``."""
    settings = request.config_dict[appkeys.LIVE].settings
    key = signing_key(settings)
    sid = secrets.token_urlsafe(18)
    expires = int(time.time()) + SESSION_TTL_S
    await request.config_dict[appkeys.REDIS].set(k.dash_session(sid), expires, ex=SESSION_TTL_S)
    response.set_cookie(
        COOKIE,
        f"{sid}.{expires}.{_sign(key, f'{sid}.{expires}')}",
        max_age=SESSION_TTL_S,
        path=BASE,
        httponly=True,
        samesite="Strict",
        secure=is_https(request),
    )


async def end(request: web.Request, session: Session, response: web.StreamResponse) -> None:
    """The session gone from Redis (a kept copy of the cookie opens nothing), and the cookie dropped."""
    await request.config_dict[appkeys.REDIS].delete(k.dash_session(session.sid))
    response.del_cookie(COOKIE, path=BASE, httponly=True, samesite="Strict", secure=is_https(request))


def is_https(request: web.Request) -> bool:
    """The browser talks https: directly, or through a trusted proxy that says so in X-Forwarded-Proto."""
    if request.scheme == "https":
        return True
    try:
        peer = ipaddress.ip_address((request.remote or "").split("%")[0])
    except ValueError:
        return False
    trusted = request.config_dict[appkeys.LIVE].trusted_proxies
    if not allowed(peer, trusted):
        return False
    protos = request.headers.get("X-Forwarded-Proto", "").lower().split(",")
    return "https" in (p.strip() for p in protos)


def safe_next(value: object) -> str:
    """A post-login destination inside the dashboard, never another site."""
    if (
        not isinstance(value, str)
        or not value.startswith(f"{BASE}/")
        or "\\" in value
        or any(ord(c) < 32 for c in value)
        or value.startswith(f"{BASE}/login")
    ):
        return f"{BASE}/"
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc else f"{BASE}/"

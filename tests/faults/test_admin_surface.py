"""Scenario 8: the admin surface refuses every request without the token.

Two ``relay serve`` processes on one Redis: one with ``RELAY_ADMIN_TOKEN`` set, one without. Every
``/api`` route listed by ``GET /api/openapi.json`` (checked against the app's own router, so no route
escapes the list) answers 401 with no token, a wrong one, or a near miss; every ``/dashboard`` route
redirects to its login page or answers 401/403 without a session; a forged session cookie and a login
with a wrong token get nothing. Without a token configured, ``/api`` and ``/dashboard`` are off: 404 or
503 for every route, never a 2xx.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from config.settings import load_settings
from relay.server import create_app
from relay.store.ingest import notification_id
from tests.faults.harness import FORM, Cluster, Summary, command, ipn_body, pick, report
from tests.support import TEST_ENV

pytestmark = [pytest.mark.timeout(pick(90, 180)), pytest.mark.slow]  # slow: not in make check's fast tier

NODE = "tests/faults/test_admin_surface.py::test_admin_surface_refuses_every_request_without_the_token"
TOKEN = "fault-suite-admin-token-6b1c0f5e2d9a"
PUBLIC = ("/dashboard/static/",)  # css/js: no data, served to the login page too

#: what a caller without the token might type into the dashboard's login form
WRONG_LOGINS = ("", "not-the-token", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), f"Bearer {TOKEN}")

#: what a caller without the token might send instead of it
CREDENTIALS: dict[str, dict[str, str]] = {
    "nothing": {},
    "wrong token": {"Authorization": "Bearer not-the-token"},
    "empty bearer": {"Authorization": "Bearer "},
    "token without a scheme": {"Authorization": TOKEN},
    "basic auth": {"Authorization": "Basic " + base64.b64encode(f"admin:{TOKEN}".encode()).decode()},
    "token minus a character": {"Authorization": f"Bearer {TOKEN[:-1]}"},
    "token plus a character": {"Authorization": f"Bearer {TOKEN}x"},
    "token in another header": {"X-Api-Key": TOKEN, "X-Admin-Token": TOKEN},
    "token as a cookie": {"Cookie": f"token={TOKEN}; relay_session={TOKEN}"},
    "forged session cookie": {"Cookie": "relay_dashboard=" + "a" * 24 + ".9999999999." + "b" * 43},
    "forwarded from loopback": {"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1"},
}


def routes(app: web.Application) -> set[tuple[str, str]]:
    """Every (method, path template) the app serves, sub-applications included, static files aside.

    A sub-application's resources already carry its prefix once it is mounted.
    """
    out: set[tuple[str, str]] = set()
    for resource in app.router.resources():
        info: dict[str, Any] = dict(resource.get_info())
        if "app" in info:
            out |= routes(info["app"])
        elif "directory" in info:
            continue
        else:
            path = info.get("formatter") or info.get("path") or ""
            out |= {(route.method, path) for route in resource if route.method != "HEAD"}
    return out


def concrete(path: str, nid: str) -> str:
    return path.replace("{id}", nid)


async def call(
    session: aiohttp.ClientSession,
    base: str,
    method: str,
    path: str,
    headers: dict[str, str],
    login_token: str = "not-the-token",
) -> tuple[int, dict[str, str]]:
    kwargs: dict[str, Any] = {"headers": headers, "allow_redirects": False, "timeout": aiohttp.ClientTimeout(total=10)}
    if method == "POST":
        if path.startswith("/api"):
            kwargs["json"] = {"ids": ["ipn_000000000000000000000000"], "dry_run": True}
        else:
            kwargs["data"] = {"token": login_token, "csrf": "x", "ids": "ipn_000000000000000000000000"}
    async with session.request(method, base + path, **kwargs) as resp:
        await resp.read()
        return resp.status, dict(resp.headers)


async def test_admin_surface_refuses_every_request_without_the_token(
    cluster: Callable[..., Awaitable[Cluster]],
) -> None:
    started = time.monotonic()
    c = await cluster()
    c.configure([])
    await c.start_redis()
    on = await c.start_ingress(env={"RELAY_ADMIN_TOKEN": TOKEN})
    off = await c.start_ingress(env={"RELAY_ADMIN_TOKEN": ""})
    session = c.session
    body = ipn_body(7_700_000)
    async with session.post(on + "/ipn", data=body, headers=FORM) as resp:
        assert resp.status == 200
    nid = notification_id("default", "ipn", body)

    # the routes: as the API documents them, and as the app really serves them
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with session.get(on + "/api/openapi.json", headers=auth) as resp:
        assert resp.status == 200, await resp.text()
        doc = await resp.json()
    documented = {(m.upper(), path) for path, ops in doc["paths"].items() for m in ops}
    settings = load_settings(c.config, {**TEST_ENV, "REDIS_URL": c.redis_url, "RELAY_ADMIN_TOKEN": TOKEN})
    served = routes(create_app(settings))
    api = {(m, p) for m, p in served if p.startswith("/api/")}
    assert api == documented, f"undocumented: {sorted(api - documented)}; not served: {sorted(documented - api)}"
    dashboard = {(m, p) for m, p in served if p.startswith("/dashboard") and not p.startswith(PUBLIC)}
    assert dashboard, "no dashboard routes found"

    # the token works (so a 401 below is the guard, not a broken route)
    for path in ("/api/health", f"/api/notifications/{nid}", "/api/notifications"):
        status, _ = await call(session, on, "GET", path, auth)
        assert status in (200, 503), (path, status)

    statuses: Counter[int] = Counter()
    wrong: list[str] = []
    # the soak version also tries random tokens of the right length on every route
    guesses = {
        f"random token {i}": {"Authorization": f"Bearer {secrets.token_urlsafe(len(TOKEN))[: len(TOKEN)]}"}
        for i in range(pick(0, 40))
    }
    for method, template in sorted(api | dashboard):
        path = concrete(template, nid)
        for label, headers in {**CREDENTIALS, **guesses}.items():
            status, answer = await call(session, on, method, path, headers)
            statuses[status] += 1
            where = f"token on: {method} {path} with {label}: {status}"
            if path.startswith("/api"):
                if status != 401 or "Bearer" not in answer.get("WWW-Authenticate", ""):
                    wrong.append(where)
            elif path == "/dashboard/login":
                # the login form is public; a login with a wrong token must not open a session
                if method == "POST" and (status != 401 or "Set-Cookie" in answer):
                    wrong.append(where + " (login without the right token)")
                elif method == "GET" and status != 200:
                    wrong.append(where)
            elif status in (302, 303):
                # to the login page; the bare /dashboard only adds its trailing slash
                target = "/dashboard/" if path == "/dashboard" else "/dashboard/login"
                if not answer.get("Location", "").startswith(target):
                    wrong.append(where + f" -> {answer.get('Location')}")
            elif status not in (401, 403):
                wrong.append(where)
        # off: no token configured, nothing answers, whatever is sent
        for label in ("nothing", "token plus a character"):
            status, answer = await call(session, off, method, path, {**CREDENTIALS[label], **auth}, TOKEN)
            statuses[status] += 1
            bare = path == "/dashboard" and status == 303 and answer.get("Location") == "/dashboard/"
            if status not in (404, 503) and not bare:
                wrong.append(f"token off: {method} {path} with {label} and the other process's token: {status}")
    for candidate in WRONG_LOGINS:
        status, answer = await call(session, on, "POST", "/dashboard/login", {}, candidate)
        statuses[status] += 1
        if status != 401 or "Set-Cookie" in answer:
            wrong.append(f"dashboard login with {candidate[:12]!r}...: {status}, cookie {'Set-Cookie' in answer}")
    # the right token does open a session: the refusals above are the gate's, not a broken login
    status, answer = await call(session, on, "POST", "/dashboard/login", {}, TOKEN)
    assert status == 303 and "relay_dashboard=" in answer.get("Set-Cookie", ""), (status, answer)
    requests = sum(statuses.values())
    report(
        Summary(
            "8 admin surface",
            acknowledged=0,
            expected=0,
            delivered=0,
            lost=0,
            duplicated=0,
            seconds=round(time.monotonic() - started, 1),
            load=f"{requests} requests to {len(api)} /api and {len(dashboard)} /dashboard routes, two ingresses",
            faults="none (unauthenticated callers)",
            inputs=f"{len(CREDENTIALS)} kinds of missing, wrong or forged credentials"
            + (f" and {len(guesses)} random tokens" if guesses else "")
            + "; token configured and not",
            command=command(NODE),
            extra={
                "requests": requests,
                "routes": len(api) + len(dashboard),
                "statuses": dict(sorted(statuses.items())),
                "wrong": len(wrong),
            },
        )
    )
    assert not wrong, wrong[:15]

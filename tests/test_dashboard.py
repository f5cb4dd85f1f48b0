"""The dashboard: sessions, CSRF, escaping, redaction, bulk resend, and one real browser run end to end.

The browser test drives Debian's Chromium (``apt-get install chromium``) with the ``playwright`` package;
it never downloads a browser. Screenshots land in tests/artifacts/.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from config.settings import Settings
from relay import constants as k
from relay.dashboard import sessions
from relay.server import create_app
from relay.store import overview as dashboard
from relay.store.ingest import notification_id
from tests.support import SECRET_KEY, Sink, close_worker, free_port, ipn_fields, signed_body, wait_for
from workers.main import create_worker

TOKEN = "dash-admin-token-0123456789abcdef"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def endpoint(name: str, url: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "url": url, "timeout": 2, "retry_delays": [0.2, 0.2], "channels": ["ipn", "lcn"], **kw}


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(endpoints=[endpoint("billing", "http://127.0.0.1:9/hook")], env={"RELAY_ADMIN_TOKEN": TOKEN})


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings, redis: Redis) -> TestClient:
    return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]


async def ingest(client: TestClient, fields: list[tuple[str, str]]) -> str:
    body = signed_body(fields)
    resp = await client.post("/ipn", data=body, headers=FORM)
    assert resp.status == 200, await resp.text()
    return notification_id("default", "ipn", body)


async def login(client: TestClient, **headers: str) -> str:
    """Log in; return the session's CSRF token."""
    resp = await client.post("/dashboard/login", data={"token": TOKEN}, headers=headers, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    page = await client.get("/dashboard/")
    assert page.status == 200
    match = re.search(r'data-csrf="([^"]+)"', await page.text())
    assert match
    return match.group(1)


def set_cookie(resp: aiohttp.ClientResponse) -> tuple[str, str]:
    [header] = resp.headers.getall("Set-Cookie")
    jar: SimpleCookie = SimpleCookie()
    jar.load(header)
    return header, jar[sessions.COOKIE].value


# -- off, login, sessions -------------------------------------------------------------------------


async def test_off_without_a_token(aiohttp_client: Any, make_settings: Callable[..., Settings], redis: Redis) -> None:
    client = await aiohttp_client(create_app(make_settings()))
    resp = await client.get("/dashboard", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/dashboard/"
    for method, path in [
        ("GET", "/dashboard/"),
        ("GET", "/dashboard/notifications"),
        ("POST", "/dashboard/login"),
        ("GET", "/dashboard/nowhere"),
    ]:
        resp = await client.request(method, path, data={"token": ""}, allow_redirects=False)
        text = await resp.text()
        assert resp.status == 404 and "dashboard is off" in text and "RELAY_ADMIN_TOKEN" in text, (method, path)
        assert "Set-Cookie" not in resp.headers
        # the advice fits relay dev too, which is not restarted as `relay serve`
        assert "restart the relay" in text and "restart <code>relay serve" not in text
    resp = await client.get("/dashboard/data/overview")
    error = (await resp.json())["error"]
    assert resp.status == 404 and "RELAY_ADMIN_TOKEN" in error and "restart relay serve" not in error
    assert (await client.get("/dashboard/static/dashboard.css")).status == 200  # the off page is styled


async def test_without_a_session_pages_redirect_and_data_is_401(client: TestClient, redis: Redis) -> None:
    resp = await client.get("/dashboard/notifications?channel=ipn", allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/dashboard/login?next=%2Fdashboard%2Fnotifications%3Fchannel%3Dipn"
    for path in ("/dashboard/data/overview", "/dashboard/data/notifications", "/dashboard/data/notifications/x"):
        resp = await client.get(path)
        assert resp.status == 401 and "log in" in (await resp.json())["error"]
    nid = await ingest(client, ipn_fields("1"))
    resp = await client.post(f"/dashboard/notifications/{nid}/resend", data={}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/dashboard/login"
    assert await redis.zcard(k.resends(nid)) == 0
    page = await client.get("/dashboard/login")
    text = await page.text()
    assert page.status == 200 and '<label for="token">Admin token</label>' in text and 'id="token"' in text


@pytest.mark.parametrize("given", ["wrong", "", TOKEN[:-1], TOKEN + "x", TOKEN.upper()])
async def test_a_wrong_token_is_refused(client: TestClient, given: str) -> None:
    resp = await client.post("/dashboard/login", data={"token": given}, allow_redirects=False)
    assert resp.status == 401
    assert "Set-Cookie" not in resp.headers
    assert "not the admin token" in await resp.text()
    assert (await client.get("/dashboard/", allow_redirects=False)).status == 303


async def test_login_sets_a_signed_expiring_httponly_strict_cookie(client: TestClient, redis: Redis) -> None:
    resp = await client.post(
        "/dashboard/login", data={"token": TOKEN, "next": "/dashboard/notifications?ref=1"}, allow_redirects=False
    )
    assert resp.status == 303 and resp.headers["Location"] == "/dashboard/notifications?ref=1"
    header, value = set_cookie(resp)
    attrs = {part.strip().split("=")[0].lower(): part.strip() for part in header.split(";")[1:]}
    assert "httponly" in attrs and attrs["samesite"].lower() == "samesite=strict"
    assert attrs["path"] == "Path=/dashboard" and "secure" not in attrs  # plain http, no trusted proxy
    assert int(attrs["max-age"].split("=")[1]) == sessions.SESSION_TTL_S
    assert TOKEN not in value
    sid, expires, _ = value.split(".")
    assert abs(int(expires) - time.time() - sessions.SESSION_TTL_S) < 60
    assert 0 < await redis.ttl(k.dash_session(sid)) <= sessions.SESSION_TTL_S
    page = await client.get("/dashboard/")
    assert page.status == 200
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Cache-Control"] == "no-store"


async def test_the_cookie_is_secure_behind_a_trusted_https_proxy(
    aiohttp_client: Any, make_settings: Callable[..., Settings], redis: Redis
) -> None:
    env = {"RELAY_ADMIN_TOKEN": TOKEN}
    proxied = make_settings(env=env, extra='[server]\ntrusted_proxies = ["127.0.0.1/32"]\n')
    trusted = await aiohttp_client(create_app(proxied))
    resp = await trusted.post(
        "/dashboard/login", data={"token": TOKEN}, headers={"X-Forwarded-Proto": "https"}, allow_redirects=False
    )
    assert "; secure" in set_cookie(resp)[0].lower()
    untrusted = await aiohttp_client(create_app(make_settings(env=env)))
    resp = await untrusted.post(
        "/dashboard/login", data={"token": TOKEN}, headers={"X-Forwarded-Proto": "https"}, allow_redirects=False
    )
    assert "secure" not in set_cookie(resp)[0].lower()  # anyone can send the header: not believed


@pytest.mark.parametrize(
    "next_url",
    [
        "//evil.example/x",
        "https://evil.example/",
        "/dashboard/../x\\y",
        "/elsewhere",
        "/dashboard/login?next=/x",
        "javascript:alert(1)",
    ],
)
async def test_login_never_redirects_off_the_dashboard(client: TestClient, next_url: str) -> None:
    resp = await client.post("/dashboard/login", data={"token": TOKEN, "next": next_url}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/dashboard/"


async def test_tampered_expired_and_logged_out_sessions_are_refused(
    client: TestClient, settings: Settings, redis: Redis
) -> None:
    resp = await client.post("/dashboard/login", data={"token": TOKEN}, allow_redirects=False)
    _, value = set_cookie(resp)
    client.session.cookie_jar.clear()  # each request below names its cookie itself
    sid, expires, sig = value.split(".")
    key = sessions.signing_key(settings)
    past = int(time.time()) - 1
    forged = [
        f"{sid}.{expires}.{sig[:-2]}AA",
        f"{sid}.{int(expires) + 999}.{sig}",
        f"x{sid}.{expires}.{sig}",
        f"{sid}.{past}.{sessions._sign(key, f'{sid}.{past}')}",
        "garbage",
        "",
    ]
    for cookie in forged:
        resp = await client.get("/dashboard/data/overview", headers={"Cookie": f"{sessions.COOKIE}={cookie}"})
        assert resp.status == 401, cookie
    good = {"Cookie": f"{sessions.COOKIE}={value}"}
    assert (await client.get("/dashboard/data/overview", headers=good)).status == 200
    csrf = sessions.parse_cookie(value, key, time.time())
    assert csrf is not None
    resp = await client.post("/dashboard/logout", data={"csrf": csrf.csrf}, headers=good, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/dashboard/login?out=1"
    assert set_cookie(resp)[1] == ""  # the browser drops it
    # a copy of the cookie kept after logout opens nothing: the session is gone from Redis
    assert (await client.get("/dashboard/data/overview", headers=good)).status == 401
    assert not await redis.exists(k.dash_session(sid))


async def test_state_changing_posts_need_the_csrf_token(client: TestClient, redis: Redis) -> None:
    csrf = await login(client)
    nid = await ingest(client, ipn_fields("1"))
    url = f"/dashboard/notifications/{nid}/resend"
    for data, headers in [
        ({}, {}),
        ({"csrf": "nope"}, {}),
        ({"csrf": csrf[:-1]}, {}),
        ({"csrf": csrf}, {"Sec-Fetch-Site": "cross-site"}),
        ({"csrf": csrf}, {"Sec-Fetch-Site": "same-site"}),
    ]:
        resp = await client.post(url, data=data, headers=headers, allow_redirects=False)
        assert resp.status == 403, (data, headers)
    assert (await client.post("/dashboard/logout", data={}, allow_redirects=False)).status == 403
    assert (await client.post("/dashboard/resend", data={"channel": "ipn"}, allow_redirects=False)).status == 403
    assert await redis.zcard(k.resends(nid)) == 0
    # the right token, as a form field or a header, from this origin
    resp = await client.post(url, data={"csrf": csrf}, headers={"Sec-Fetch-Site": "same-origin"}, allow_redirects=False)
    assert resp.status == 303 and f"/dashboard/notifications/{nid}?resent={quote(nid)}~r1" == resp.headers["Location"]
    resp = await client.post(url, headers={"X-CSRF-Token": csrf}, allow_redirects=False)
    assert resp.status == 303
    assert await redis.zcard(k.resends(nid)) == 2


async def test_resend_from_a_detail_page_defaults_to_where_it_failed(
    aiohttp_client: Any, make_settings: Callable[..., Settings], redis: Redis
) -> None:
    names = ("billing", "crm", "erp")
    settings = make_settings(
        endpoints=[endpoint(n, "http://127.0.0.1:9/hook") for n in names], env={"RELAY_ADMIN_TOKEN": TOKEN}
    )
    client = await aiohttp_client(create_app(settings))
    csrf = await login(client)
    failed, fine = await ingest(client, ipn_fields("1")), await ingest(client, ipn_fields("2"))
    for nid, states in ((failed, ("failed", "failed", "delivered")), (fine, ("delivered",) * 3)):
        await redis.hset(k.notification(nid), "eps", ",".join(names))
        for name, state in zip(names, states, strict=True):
            await redis.hset(k.delivery(nid, name), mapping={"state": state, "attempts": 1})
    page = await (await client.get(f"/dashboard/notifications/{failed}")).text()
    assert '<option value="billing,crm" selected>where it failed: billing, crm</option>' in page
    resp = await client.post(
        f"/dashboard/notifications/{failed}/resend",
        data={"csrf": csrf, "endpoint": "billing,crm"},
        allow_redirects=False,
    )
    assert resp.status == 303
    assert await redis.hget(k.notification(f"{failed}~r1"), "targets") == b"billing,crm"
    # the opposite: nothing failed, so nothing is preselected but "every endpoint"
    page = await (await client.get(f"/dashboard/notifications/{fine}")).text()
    assert "where it failed" not in page and " selected" not in page.split('id="resend-endpoint"')[1][:600]


# -- what the pages show -----------------------------------------------------------------------------


class EvilSink:
    """An endpoint that answers 400 with markup in its body."""

    def __init__(self) -> None:
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> EvilSink:
        async def handle(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(status=400, text="<script>alert(3)</script>", content_type="text/html")

        app = web.Application()
        app.router.add_post("/hook", handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self


async def test_attacker_text_is_escaped_everywhere(
    aiohttp_client: Any, make_settings: Callable[..., Settings], redis: Redis
) -> None:
    sink = await EvilSink().start()
    settings = make_settings(endpoints=[endpoint("billing", sink.url)], env={"RELAY_ADMIN_TOKEN": TOKEN})
    client: TestClient = await aiohttp_client(create_app(settings))
    worker = create_worker(settings, handle_signals=False)
    task = asyncio.create_task(worker.async_run())
    try:
        await login(client)
        fields = [(n, "<script>alert(1)</script>" if n == "FIRSTNAME" else v) for n, v in ipn_fields("x")]
        fields = [(n, '"><img src=x onerror=alert(2)>' if n == "REFNO" else v) for n, v in fields]
        nid = await ingest(client, fields)
        await wait_for(lambda: redis.hget(k.delivery(nid, "billing"), "state"), 10)
        await wait_for(lambda: redis.llen(k.attempts(nid, "billing")), 10)
        pages = {
            "detail": await (await client.get(f"/dashboard/notifications/{nid}")).text(),
            "detail data": (await (await client.get(f"/dashboard/data/notifications/{nid}")).json())["html"],
            "list": await (await client.get("/dashboard/notifications")).text(),
            "search": await (
                await client.get("/dashboard/notifications", params={"ref": '"><img src=x onerror=alert(2)>'})
            ).text(),
            "list data": (await (await client.get("/dashboard/data/notifications")).json())["html"],
        }
        for name, text in pages.items():
            assert "<script>alert" not in text and "<img src=x" not in text, name
            assert "<script" not in text.replace('<script src="/dashboard/static/dashboard.js', ""), name
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages["detail"]  # the field, shown as text
        assert "&lt;script&gt;alert(3)&lt;/script&gt;" in pages["detail"]  # the endpoint's answer too
        assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in pages["list"]  # Jinja2's escape: " is &#34;
        assert nid in pages["search"]
        # an id in the flash message is only shown when it is one
        flash = await (await client.get(f"/dashboard/notifications/{nid}", params={"resent": "<b>x</b>"})).text()
        assert "<b>x</b>" not in flash and "queued" not in flash
    finally:
        await close_worker(worker)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert sink.runner is not None
        await sink.runner.cleanup()


async def test_templates_autoescape_stored_markup(client: TestClient) -> None:
    """The templates print stored text as text: with Jinja2's autoescape off, every assertion on the
    escaped forms below fails (the raw markup would be in the page instead)."""
    await login(client)
    script, img = "<script>alert(1)</script>", '"><img src=x onerror=alert(2)>'
    fields = [(n, script if n == "FIRSTNAME" else img if n == "REFNO" else v) for n, v in ipn_fields("x")]
    nid = await ingest(client, fields)
    script_escaped, img_escaped = "&lt;script&gt;alert(1)&lt;/script&gt;", "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;"
    list_page = await (await client.get("/dashboard/notifications")).text()
    detail_page = await (await client.get(f"/dashboard/notifications/{nid}")).text()
    list_data = await (await client.get("/dashboard/data/notifications")).json()
    detail_data = await (await client.get(f"/dashboard/data/notifications/{nid}")).json()
    for name, text in {
        "list": list_page,
        "detail": detail_page,
        "list data": list_data["html"],
        "detail data": detail_data["html"],
    }.items():
        assert script not in text and img not in text and "<img" not in text, name
    for text in (list_page, list_data["html"], detail_page):
        assert img_escaped in text  # the reference: in the list's link and the detail's facts
    assert script_escaped in detail_page  # the parsed field
    assert detail_page.count(script_escaped) == 1  # the field; the raw body holds it percent-encoded
    # a page's refreshed section is the same template as its data answer: the digests agree
    for page, data in ((list_page, list_data), (detail_page, detail_data)):
        match = re.search(r'class="region" data-refresh="[^"]+" data-digest="([0-9a-f]+)"', page)
        assert match and match.group(1) == data["digest"]


async def test_secrets_and_secret_named_fields_are_redacted(client: TestClient) -> None:
    await login(client)
    fields = [
        *ipn_fields("7"),
        ("NOTE", f"key={SECRET_KEY}"),
        ("API_PASSWORD", "hunter2-pass"),
        ("x_token", "tok-0123456"),
        ("CLIENT_SECRET", "cs-abcdef"),
    ]
    nid = await ingest(client, fields)
    page = await (await client.get(f"/dashboard/notifications/{nid}")).text()
    data = json.dumps(await (await client.get(f"/dashboard/data/notifications/{nid}")).json())
    for text in (page, data):
        for secret in (
            SECRET_KEY,
            quote_plus(SECRET_KEY),
            quote(SECRET_KEY, safe=""),
            "hunter2-pass",
            "tok-0123456",
            "cs-abcdef",
            TOKEN,
        ):
            assert secret not in text
        assert "**redacted**" in text
    assert "API_PASSWORD=**redacted**" in page and "key%3D**redacted**" in page
    assert "SIGNATURE_SHA3_256" in page  # signatures are not secrets


async def test_list_filters_search_and_pages(client: TestClient, redis: Redis) -> None:
    await login(client)
    nids = [await ingest(client, ipn_fields(str(500 + i))) for i in range(52)]
    page = await (await client.get("/dashboard/notifications", params={"ref": "510"})).text()
    assert nids[10] in page and nids[11] not in page
    page = await (await client.get("/dashboard/notifications", params={"channel": "lcn"})).text()
    assert "No notification matches these filters" in page
    resp = await client.get("/dashboard/notifications", params={"channel": "email"})
    assert resp.status == 400 and "invalid channel=&#39;email&#39;" in await resp.text()
    # a period not offered was ignored: every notification listed as if "any time" had been asked for
    resp = await client.get("/dashboard/notifications", params={"period": "2h"})
    assert resp.status == 400 and "invalid period=&#39;2h&#39;" in await resp.text()
    resp = await client.get("/dashboard/notifications", params={"period": "24h"})
    page = await resp.text()
    assert sum(nid in page for nid in nids) == 50
    match = re.search(r'<a rel="next" href="([^"]+)"', page)
    assert match
    following = await (await client.get(match.group(1).replace("&amp;", "&"))).text()
    assert [nid for nid in nids if nid in following] == nids[:2]  # the two oldest
    assert "First page" in following


async def test_bulk_resend_shows_the_count_before_sending(client: TestClient, redis: Redis) -> None:
    csrf = await login(client)
    nids = [await ingest(client, ipn_fields(str(i))) for i in range(3)]
    resp = await client.get("/dashboard/resend", params={"channel": "ipn", "period": "24h"})
    page = await resp.text()
    assert resp.status == 200 and "This will resend <strong>3</strong> notifications" in page
    assert sum([await redis.zcard(k.resends(n)) for n in nids]) == 0  # a dry run
    form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page))
    assert form["csrf"] == csrf and form["period"] == "custom" and form["until"].isdigit()
    resp = await client.post("/dashboard/resend", data=form, allow_redirects=False)
    assert resp.status == 303 and "queued=3" in resp.headers["Location"]
    assert [await redis.zcard(k.resends(n)) for n in nids] == [1, 1, 1]
    # the same confirmation sent twice queues nothing more
    resp = await client.post("/dashboard/resend", data=form, allow_redirects=False)
    assert "replayed=1" in resp.headers["Location"]
    assert [await redis.zcard(k.resends(n)) for n in nids] == [1, 1, 1]
    assert resp.headers["Location"] == "/dashboard/notifications?channel=ipn&queued=3&replayed=1"
    listing = await (await client.get(resp.headers["Location"])).text()
    assert "3 resends queued" in listing and "already made" in listing
    assert listing.count('<span class="tag">resend</span>') == 3  # the resends, at the top
    resp = await client.get("/dashboard/resend")
    assert resp.status == 400 and "filter" in await resp.text()


async def test_overview_empty_states(aiohttp_client: Any, make_settings: Callable[..., Settings], redis: Redis) -> None:
    client: TestClient = await aiohttp_client(create_app(make_settings(env={"RELAY_ADMIN_TOKEN": TOKEN})))
    await login(client)
    page = await (await client.get("/dashboard/")).text()
    assert "No notifications yet" in page and "relay send-test --channel ipn" in page
    assert "No endpoints are configured" in page and "relay worker" in page
    page = await (await client.get("/dashboard/notifications")).text()
    assert "No notifications yet" in page and "relay send-test --channel ipn" in page


async def test_overview_with_a_full_redis_does_not_say_start_a_worker(client: TestClient, redis: Redis) -> None:
    """A full Redis refuses the workers' heartbeats as every other write: the overview said "No worker is
    running … start one with relay worker" while they ran (a fault run). It says Redis is full, and why
    no worker is seen."""
    await login(client)
    await redis.zadd(k.WORKERS, {"host:1": int(time.time() * 1000) - 60_000})
    await redis.config_set("maxmemory-policy", "noeviction")
    await redis.config_set("maxmemory", 1)
    try:
        page = await (await client.get("/dashboard/")).text()
    finally:
        await redis.config_set("maxmemory", 0)
    assert "No worker is running" not in page and "Redis is full" in page
    assert "refuses the workers&#39; heartbeats" in page or "refuses the workers' heartbeats" in page
    assert re.search(r'<span class="label">Redis</span><span class="value">Full</span>', page)
    # with room again, a stale heartbeat is no worker as before
    page = await (await client.get("/dashboard/")).text()
    assert "No worker is running" in page


async def test_overview_states_and_hourly_chart(client: TestClient, settings: Settings, redis: Redis) -> None:
    now = int(time.time() * 1000)
    hour = now // 3_600_000 * 3_600_000
    await redis.zadd(k.ep_state("billing", "delivered"), {"a": now, "b": now, "c": now, "d": hour - 1})
    await redis.zadd(k.ep_state("billing", "retrying"), {"e": now})
    await redis.zadd(k.ep_state("billing", "retrying"), {"f": hour - 23 * 3_600_000})
    await redis.zadd(k.ep_state("billing", "delivered"), {"g": hour - 25 * 3_600_000})  # older than the chart
    model = await dashboard.overview_model(redis, settings, now)
    hours = model["endpoints"]["billing"]["hours"]
    assert len(hours) == 24 and hours[-1]["start"] == hour
    assert (hours[-1]["ok"], hours[-1]["fail"]) == (3, 1) and hours[-2]["ok"] == 1
    assert hours[0]["fail"] == 1 and sum(h["ok"] for h in hours) == 4
    # 1 of 5 deliveries retrying in the window, and 5 is under min_deliveries: healthy, and so is the card
    assert model["endpoints"]["billing"]["state"] == "healthy"
    assert model["endpoints"]["billing"]["failing_since"] is None
    await redis.zadd(k.ep_state("billing", "retrying"), {f"x{i}": now - 1000 for i in range(6)})
    model = await dashboard.overview_model(redis, settings, now)  # 7 of 11 in the 4 h window (f is older)
    assert model["endpoints"]["billing"]["state"] == "failing"
    assert model["endpoints"]["billing"]["failing_since"] == now - 1000  # the oldest failure in the window
    assert dashboard.endpoint_state({"failing": False}) == "healthy"


async def test_hourly_chart_says_deliveries_not_attempts(client: TestClient, redis: Redis) -> None:
    """The bars count deliveries by their last change (one delivery tried five times is one): the chart
    must not call them attempts, and red is failing (retrying or given up), not only "failed"."""
    now = int(time.time() * 1000)
    await redis.zadd(k.ep_state("billing", "delivered"), {"a": now, "b": now})
    await redis.zadd(k.ep_state("billing", "retrying"), {"c": now})
    await login(client)
    page = await (await client.get("/dashboard/")).text()
    assert "billing, last 24 hours: 2 delivered and 1 failing deliveries" in page
    assert "deliveries per hour, last 24 h" in page
    assert "attempts per hour" not in page and "failed attempts" not in page


async def test_failing_endpoints_sort_first(make_settings: Callable[..., Settings], redis: Redis) -> None:
    settings = make_settings(endpoints=[endpoint(n, "http://127.0.0.1:9/hook") for n in ("alpha", "beta", "gamma")])
    now = int(time.time() * 1000)
    await redis.zadd(k.ep_state("gamma", "failed"), {f"x{i}": now for i in range(10)})
    model = await dashboard.overview_model(redis, settings, now)
    assert list(model["endpoints"]) == ["gamma", "alpha", "beta"]
    assert [p["endpoint"] for p in model["report"]["problems"] if p["kind"] == "endpoint_failing"] == ["gamma"]


# -- the browser -------------------------------------------------------------------------------------


@pytest.fixture
async def served(
    make_settings: Callable[..., Settings], redis: Redis, sink: Callable[..., Any], start_worker: Callable[..., Any]
) -> AsyncIterator[tuple[str, Sink, Settings]]:
    """The real app on a free port, a real failing endpoint, and a real worker."""
    billing: Sink = await sink([500])
    # one delivery is enough evidence here (the default min_deliveries is 10): a per-endpoint override
    settings = make_settings(
        # timeout 60: the resend step 4 holds in flight must not time out while the page loads
        endpoints=[endpoint("billing", billing.url, timeout=60, alert_min_deliveries=1)],
        env={"RELAY_ADMIN_TOKEN": TOKEN},
    )
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    start_worker(settings)
    yield f"http://127.0.0.1:{port}", billing, settings
    await runner.cleanup()


@pytest.mark.slow  # the browser: not in make check's fast tier
async def test_browser_sees_a_failure_and_a_resend_delivered(served: tuple[str, Sink, Settings], redis: Redis) -> None:
    from playwright.async_api import async_playwright, expect

    assert CHROMIUM.exists(), "install Debian's Chromium: apt-get install -y chromium"
    base, billing, _ = served
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        context = await browser.new_context(
            viewport={"width": 1280, "height": 900}, timezone_id="Europe/Paris", locale="en-GB"
        )
        page = await context.new_page()
        page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        try:
            # 1. log in
            await page.goto(f"{base}/dashboard")
            await expect(page).to_have_url(re.compile(r"/dashboard/login\?next="))
            await page.screenshot(path=str(ARTIFACTS / "dashboard-login.png"))
            await page.get_by_label("Admin token").fill(TOKEN)
            await page.get_by_role("button", name="Log in").click()
            await expect(page).to_have_url(f"{base}/dashboard/")
            card = page.locator('article.card[data-endpoint="billing"]')
            await expect(card).to_have_attribute("data-state", "healthy")
            await expect(page.get_by_text("No notifications yet.")).to_be_visible()
            await expect(page.locator("#tz")).to_have_text("Europe/Paris")

            # 2. a signed IPN arrives; its endpoint answers 500, and the card turns failing by itself
            await page.evaluate("window.__sameDocument = true")
            async with aiohttp.ClientSession() as http:
                body = signed_body(ipn_fields("230000001"))
                async with http.post(f"{base}/ipn", data=body, headers=FORM) as resp:
                    assert resp.status == 200
            nid = notification_id("default", "ipn", body)
            await expect(card).to_have_attribute("data-state", "failing", timeout=20_000)
            await expect(card.get_by_role("link", name="1 failed")).to_be_visible(timeout=20_000)
            await expect(card.locator(".since")).to_contain_text("Failing since")
            await expect(page.locator('[data-status="degraded"]')).to_be_visible()
            await expect(page.locator(".problems")).to_contain_text("endpoint_failing: endpoint billing")
            assert await page.evaluate("window.__sameDocument") is True
            await expect(card.locator("time").first).not_to_contain_text("UTC")  # the viewer's time zone
            await page.screenshot(path=str(ARTIFACTS / "dashboard-overview.png"), full_page=True)

            # 3. open the failed notification
            await card.get_by_role("link", name="1 failed").click()
            await expect(page).to_have_url(re.compile(r"endpoint=billing&state=failed"))
            await page.get_by_role("link", name="230000001").click()
            await expect(page).to_have_url(f"{base}/dashboard/notifications/{nid}")
            row = page.locator('table.deliveries tr[data-endpoint="billing"]')
            await expect(row).to_have_attribute("data-state", "failed")
            await expect(page.locator("ol.timeline li")).to_have_count(3)
            await expect(page.locator("ol.timeline").first).to_contain_text("HTTP 500")
            await page.screenshot(path=str(ARTIFACTS / "dashboard-detail-failed.png"), full_page=True)

            # 4. the endpoint is fixed, and holds the resend until the page has shown it undelivered (a
            # 2 s delay was not always long enough under load: the page came after the delivery)
            billing.script = [200]
            billing.gate = asyncio.Event()
            # the resend defaults to the endpoint where the delivery failed
            await expect(page.get_by_label("Send to")).to_have_value("billing")
            await page.get_by_role("button", name="Resend").click()
            await expect(page).to_have_url(re.compile(rf"/dashboard/notifications/{nid}\?resent="))
            await expect(page.get_by_role("status").filter(has_text="queued")).to_be_visible()

            # 5. the page refreshes itself until the resend is delivered
            await page.evaluate("window.__sameDocument = true")
            resend = page.locator(f'ul.resends li[data-id="{nid}~r1"]')
            await expect(resend).to_be_visible()
            await expect(resend).not_to_contain_text("delivered")
            billing.gate.set()
            await expect(resend).to_contain_text("billing: delivered", timeout=20_000)
            # the original's row names the delivered resend: "then resend r1 delivered", or, once a
            # health read or a listing has resolved the failure, "failed → resolved by resend …~r1"
            await expect(row.locator(".via")).to_contain_text(re.compile(rf"delivered|by resend {re.escape(nid)}~r1"))
            await expect(page.locator("#live")).to_contain_text("resend r1 to billing delivered")
            assert await page.evaluate("window.__sameDocument") is True
            await page.screenshot(path=str(ARTIFACTS / "dashboard-detail-resent.png"), full_page=True)
            [resent] = [r for r in billing.received if r.headers.get("Relay-Resend") == "true"]
            assert resent.headers["Relay-Resend-Of"] == nid and resent.body == body

            await page.goto(f"{base}/dashboard/notifications")
            await expect(page.locator("table.list tbody tr")).to_have_count(2)
            await page.screenshot(path=str(ARTIFACTS / "dashboard-list.png"), full_page=True)

            # the resend delivered it: the endpoint is healthy again and the failure is resolved
            await page.goto(f"{base}/dashboard/")
            await expect(card).to_have_attribute("data-state", "healthy")
            await expect(page.locator('[data-status="healthy"]')).to_be_visible()
            await page.goto(f"{base}/dashboard/notifications/{nid}")
            await expect(row).to_contain_text("failed → resolved")
            # so a listing of what failed is empty, and a bulk resend finds nothing to do
            await page.goto(f"{base}/dashboard/notifications?endpoint=billing&state=failed")
            await expect(page.get_by_text("No notification matches these filters.")).to_be_visible()
            await page.goto(f"{base}/dashboard/notifications?endpoint=billing&state=failed&include_resolved=true")
            await page.get_by_role("link", name="Resend all matching…").click()
            await expect(page.locator("#bulk-count")).to_contain_text("Nothing to resend")
            await expect(page.get_by_text("1 will be skipped")).to_be_visible()
            await page.screenshot(path=str(ARTIFACTS / "dashboard-bulk.png"), full_page=True)

            # the same pages on a phone
            await page.set_viewport_size({"width": 390, "height": 844})
            await page.goto(f"{base}/dashboard/")
            await page.screenshot(path=str(ARTIFACTS / "dashboard-overview-phone.png"), full_page=True)
            await page.goto(f"{base}/dashboard/notifications")
            await page.screenshot(path=str(ARTIFACTS / "dashboard-list-phone.png"), full_page=True)
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the list scrolls sideways on a phone ({width}px)"
        finally:
            await browser.close()
    assert problems == []  # no script error, no CSP violation


async def test_event_type_is_shown_and_filtered(client: TestClient, redis: Redis) -> None:
    await login(client)
    done = await ingest(client, ipn_fields("601"))  # MESSAGE_TYPE COMPLETE
    refund = await ingest(client, ipn_fields("602", status="REFUND"))
    page = await (await client.get("/dashboard/notifications")).text()
    assert '<code class="etype">order.refunded</code>' in page and '<code class="etype">order.completed</code>' in page
    assert '<option value="order.chargeback">' in page  # the type drop-down lists the vocabulary
    page = await (await client.get("/dashboard/notifications", params={"type": "order.refunded"})).text()
    assert refund in page and done not in page
    resp = await client.get("/dashboard/notifications", params={"type": "order.nothing"})
    assert resp.status == 400 and "invalid type=&#39;order.nothing&#39;" in await resp.text()
    page = await (await client.get(f"/dashboard/notifications/{refund}")).text()
    assert "<dt>Event type</dt><dd><code>order.refunded</code></dd>" in page


async def test_a_bulk_resend_lists_its_resends_at_once(client: TestClient, settings: Settings, redis: Redis) -> None:
    """After a bulk resend the list shows the new resends straight away, before a worker routes them
    (it showed none under an endpoint filter until the page was reloaded after the fan-out)."""
    csrf = await login(client)
    nids = [await ingest(client, ipn_fields(str(700 + i))) for i in range(2)]
    worker = create_worker(settings, handle_signals=False)
    task = asyncio.create_task(worker.async_run())
    try:

        async def failed() -> bool:
            return await redis.zcard(k.ep_state("billing", "failed")) == 2

        assert await wait_for(failed, 30)  # billing's port refuses: each runs out of tries
    finally:
        await close_worker(worker)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    form = {"csrf": csrf, "endpoint": "billing", "state": "failed", "period": "24h"}
    resp = await client.post("/dashboard/resend", data=form, allow_redirects=False)
    assert resp.status == 303 and "endpoint=billing" in resp.headers["Location"], await resp.text()
    assert [await redis.zcard(k.resends(n)) for n in nids] == [1, 1]
    listing = await (await client.get(resp.headers["Location"])).text()
    assert "2 resends queued" in listing
    assert listing.count('<span class="tag">resend</span>') == 2, listing

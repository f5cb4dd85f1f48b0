"""The admin API and its CLI mirror: auth, listing, filters, pagination, detail, errors."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from arq.worker import Worker
from redis.asyncio import Redis

from config.settings import Settings
from relay import constants as k
from relay.server import create_app
from relay.store import queries
from relay.store.ingest import notification_id
from relay.timefmt import iso_millis
from tests.cli import Done, run_cli
from tests.support import (
    SECRET_KEY,
    TEST_ENV,
    WHSEC,
    free_port,
    ins_body,
    ipn_fields,
    signed_body,
    wait_for,
)

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
SOURCES = [
    {
        "name": "default",
        "secret_key_env": "TCO_SECRET_KEY",
        "ins_secret_word_env": "TCO_INS_SECRET_WORD",
        "seller_id": "1817037",
    },
    {"name": "eu-shop", "secret_key_env": "TCO_SECRET_KEY"},
]


class RefSink:
    """A real endpoint that fails (400, not retried) for REFNOs in ``failing`` and echoes a header."""

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append((dict(request.headers), body))
        fields = dict(x.split("=", 1) for x in body.decode().split("&") if "=" in x)
        ref = fields.get("REFNO") or fields.get("sale_id") or ""
        # an endpoint that echoes what it got must not make the API show a configured secret
        echo = f"auth={request.headers.get('Authorization', '')}"
        return web.Response(status=400 if ref in self.failing else 200, text=echo)

    async def start(self) -> RefSink:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()


@pytest.fixture
async def sinks() -> AsyncIterator[tuple[RefSink, RefSink]]:
    billing, crm = await RefSink().start(), await RefSink().start()
    yield billing, crm
    await billing.stop()
    await crm.stop()


def endpoints(billing: RefSink, crm: RefSink) -> list[dict[str, Any]]:
    return [
        {
            "name": "billing",
            "url": billing.url,
            "order_statuses": ["COMPLETE"],
            "channels": ["ipn", "ins"],
            "headers": {"Authorization": "${SINK_TOKEN}"},
            "signing_secret_env": "SINK_SECRET",
            "timeout": 2,
        },
        {"name": "crm", "url": crm.url, "concurrent": True, "timeout": 2, "channels": ["ipn", "lcn", "ins"]},
    ]


@pytest.fixture
def api_settings(make_settings: Callable[..., Settings], sinks: tuple[RefSink, RefSink]) -> Settings:
    return make_settings(
        sources=SOURCES,
        endpoints=endpoints(*sinks),
        env={"RELAY_ADMIN_TOKEN": TOKEN, "SINK_TOKEN": "Bearer sink-secret-value-42"},
    )


@pytest.fixture
async def client(aiohttp_client: Any, api_settings: Settings, redis: Redis) -> TestClient:
    return await aiohttp_client(create_app(api_settings))  # type: ignore[no-any-return]


@pytest.fixture
async def worker(api_settings: Settings, start_worker: Callable[..., Worker]) -> Worker:
    """A real in-process ARQ worker with its delivery lanes (async: it starts on the test's loop)."""
    return start_worker(api_settings)


async def ingest(
    client: TestClient, refno: str, *, status: str = "COMPLETE", source: str = "default", channel: str = "ipn"
) -> str:
    """POST a signed notification through the real ingress; return its id."""
    body = signed_body(ipn_fields(refno, status=status)) if channel == "ipn" else ins_body(sale_id=refno)
    path = f"/{channel}" if source == "default" else f"/{channel}/{source}"
    resp = await client.post(path, data=body, headers=FORM)
    assert resp.status == 200, await resp.text()
    return notification_id(source, channel, body)


async def get(client: TestClient, path: str, **params: Any) -> tuple[int, Any]:
    resp = await client.get(path, params=params, headers=AUTH)
    assert resp.content_type == "application/json", await resp.text()
    return resp.status, await resp.json()


async def settled(redis: Redis, nid: str, eps: tuple[str, ...] = ("billing", "crm")) -> None:
    async def done() -> bool:
        states = [await redis.hget(k.delivery(nid, ep), "state") for ep in eps]
        return all(s in (b"delivered", b"failed", b"skipped") for s in states)

    await wait_for(done, 15)


# -- auth ----------------------------------------------------------------------------------------


async def test_api_is_off_without_a_configured_token(
    aiohttp_client: Any, make_settings: Callable[..., Settings], redis: Redis
) -> None:
    client = await aiohttp_client(create_app(make_settings(sources=SOURCES)))
    for method, path in [
        ("GET", "/api/notifications"),
        ("GET", "/api/openapi.json"),
        ("POST", "/api/resend"),
        ("GET", "/api/nowhere"),
        ("GET", "/api/health"),
    ]:
        resp = await client.request(method, path, headers=AUTH)
        assert resp.status == 404
        doc = await resp.json()
        assert "admin API is off" in doc["error"] and "RELAY_ADMIN_TOKEN" in doc["error"]
    assert (await client.get("/healthz")).status == 200  # the rest of the app is unaffected


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer", f"bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}"]
)
async def test_every_route_needs_the_token(client: TestClient, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    for method, path in [
        ("GET", "/api/notifications"),
        ("GET", "/api/notifications/ipn_0"),
        ("POST", "/api/resend"),
        ("POST", "/api/notifications/x/resend"),
        ("GET", "/api/openapi.json"),
        ("GET", "/api/health"),
        ("GET", "/api/unknown"),
    ]:
        resp = await client.request(method, path, headers=headers)
        assert resp.status == 401, (method, path)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert "error" in await resp.json()


async def test_the_right_token_any_case_of_scheme(client: TestClient) -> None:
    for scheme in ("Bearer", "bearer", "BEARER"):
        resp = await client.get("/api/notifications", headers={"Authorization": f"{scheme} {TOKEN}"})
        assert resp.status == 200


# -- listing -------------------------------------------------------------------------------------


async def test_list_newest_first_with_summaries(client: TestClient, redis: Redis) -> None:
    a = await ingest(client, "100", status="COMPLETE")
    b = await ingest(client, "200", status="PAYMENT_AUTHORIZED")
    c = await ingest(client, "300", channel="ins")
    status, doc = await get(client, "/api/notifications")
    assert status == 200
    assert [i["id"] for i in doc["items"]] == [c, b, a]
    assert doc["next_cursor"] is None
    item = doc["items"][1]
    assert item["channel"] == "ipn" and item["source"] == "default" and item["ref"] == "200"
    assert item["status"] == "PAYMENT_AUTHORIZED" and item["mtype"] == "PAYMENT_AUTHORIZED" and item["test"] is True
    assert item["resend_of"] is None and item["deliveries"] == {}  # not routed yet: no worker
    assert item["received_at"].endswith("Z")
    recv = int(await redis.hget(k.notification(b), "recv"))
    assert item["received_at"] == iso_millis(recv)


async def test_filters_channel_source_ref_and_time(client: TestClient, redis: Redis) -> None:
    a = await ingest(client, "100")
    b = await ingest(client, "200", source="eu-shop")
    c = await ingest(client, "300", channel="ins")
    d = await ingest(client, "100", status="REFUND")  # same REFNO, another notification
    ids = lambda doc: [i["id"] for i in doc["items"]]  # noqa: E731
    assert ids((await get(client, "/api/notifications", channel="ins"))[1]) == [c]
    assert ids((await get(client, "/api/notifications", source="eu-shop"))[1]) == [b]
    assert ids((await get(client, "/api/notifications", ref="100"))[1]) == [d, a]
    assert ids((await get(client, "/api/notifications", ref="100", channel="ipn", source="default"))[1]) == [d, a]
    assert ids((await get(client, "/api/notifications", ref="100", source="eu-shop"))[1]) == []
    recv = {n: int(await redis.hget(k.notification(n), "recv")) for n in (a, b, c, d)}
    # move the receipts apart so since/until have something to cut
    for i, n in enumerate((a, b, c, d)):
        recv[n] = 1_700_000_000_000 + i * 60_000
        await redis.hset(k.notification(n), "recv", recv[n])
        for key in (
            k.IDX_ALL,
            k.idx_channel("ipn" if n != c else "ins"),
            k.idx_source("eu-shop" if n == b else "default"),
        ):
            if await redis.zscore(key, n) is not None:
                await redis.zadd(key, {n: recv[n]})
        await redis.zadd(k.idx_ref({a: "100", b: "200", c: "300", d: "100"}[n]), {n: recv[n]})
    status, doc = await get(client, "/api/notifications", since=str(recv[b]), until=iso_millis(recv[c]))
    assert status == 200 and ids(doc) == [c, b]
    status, doc = await get(client, "/api/notifications", since="2023-11-14T22:14:00+00:00")
    assert ids(doc) == [d, c, b]  # a was received at 22:13:20
    status, doc = await get(client, "/api/notifications", until=str(recv[a]), channel="ipn")
    assert ids(doc) == [a]


async def test_pagination_walks_every_item_once_in_order(client: TestClient, redis: Redis) -> None:
    nids = [await ingest(client, str(1000 + i)) for i in range(7)]
    # equal scores: the cursor must still neither skip nor repeat ties
    for n in nids[2:5]:
        await redis.zadd(k.IDX_ALL, {n: 1_700_000_000_000})
    expected = [m.decode() for m, _ in await redis.zrevrange(k.IDX_ALL, 0, -1, withscores=True)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        status, doc = await get(client, "/api/notifications", **params)
        assert status == 200 and len(doc["items"]) <= 2
        seen += [i["id"] for i in doc["items"]]
        cursor = doc["next_cursor"]
        if cursor is None:
            break
    assert seen == expected and sorted(seen) == sorted(nids)
    # a cursor belongs to its filters
    _, first = await get(client, "/api/notifications", limit="2")
    status, doc = await get(client, "/api/notifications", limit="2", channel="ipn", cursor=first["next_cursor"])
    assert status == 400 and "cursor" in doc["error"]


async def test_most_selective_index_and_scan_budget(redis: Redis) -> None:
    for i in range(30):
        nid = f"ipn_{i:024x}"
        await redis.hset(
            k.notification(nid), mapping={"recv": 1000 + i, "channel": "ipn", "source": "default", "ref": str(i % 3)}
        )
        await redis.zadd(k.IDX_ALL, {nid: 1000 + i})
        await redis.zadd(k.idx_channel("ipn"), {nid: 1000 + i})
        await redis.zadd(k.idx_ref(str(i % 3)), {nid: 1000 + i})
    assert await queries.choose_index(redis, queries.Filters(ref="0", channel="ipn")) == "ref"
    # nothing matches: the page stops at the budget and hands back a cursor to go on from
    f = queries.Filters(channel="ipn", state="failed")
    page = await queries.scan(redis, f, limit=5, budget=10)
    assert page.items == [] and page.next_cursor is not None
    page = await queries.scan(redis, f, limit=5, budget=10, cursor=page.next_cursor)
    assert page.items == [] and page.next_cursor is None


async def test_state_and_endpoint_filters_use_real_deliveries(
    client: TestClient, redis: Redis, worker: Worker, sinks: tuple[RefSink, RefSink]
) -> None:
    billing, _ = sinks
    billing.failing = {"100", "300"}
    a = await ingest(client, "100")
    b = await ingest(client, "200")
    c = await ingest(client, "300")
    p = await ingest(client, "400", status="PENDING")  # billing filters it out: skipped
    for n in (a, b, c, p):
        await settled(redis, n)
    ids = lambda doc: [i["id"] for i in doc["items"]]  # noqa: E731
    _, doc = await get(client, "/api/notifications", endpoint="billing", state="failed")
    assert ids(doc) == [c, a] and doc["index"] == "state"
    _, doc = await get(client, "/api/notifications", endpoint="billing", state="delivered")
    assert ids(doc) == [b]
    _, doc = await get(client, "/api/notifications", endpoint="billing", state="skipped")
    assert ids(doc) == [p]
    _, doc = await get(client, "/api/notifications", state="failed")
    assert ids(doc) == [c, a]
    _, doc = await get(client, "/api/notifications", endpoint="crm")
    assert ids(doc) == [p, c, b, a]
    _, doc = await get(client, "/api/notifications", endpoint="billing", state="failed", ref="300")
    assert ids(doc) == [c] and doc["index"] in ("ref", "state")
    item = doc["items"][0]
    assert item["deliveries"]["billing"]["state"] == "failed" and item["deliveries"]["billing"]["attempts"] == 1
    assert item["deliveries"]["billing"]["last"] == "HTTP 400"
    assert item["deliveries"]["crm"]["state"] == "delivered"


# -- detail --------------------------------------------------------------------------------------


async def test_show_has_fields_body_deliveries_attempts_and_no_secret(
    client: TestClient, redis: Redis, worker: Worker, sinks: tuple[RefSink, RefSink]
) -> None:
    nid = await ingest(client, "230000001")
    await settled(redis, nid)
    resp = await client.get(f"/api/notifications/{nid}", headers=AUTH)
    text = await resp.text()
    assert resp.status == 200, text
    doc = json.loads(text)
    body = signed_body(ipn_fields("230000001"))
    assert doc["body"] == body.decode() and doc["content_type"] == "application/x-www-form-urlencoded"
    assert doc["fields"]["LASTNAME"] == ["Müller"] and doc["fields"]["IPN_PID[]"] == ["40898000", "40898001"]
    assert len(doc["fields"]["SIGNATURE_SHA3_256"][0]) == 64  # signatures are not secrets: kept
    assert doc["algo"] == "sha3-256" and doc["ref"] == "230000001" and isinstance(doc["seq"], int)
    assert set(doc["deliveries"]) == {"billing", "crm"}
    billing = doc["deliveries"]["billing"]
    assert billing["state"] == "delivered" and billing["attempts"] == 1
    # the routing-time mode (stale after a reload) and the bookkeeping fields are not part of the record
    assert not {"mode", "lease", "seq", "rec:1", "created", "updated"} & set(billing)
    assert billing["delivered_at"].endswith("Z")
    [attempt] = billing["attempt_log"]
    assert attempt["outcome"] == "delivered" and attempt["status"] == 200 and attempt["at"].endswith("Z")
    # the endpoint echoed its configured Authorization header; the API hides it
    assert attempt["response"] == "auth=**redacted**"
    for secret in (TOKEN, SECRET_KEY, WHSEC, "sink-secret-value-42", TEST_ENV["TCO_INS_SECRET_WORD"]):
        assert secret not in text
    assert doc["resends"] == [] and doc["resend_of"] is None and doc["routed"] is True


async def test_show_unknown_and_malformed_ids_are_404(client: TestClient) -> None:
    for nid in ("ipn_" + "0" * 24, "nope", "ipn_0~r1", "ins_" + "a" * 24 + "~r3"):
        status, doc = await get(client, f"/api/notifications/{nid}")
        assert status == 404 and nid in doc["error"]


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params,named",
    [
        ({"channel": "email"}, "channel='email'"),
        ({"state": "lost"}, "state='lost'"),
        ({"limit": "0"}, "limit='0'"),
        ({"limit": "501"}, "limit='501'"),
        ({"limit": "ten"}, "limit='ten'"),
        ({"since": "yesterday"}, "since='yesterday'"),
        ({"since": "2024-02-30"}, "since='2024-02-30'"),
        ({"since": "2024-05-02", "until": "2024-05-01"}, "until='2024-05-01'"),
        ({"endpoint": "Billing!"}, "endpoint='Billing!'"),
        ({"source": ""}, "source=''"),
        ({"cursor": "garbage"}, "cursor='garbage'"),
        ({"cursor": ""}, "cursor=''"),
        ({"status": "failed"}, "status='failed'"),
        ({"ref": "a\x01b"}, "ref="),
    ],
)
async def test_bad_query_parameters_are_400_naming_them(client: TestClient, params: dict[str, str], named: str) -> None:
    status, doc = await get(client, "/api/notifications", **params)
    assert status == 400 and named in doc["error"], doc


async def test_repeated_parameter_is_400(client: TestClient) -> None:
    resp = await client.get("/api/notifications?channel=ipn&channel=lcn", headers=AUTH)
    assert resp.status == 400 and "more than once" in (await resp.json())["error"]


async def test_unknown_route_and_method_are_json(client: TestClient) -> None:
    resp = await client.get("/api/nowhere", headers=AUTH)
    assert resp.status == 404 and "/api/nowhere" in (await resp.json())["error"]
    resp = await client.delete("/api/notifications", headers=AUTH)
    assert resp.status == 405 and "GET" in resp.headers["Allow"] and "DELETE" in (await resp.json())["error"]


async def test_redis_down_is_503_json(aiohttp_client: Any, tmp_path: Path, redis: Redis) -> None:
    from config.settings import load_settings
    from tests.support import write_config

    path = write_config(tmp_path / "relay.toml", sources=SOURCES)
    settings = load_settings(
        path, {**TEST_ENV, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "RELAY_ADMIN_TOKEN": TOKEN}
    )
    client = await aiohttp_client(create_app(settings))
    resp = await client.get("/api/notifications", headers=AUTH)
    assert resp.status == 503 and "Redis is unavailable" in (await resp.json())["error"]


# -- health and the OpenAPI document -------------------------------------------------------------


async def test_health_is_served_behind_the_token(client: TestClient) -> None:
    resp = await client.get("/api/health", headers=AUTH)
    assert resp.content_type == "application/json" and resp.status == 200
    assert (await resp.json())["status"] in ("healthy", "unhealthy")
    assert (await client.get("/api/health")).status == 401
    # the document promises what the route does: 200 whatever the verdict, no 501 (there is no build
    # without health), 400 only for a query parameter (it takes none), 503 only for Redis (COMMON)
    _, doc = await get(client, "/api/openapi.json")
    responses = doc["paths"]["/api/health"]["get"]["responses"]
    assert set(responses) == {"200", "400", "401", "404", "503"}
    assert responses["503"]["description"] == "Redis is unavailable"


async def test_openapi_document_describes_every_route(client: TestClient) -> None:
    status, doc = await get(client, "/api/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {
        "/api/notifications",
        "/api/notifications/{id}",
        "/api/notifications/{id}/resend",
        "/api/resend",
        "/api/health",
        "/api/openapi.json",
        "/api/schema/event.json",
        "/api/endpoints/{name}/pause",
        "/api/endpoints/{name}/resume",
        "/api/endpoints/{name}/retry",
        "/api/notifications/{id}/retry",
        "/api/notifications/{id}/cancel",
        "/api/reload",
        "/api/audit",
        "/api/reconcile",
    }
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert doc["security"] == [{"bearer": []}]
    names = {p["name"] for p in doc["paths"]["/api/notifications"]["get"]["parameters"]}
    assert names == {
        "channel",
        "source",
        "state",
        "endpoint",
        "since",
        "until",
        "ref",
        "type",
        "include_resolved",
        "limit",
        "cursor",
    }


# -- the CLI -------------------------------------------------------------------------------------


def relay_cli(settings: Settings, *args: str, redis_url: str | None = None, stdin: str | None = None) -> Done:
    """``relay`` run in the test process (tests/cli.py): what it prints and its exit code."""
    return run_cli(
        *("--config", str(settings.config_path), *args),
        redis_url=redis_url or settings.redis_url or "",
        env={"RELAY_ADMIN_TOKEN": TOKEN},
        stdin=stdin or "",
    )


async def test_cli_notifications_list_and_show(client: TestClient, api_settings: Settings, redis: Redis) -> None:
    a = await ingest(client, "100")
    b = await ingest(client, "200", channel="ins")
    out = await asyncio.to_thread(relay_cli, api_settings, "notifications", "list", "--json")
    assert out.returncode == 0, out.stderr
    assert [i["id"] for i in json.loads(out.stdout)["items"]] == [b, a]
    out = await asyncio.to_thread(relay_cli, api_settings, "notifications", "list", "--channel", "ipn")
    assert out.returncode == 0 and a in out.stdout and b not in out.stdout
    assert out.stdout.splitlines()[0].split() == [
        "ID",
        "RECEIVED",
        "CH",
        "SOURCE",
        "TYPE",
        "REF",
        "STATUS",
        "DELIVERIES",
    ]
    assert out.stdout.splitlines()[1].split()[4] == "order.completed"
    out = await asyncio.to_thread(relay_cli, api_settings, "notifications", "list", "--type", "order.created")
    assert out.returncode == 0 and b in out.stdout and a not in out.stdout
    out = await asyncio.to_thread(relay_cli, api_settings, "notifications", "list", "--limit", "1")
    assert "--cursor" in out.stdout
    out = await asyncio.to_thread(relay_cli, api_settings, "notifications", "show", a)
    assert out.returncode == 0 and "REFNO = 100" in out.stdout and "LASTNAME = Müller" in out.stdout
    out = await asyncio.to_thread(relay_cli, api_settings, "notifications", "show", a, "--json")
    assert json.loads(out.stdout)["id"] == a
    out = await asyncio.to_thread(relay_cli, api_settings, "notifications", "show", "ipn_" + "f" * 24)
    assert out.returncode == 1 and "no notification" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "args,named",
    [
        (["--since", "last week"], "--since 'last week'"),
        (["--limit", "9999"], "--limit '9999'"),
        (["--state", "lost"], "--state 'lost'"),
        (["--channel", "sms"], "--channel 'sms'"),
        (["--type", "order.refundd"], "--type 'order.refundd'"),
    ],
)
async def test_cli_bad_arguments_exit_2_naming_them(
    api_settings: Settings, redis: Redis, args: list[str], named: str
) -> None:
    out = await asyncio.to_thread(relay_cli, api_settings, "notifications", "list", *args)
    assert out.returncode == 2 and named in out.stderr and "Traceback" not in out.stderr, out.stderr


async def test_cli_redis_unreachable_is_one_line_exit_1(api_settings: Settings) -> None:
    url = f"redis://:hunter2secret@127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    out = await asyncio.to_thread(relay_cli, api_settings, "notifications", "list", redis_url=url)
    assert out.returncode == 1 and time.monotonic() - started < 30
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach Redis at redis://:***@127.0.0.1:" in lines[0]
    assert "hunter2secret" not in out.stderr


async def test_event_schema_is_served_with_the_same_auth(client: TestClient) -> None:
    from relay import events

    status, doc = await get(client, "/api/schema/event.json")
    assert status == 200 and doc == events.schema()
    assert doc["properties"]["type"]["enum"] == list(events.EVENT_TYPES)
    assert (await client.get("/api/schema/event.json")).status == 401


async def test_type_is_listed_and_filtered_on_its_index(client: TestClient, redis: Redis) -> None:
    a = await ingest(client, "100")  # MESSAGE_TYPE COMPLETE
    b = await ingest(client, "200", status="REFUND")
    c = await ingest(client, "300", channel="ins")  # ORDER_CREATED
    d = await ingest(client, "400", status="PAYMENT_AUTHORIZED")  # MESSAGE_TYPE unknown: ORDERSTATUS decides
    _, doc = await get(client, "/api/notifications")
    assert {i["id"]: i["type"] for i in doc["items"]} == {
        a: "order.completed",
        b: "order.refunded",
        c: "order.created",
        d: "order.authorized",
    }
    status, doc = await get(client, "/api/notifications", type="order.refunded")
    assert status == 200 and [i["id"] for i in doc["items"]] == [b] and doc["index"] == "type"
    _, doc = await get(client, "/api/notifications", type="order.completed", ref="100")
    assert [i["id"] for i in doc["items"]] == [a]
    _, doc = await get(client, "/api/notifications", type="order.completed", channel="ins")
    assert doc["items"] == []
    assert await redis.zscore(k.idx_type("order.created"), c) is not None
    status, doc = await get(client, "/api/notifications", type="order.refundd")
    assert status == 400 and "invalid type='order.refundd'" in doc["error"] and "order.chargeback" in doc["error"]
    status, doc = await get(client, f"/api/notifications/{b}")
    assert status == 200 and doc["type"] == "order.refunded"

"""One redaction on every surface: the API, the CLI and the dashboard hide the same things the same way.

A notification carries a configured secret (the source's secret key, an endpoint's signing secret)
and fields named like credentials (``CUSTOMER_PASSWORD``, ``API_TOKEN``, ``client_secret``). Each
surface is read for real: the API and the dashboard over HTTP from the relay's app, the CLI as a
``relay`` process, all against the same real Redis.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, quote_plus

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from config.settings import Settings
from relay.server import create_app
from relay.store.ingest import notification_id
from tests.cli import run_cli
from tests.support import SECRET_KEY, WHSEC, ipn_fields, signed_body

TOKEN = "redaction-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REDACTED = "**redacted**"
CREDENTIALS = {"CUSTOMER_PASSWORD": "hunter2-pass", "API_TOKEN": "tok-0123456", "client_secret": "cs-abcdef12"}
# every shape the configured secrets and the credential values can take on a page or in JSON
HIDDEN = [
    SECRET_KEY,
    quote_plus(SECRET_KEY),
    quote(SECRET_KEY, safe=""),
    json.dumps(SECRET_KEY)[1:-1],
    WHSEC,
    TOKEN,
    *CREDENTIALS.values(),
]


def relay_cli(settings: Settings, redis_url: str, *args: str) -> str:
    out = run_cli("--config", str(settings.config_path), *args, redis_url=redis_url, env={"RELAY_ADMIN_TOKEN": TOKEN})
    assert out.returncode == 0, out.stderr
    return out.stdout


def assert_hidden(surface: str, text: str) -> None:
    for value in HIDDEN:
        assert value not in text, (surface, value)


async def test_api_cli_and_dashboard_redact_alike(
    aiohttp_client: Any, make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings(
        endpoints=[
            {
                "name": "billing",
                "url": "http://127.0.0.1:9/hook",
                "channels": ["ipn"],
                "signing_secret_env": "SINK_SECRET",
            }
        ],
        env={"RELAY_ADMIN_TOKEN": TOKEN},
    )
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    fields = [*ipn_fields("4242"), ("NOTE", f"key={SECRET_KEY} whsec={WHSEC}"), *CREDENTIALS.items()]
    body = signed_body(fields)
    assert (
        await client.post("/ipn", data=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    ).status == 200
    nid = notification_id("default", "ipn", body)
    redis_url = settings.redis_url or ""

    # one notification in full
    api = await (await client.get(f"/api/notifications/{nid}", headers=AUTH)).json()
    cli_json = json.loads(
        await asyncio.to_thread(relay_cli, settings, redis_url, "notifications", "show", nid, "--json")
    )
    cli_text = await asyncio.to_thread(relay_cli, settings, redis_url, "notifications", "show", nid)
    login = await client.post("/dashboard/login", data={"token": TOKEN}, allow_redirects=False)
    assert login.status == 303
    dash = (await (await client.get(f"/dashboard/data/notifications/{nid}")).json())["notification"]
    page = await (await client.get(f"/dashboard/notifications/{nid}")).text()

    assert api == cli_json == dash  # the same document, hidden the same way
    for name in CREDENTIALS:
        assert api["fields"][name] == [REDACTED], name
        assert f"{name}={REDACTED}" in api["body"], name
        assert f"{name} = {REDACTED}" in cli_text, name
        assert f"{name}={REDACTED}" in page, name
    assert api["fields"]["NOTE"] == [f"key={REDACTED} whsec={REDACTED}"]
    assert api["fields"]["REFNO"] == ["4242"] and api["fields"]["HASH"]  # ordinary fields and signatures stay
    for surface, text in {
        "api": json.dumps(api),
        "cli --json": json.dumps(cli_json),
        "cli": cli_text,
        "dashboard data": json.dumps(dash),
        "dashboard page": page,
    }.items():
        assert_hidden(surface, text)

    # the listings: the same rows on all three
    api_items = (await (await client.get("/api/notifications", headers=AUTH)).json())["items"]
    cli_items = json.loads(await asyncio.to_thread(relay_cli, settings, redis_url, "notifications", "list", "--json"))[
        "items"
    ]
    dash_items = (await (await client.get("/dashboard/data/notifications")).json())["items"]
    assert [i["id"] for i in api_items] == [nid]
    assert api_items == cli_items == dash_items
    listing = await (await client.get("/dashboard/notifications")).text()
    assert nid in listing
    for surface, text in {"api list": json.dumps(api_items), "dashboard list": listing}.items():
        assert_hidden(surface, text)

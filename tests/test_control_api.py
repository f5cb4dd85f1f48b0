"""The admin API's operator-control routes: pause, resume, retry, cancel, reload and the audit log."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from relay import constants as k
from tests.test_api import (  # noqa: F401  (fixtures used by name)
    AUTH,
    api_settings,
    client,
    ingest,
    sinks,
)


async def test_api_routes_pause_cancel_retry_reload_and_audit(client: TestClient, redis: Redis) -> None:
    """The admin API's control routes, without a worker: what they change is in Redis, and audited."""
    nid = await ingest(client, "100")
    assert not await redis.exists(k.delivery(nid, "billing"))  # no worker: not routed yet

    async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        resp = await client.request(method, path, json=body, headers=AUTH)
        return resp.status, await resp.json()

    status, doc = await call("POST", "/api/endpoints/billing/pause")
    assert status == 200 and doc["paused"] and doc["paused_by"].startswith("api (127.0.0.1")
    status, doc = await call("POST", "/api/endpoints/billing/retry")
    assert status == 409 and "is paused" in doc["error"]
    status, doc = await call("POST", "/api/endpoints/nope/pause")
    assert status == 404 and "no endpoint 'nope'" in doc["error"]
    status, doc = await call("POST", f"/api/notifications/{nid}/cancel", {"endpoint": "billing", "x": 1})
    assert status == 400 and "x" in doc["error"]
    status, doc = await call("POST", f"/api/notifications/{nid}/cancel")
    assert status == 409 and "not routed yet" in doc["error"]
    status, doc = await call("POST", "/api/endpoints/billing/resume")
    assert status == 200 and doc["count"] == 0
    status, doc = await call("POST", "/api/endpoints/billing/resume")
    assert status == 409 and "not paused" in doc["error"]
    status, doc = await call("POST", "/api/reload")
    assert status == 200 and doc["asked"] == 0 and doc["ok"]
    status, doc = await call("GET", "/api/audit?limit=0")
    assert status == 400 and "limit" in doc["error"]
    status, doc = await call("GET", "/api/audit?action=pause")
    assert status == 200 and [e["action"] for e in doc["items"]] == ["pause"]
    status, doc = await call("GET", "/api/audit")
    assert [e["action"] for e in doc["items"]] == ["reload", "resume", "pause"]
    assert all(e["via"] == "api" and e["address"] == "127.0.0.1" for e in doc["items"])
    spec = (await (await client.get("/api/openapi.json", headers=AUTH)).json())["paths"]
    for path in (
        "/api/endpoints/{name}/pause",
        "/api/endpoints/{name}/resume",
        "/api/endpoints/{name}/retry",
        "/api/notifications/{id}/retry",
        "/api/notifications/{id}/cancel",
        "/api/reload",
        "/api/audit",
    ):
        assert path in spec


async def test_a_parameter_or_body_a_route_does_not_take_is_400_naming_it(client: TestClient, redis: Redis) -> None:
    """``GET /api/reconcile?source=eu`` (as ``relay reconcile --source``) or ``POST /api/reload`` with
    ``{"wait": 30}`` (as ``relay reload --wait``) answered 200 as if asked for nothing else, while the
    list and the audit log refuse a parameter they do not know: a filter silently not applied."""
    nid = await ingest(client, "101")
    for method, path, body, named in (
        ("GET", "/api/reconcile?source=eu", None, "source"),
        ("GET", "/api/health?verbose=1", None, "verbose"),
        ("GET", f"/api/notifications/{nid}?fields=body", None, "fields"),
        ("GET", "/api/openapi.json?v=2", None, "v"),
        ("GET", "/api/schema/event.json?v=2", None, "v"),
        ("POST", "/api/reload?wait=30", None, "wait"),
        ("POST", "/api/reload", {"wait": 30}, "wait"),
        ("POST", "/api/endpoints/billing/pause?until=tomorrow", None, "until"),
        ("POST", "/api/endpoints/billing/pause", {"reason": "maintenance"}, "reason"),
        ("POST", "/api/endpoints/billing/retry", {"nid": nid}, "nid"),
        ("POST", f"/api/notifications/{nid}/cancel?endpoint=billing", {}, "endpoint"),
    ):
        resp = await client.request(method, path, json=body, headers=AUTH)
        doc = await resp.json()
        assert resp.status == 400 and f"invalid {named}=" in doc["error"], (path, body, resp.status, doc)
    assert not await redis.hexists(k.PAUSED, "billing")  # the refused pause did nothing
    assert not await redis.exists(k.AUDIT)  # nor did the refused reload
    for path in ("/api/endpoints/billing/pause", "/api/endpoints/billing/resume", "/api/reload"):
        resp = await client.post(path, json={}, headers=AUTH)  # an empty object is no body
        assert resp.status == 200, (path, await resp.text())
    spec = (await (await client.get("/api/openapi.json", headers=AUTH)).json())["paths"]
    for path, ops in spec.items():
        for method, op in ops.items():
            assert "400" in op["responses"], (method, path)

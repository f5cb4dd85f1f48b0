"""The dashboard's control actions: a confirmation page with the count, then a CSRF-checked POST."""

from __future__ import annotations

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from relay import constants as k
from relay.store import audit
from relay.web import appkeys
from tests.test_dashboard import client, login, settings  # noqa: F401 (fixtures)


async def test_pause_resume_and_retry_from_the_dashboard(client: TestClient, redis: Redis) -> None:
    csrf = await login(client)
    page = await client.get("/dashboard/")
    assert 'href="/dashboard/endpoints/billing/pause"' in await page.text()
    confirm = await client.get("/dashboard/endpoints/billing/pause")
    text = await confirm.text()
    assert confirm.status == 200 and "Pause endpoint billing" in text and "<strong>0</strong>" in text
    # no CSRF token: refused, nothing paused
    resp = await client.post("/dashboard/endpoints/billing/pause", data={}, allow_redirects=False)
    assert resp.status == 403 and not await redis.hexists(k.PAUSED, "billing")
    resp = await client.post("/dashboard/endpoints/billing/pause", data={"csrf": csrf}, allow_redirects=False)
    assert resp.status == 303 and await redis.hexists(k.PAUSED, "billing")
    page = await client.get("/dashboard/")
    assert 'href="/dashboard/endpoints/billing/resume"' in await page.text()
    resp = await client.post("/dashboard/endpoints/billing/retry", data={"csrf": csrf}, allow_redirects=False)
    assert resp.status == 409 and "is paused" in await resp.text()
    resp = await client.post("/dashboard/endpoints/billing/resume", data={"csrf": csrf}, allow_redirects=False)
    assert resp.status == 303 and not await redis.hexists(k.PAUSED, "billing")
    entries = await audit.read(redis)
    assert [(e["action"], e["via"]) for e in entries] == [("resume", "dashboard"), ("pause", "dashboard")]
    assert entries[0]["address"] == "127.0.0.1"


async def test_cancel_from_the_detail_page(client: TestClient, redis: Redis) -> None:
    from tests.support import ipn_fields
    from tests.test_dashboard import ingest
    from workers.engine import Engine

    csrf = await login(client)
    nid = await ingest(client, ipn_fields("77"))
    live = client.app[appkeys.LIVE].settings
    await Engine(redis, live, None).fanout(nid)  # type: ignore[arg-type]  # routed; no worker sends it
    page = await (await client.get(f"/dashboard/notifications/{nid}")).text()
    assert f"/dashboard/notifications/{nid}/cancel?endpoint=billing" in page
    confirm = await (await client.get(f"/dashboard/notifications/{nid}/cancel?endpoint=billing")).text()
    assert "<strong>1</strong> delivery" in confirm
    resp = await client.post(
        f"/dashboard/notifications/{nid}/cancel", data={"csrf": csrf, "endpoint": "billing"}, allow_redirects=False
    )
    assert resp.status == 303
    d = await redis.hgetall(k.delivery(nid, "billing"))
    assert d[b"state"] == b"cancelled" and d[b"cancelled_by"] == b"dashboard (127.0.0.1)"


async def test_a_paused_endpoint_is_not_offered_retry_now_and_counts_say_deliveries(
    client: TestClient,
    redis: Redis,
) -> None:
    from tests.support import ipn_fields
    from tests.test_dashboard import ingest

    csrf = await login(client)
    # two notifications waiting for billing (no worker runs: they are queued as pending at pause time)
    for i in range(2):
        await ingest(client, ipn_fields(str(900 + i)))
    await redis.zadd(k.ep_state("billing", "pending"), {"a": 1, "b": 2})
    confirm = await (await client.get("/dashboard/endpoints/billing/pause")).text()
    assert "<strong>2</strong> deliveries" in confirm and "deliverys" not in confirm
    assert (
        await client.post("/dashboard/endpoints/billing/pause", data={"csrf": csrf}, allow_redirects=False)
    ).status == 303
    card = await (await client.get("/dashboard/")).text()
    # retry-now would be refused on a paused endpoint ("Conflict"): it is not offered
    assert 'href="/dashboard/endpoints/billing/resume"' in card
    assert 'href="/dashboard/endpoints/billing/retry"' not in card

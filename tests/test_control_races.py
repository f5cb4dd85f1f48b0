"""Operator actions while work flows (issue 21): each decides from Redis, never writes a delivery that
retention expired, and a bulk action says exactly what it did."""

# the fixtures are imported from test_api, so test arguments "redefine" them by design
# ruff: noqa: F811

from __future__ import annotations

from aiohttp.test_utils import TestClient
from arq.worker import Worker
from redis.asyncio import Redis

from relay import constants as k
from tests.support import wait_for
from tests.test_api import (  # noqa: F401  (fixtures used by name)
    RefSink,
    api_settings,
    client,
    ingest,
    settled,
    sinks,
    worker,
)
from tests.test_resend import post


async def test_bulk_resend_by_filter_twice_while_the_endpoint_is_paused_queues_one_resend(
        client: TestClient, redis: Redis, worker: Worker, sinks: tuple[RefSink, RefSink]) -> None:
    billing, _ = sinks
    billing.failing = {"100"}
    nid = await ingest(client, "100")
    await settled(redis, nid)
    billing.failing = set()
    status, _ = await post(client, "/api/endpoints/billing/pause")
    assert status == 200
    request = {"filter": {"endpoint": "billing", "state": "failed"}}
    status, doc = await post(client, "/api/resend", request)
    assert status == 202 and doc["count"] == 1, doc
    first = doc["ids"][0]
    await wait_for(lambda: _state(redis, first, "billing", b"paused"), 10)
    # the resend waits, paused: it already carries the notification to billing
    status, doc = await post(client, "/api/resend", request)
    assert status == 202 and doc["count"] == 0 and doc["skipped_count"] == 1, doc
    assert "already resent" in doc["skipped"][0]["reason"]
    status, _ = await post(client, "/api/endpoints/billing/resume")
    assert status == 200
    await wait_for(lambda: _state(redis, first, "billing", b"delivered"), 10)
    assert len([h for h, _ in billing.received if h.get("Relay-Resend") == "true"]) == 1
    assert await redis.zcard(k.resends(nid)) == 1


async def _state(redis: Redis, nid: str, ep: str, state: bytes) -> bool:
    return await redis.hget(k.delivery(nid, ep), "state") == state

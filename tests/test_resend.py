"""Resends through the admin API and the CLI: new records, fan-out, delivery, bulk, idempotency."""

# the fixtures are imported from test_api, so test arguments "redefine" them by design

from __future__ import annotations

import asyncio
import json
import os
import pty
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from arq.worker import Worker
from redis.asyncio import Redis

from config.settings import Settings
from relay import constants as k
from relay.store import body as stored_body
from relay.store import resend as resend_module
from tests.cli import Done, run_cli
from tests.support import ipn_fields, signed_body, wait_for
from tests.test_api import (  # noqa: F401  (fixtures used by name)
    AUTH,
    RefSink,
    api_settings,
    client,
    ingest,
    relay_cli,
    settled,
    sinks,
    worker,
)
from tests.test_delivery import assert_standard_webhooks_signature


async def post(
    client: TestClient, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    data = body if isinstance(body, (str, bytes)) else (json.dumps(body) if body is not None else None)
    resp = await client.post(path, data=data, headers={**AUTH, "Content-Type": "application/json", **(headers or {})})
    assert resp.content_type == "application/json", await resp.text()
    return resp.status, await resp.json()


async def fields(redis: Redis, nid: str) -> dict[str, bytes]:
    return {a.decode(): b for a, b in (await redis.hgetall(k.notification(nid))).items()}


async def test_resend_is_a_new_notification_queued_for_its_fanout(client: TestClient, redis: Redis) -> None:
    a = await ingest(client, "100")
    status, doc = await post(client, f"/api/notifications/{a}/resend")
    assert status == 202, doc
    new = f"{a}~r1"
    assert doc == {"id": new, "resend_of": a, "targets": ["billing", "crm"]}
    orig, copy = await fields(redis, a), await fields(redis, new)
    assert "body" not in copy and "bodyz" not in copy  # compressed, in a key of its own (relay/store/body.py)
    assert await stored_body.read(redis, new) == await stored_body.read(redis, a) == signed_body(ipn_fields("100"))
    assert copy["resend_of"] == a.encode() and copy["targets"] == b"billing,crm"
    assert int(copy["seq"]) > int(orig["seq"]) and int(copy["recv"]) >= int(orig["recv"])
    for name in ("ct", "source", "channel", "ref", "status", "mtype", "test", "algo", "email"):
        assert copy[name] == orig[name], name
    assert "eps" not in copy
    # queued exactly as the ingress queues a received notification
    assert await redis.zscore(k.FANOUT, new) == int(copy["seq"])
    for index in (k.IDX_ALL, k.idx_channel("ipn"), k.idx_source("default"), k.idx_ref("100"), k.resends(a)):
        assert await redis.zscore(index, new) is not None, index
    status, shown = await post_get(client, f"/api/notifications/{a}")
    assert [r["id"] for r in shown["resends"]] == [new] and shown["resends"][0]["resend_of"] == a
    status, listed = await post_get(client, "/api/notifications", ref="100")
    assert [(i["id"], i["resend_of"], i["targets"]) for i in listed["items"]] == [
        (new, a, ["billing", "crm"]),
        (a, None, None),
    ]


async def post_get(client: TestClient, path: str, **params: str) -> tuple[int, Any]:
    resp = await client.get(path, params=params, headers=AUTH)
    return resp.status, await resp.json()


async def test_resend_is_delivered_with_resend_headers_and_a_webhook_id_of_its_own(
    client: TestClient, redis: Redis, worker: Worker, sinks: tuple[RefSink, RefSink]
) -> None:
    billing, crm = sinks
    a = await ingest(client, "100")
    await settled(redis, a)
    status, doc = await post(client, f"/api/notifications/{a}/resend", {"endpoint": "billing"})
    assert status == 202 and doc["targets"] == ["billing"]
    await settled(redis, doc["id"], ("billing",))
    assert (await redis.hget(k.delivery(doc["id"], "billing"), "state")) == b"delivered"
    first, again = billing.received
    assert again[1] == first[1] == signed_body(ipn_fields("100"))
    assert first[0]["Relay-Resend"] == "false" and again[0]["Relay-Resend"] == "true"
    assert again[0]["Relay-Resend-Of"] == a and again[0]["Relay-Notification-Id"] == doc["id"]
    # issue 21, finding 12: the original's webhook-id made a receiver that drops duplicates by it, as
    # Standard Webhooks advises, drop every resend, the one meant to recover a lost delivery included
    assert first[0]["webhook-id"] == k.webhook_id(a, "billing")
    assert again[0]["webhook-id"] == k.webhook_id(doc["id"], "billing") != first[0]["webhook-id"]
    processed = {h["webhook-id"]: body for h, body in billing.received}  # such a receiver's record
    assert len(processed) == 2
    assert_standard_webhooks_signature(again[0], again[1])  # signed over the resend's own id
    assert len(crm.received) == 1  # only the named endpoint
    assert not await redis.exists(k.delivery(doc["id"], "crm"))


async def test_resend_targets_and_refusals(client: TestClient, redis: Redis) -> None:
    a = await ingest(client, "100")
    pending = await ingest(client, "200", status="PENDING")  # billing's order_statuses filter it out
    eu = await ingest(client, "300", source="eu-shop")  # no endpoint takes source eu-shop
    status, doc = await post(client, f"/api/notifications/{pending}/resend", {})
    assert status == 202 and doc["targets"] == ["crm"]
    status, doc = await post(client, f"/api/notifications/{pending}/resend", {"endpoint": "billing"})
    assert status == 202 and doc["targets"] == ["billing"]  # named explicitly: not filtered out here
    status, doc = await post(client, f"/api/notifications/{a}/resend", {"endpoint": "crm"})
    assert status == 202 and doc["id"] == f"{a}~r1"
    # a resend of a resend resends the original
    status, doc = await post(client, f"/api/notifications/{a}~r1/resend")
    assert status == 202 and doc["id"] == f"{a}~r2" and doc["resend_of"] == a
    status, doc = await post(client, f"/api/notifications/{eu}/resend")
    assert status == 409 and "no configured endpoint receives it" in doc["error"]
    status, doc = await post(client, f"/api/notifications/{eu}/resend", {"endpoint": "crm"})
    assert status == 409 and "does not receive source 'eu-shop'" in doc["error"]
    status, doc = await post(client, f"/api/notifications/{a}/resend", {"endpoint": "ledger"})
    assert status == 400 and "endpoint='ledger'" in doc["error"] and "billing, crm" in doc["error"]
    status, doc = await post(client, "/api/notifications/ipn_" + "0" * 24 + "/resend")
    assert status == 404 and "no notification" in doc["error"]
    status, doc = await post(client, f"/api/notifications/{a}/resend", {"endpoints": "crm"})
    assert status == 400 and "endpoints=" in doc["error"]
    status, doc = await post(client, f"/api/notifications/{a}/resend", "{not json")
    assert status == 400 and "not valid JSON" in doc["error"]


async def test_bulk_by_filter_requeues_exactly_the_failed_ones_once(
    client: TestClient, redis: Redis, worker: Worker, sinks: tuple[RefSink, RefSink]
) -> None:
    billing, crm = sinks
    billing.failing = {"100", "300"}
    a, b, c = [await ingest(client, ref) for ref in ("100", "200", "300")]
    p = await ingest(client, "400", status="PENDING")
    for n in (a, b, c, p):
        await settled(redis, n)
    request = {"filter": {"endpoint": "billing", "state": "failed"}}
    status, doc = await post(client, "/api/resend", {**request, "dry_run": True})
    assert status == 200 and doc["dry_run"] is True and doc["count"] == 2 and doc["ids"] == []
    assert not await redis.exists(k.resends(a)) and not await redis.exists(k.resends(c))
    billing.failing = set()  # the endpoint is fixed
    status, doc = await post(client, "/api/resend", request)
    assert status == 202 and doc["count"] == 2 and doc["dry_run"] is False
    assert sorted((r["resend_of"], tuple(r["targets"])) for r in doc["resends"]) == sorted(
        [(a, ("billing",)), (c, ("billing",))]
    )
    for r in doc["resends"]:
        await settled(redis, r["id"], ("billing",))
        assert await redis.hget(k.delivery(r["id"], "billing"), "state") == b"delivered"
    resent = [h for h, _ in billing.received if h["Relay-Resend"] == "true"]
    assert sorted(h["Relay-Resend-Of"] for h in resent) == sorted([a, c])
    assert len(crm.received) == 4  # nothing went to crm again
    # the originals are resolved by their delivered resends: no longer "failed", nothing selected
    status, doc = await post(client, "/api/resend", request)
    assert status == 202 and doc["count"] == 0 and doc["skipped_count"] == 0
    # asked for explicitly, they are still carried by a delivered resend: nothing to do
    resolved_too = {"filter": {**request["filter"], "include_resolved": True}}
    status, doc = await post(client, "/api/resend", resolved_too)
    assert status == 202 and doc["count"] == 0 and doc["skipped_count"] == 2
    assert all("already resent" in s["reason"] for s in doc["skipped"])


async def test_bulk_over_originals_and_resends_sends_each_original_once(client: TestClient, redis: Redis) -> None:
    a, b = await ingest(client, "100"), await ingest(client, "200")
    await post(client, f"/api/notifications/{a}/resend")
    gone = "ipn_" + "0" * 24
    status, doc = await post(client, "/api/resend", {"ids": [a, f"{a}~r1", b, b, gone]})
    assert status == 202 and doc["count"] == 2
    assert sorted(r["resend_of"] for r in doc["resends"]) == sorted([a, b])
    assert doc["skipped"] == [{"id": gone, "reason": f"no notification {gone!r} (never received, or past retention)"}]
    assert await redis.zcard(k.resends(a)) == 2 and await redis.zcard(k.resends(b)) == 1
    status, doc = await post(client, "/api/resend", {"ids": [a], "endpoint": "crm"})
    assert status == 202 and doc["resends"][0]["targets"] == ["crm"]


async def test_idempotency_key_makes_a_retry_safe(client: TestClient, redis: Redis) -> None:
    a, b = await ingest(client, "100"), await ingest(client, "200")
    request = {"ids": [a, b], "idempotency_key": "batch-2024-05-01"}
    status, first = await post(client, "/api/resend", request)
    assert status == 202 and first["count"] == 2
    status, again = await post(client, "/api/resend", request)
    assert status == 202 and again == {**first, "replayed": True}
    assert await redis.zcard(k.resends(a)) == 1 and await redis.zcard(k.resends(b)) == 1
    assert 0 < await redis.pttl("relay:idem:batch-2024-05-01") <= 86_400_000
    status, doc = await post(client, "/api/resend", {"ids": [a], "idempotency_key": "batch-2024-05-01"})
    assert status == 409 and "different request" in doc["error"]
    # a first try cut off before it answered: the retry reuses what it had already queued
    await redis.delete("relay:idem:batch-2024-05-01:result")
    status, retry = await post(client, "/api/resend", request)
    assert status == 202 and retry["ids"] == first["ids"]
    assert await redis.zcard(k.resends(a)) == 1
    # the header form, on the single route
    for _ in range(2):
        status, doc = await post(client, f"/api/notifications/{a}/resend", {}, {"Idempotency-Key": "one-a"})
        assert status == 202 and doc["id"] == f"{a}~r2"
    assert await redis.zcard(k.resends(a)) == 2


@pytest.mark.parametrize(
    "body,named",
    [
        ([], "must be a JSON object"),
        ({}, "either ids or filter"),
        ({"ids": ["x"], "filter": {"state": "failed"}}, "either ids or filter"),
        ({"ids": []}, "ids=[]"),
        ({"ids": "ipn_1"}, "ids='ipn_1'"),
        ({"ids": [1, 2]}, "ids=[1, 2]"),
        ({"ids": ["x"] * 1001}, "at most 1000"),
        ({"filter": {}}, "filter={}"),
        ({"filter": []}, "filter=[]"),
        ({"filter": {"status": "failed"}}, "filter.status='failed'"),
        ({"filter": {"since": "soon"}}, "filter.since='soon'"),
        ({"filter": {"state": "failed"}, "endpoint": "nope"}, "endpoint='nope'"),
        ({"filter": {"endpoint": "nope"}}, "filter.endpoint='nope'"),
        ({"filter": {"state": "failed"}, "dry_run": "yes"}, "dry_run='yes'"),
        ({"ids": ["x"], "idempotency_key": "has space"}, "idempotency_key='has space'"),
        ({"ids": ["x"], "force": True}, "force=True"),
    ],
)
async def test_bulk_bad_bodies_are_400_naming_the_field(client: TestClient, body: Any, named: str) -> None:
    status, doc = await post(client, "/api/resend", body)
    assert status == 400 and named in doc["error"], doc


async def test_bulk_filter_too_broad_is_422(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    for ref in ("1", "2", "3"):
        await ingest(client, ref)
    monkeypatch.setattr(resend_module, "BULK_MAX", 2)
    status, doc = await post(client, "/api/resend", {"filter": {"channel": "ipn"}})
    assert status == 422 and "narrow it" in doc["error"]


async def test_cli_resend_one_ids_and_by_filter(
    client: TestClient, api_settings: Settings, redis: Redis, worker: Worker, sinks: tuple[RefSink, RefSink]
) -> None:
    billing, _ = sinks
    billing.failing = {"100"}
    a, b = await ingest(client, "100"), await ingest(client, "200")
    for n in (a, b):
        await settled(redis, n)

    async def cli(*args: str) -> Any:
        return await asyncio.to_thread(relay_cli, api_settings, *args)

    out = await cli("resend", b)
    assert out.returncode == 0 and f"queued {b}~r1 (resend of {b}) to billing, crm" in out.stdout, out.stderr
    out = await cli("resend", "--ids", f"{a},{b}~r1", "--endpoint", "crm", "--json")
    assert out.returncode == 0, out.stderr
    assert sorted(r["resend_of"] for r in json.loads(out.stdout)["resends"]) == sorted([a, b])
    out = await cli("resend", "--endpoint", "billing", "--state", "failed", "--dry-run")
    assert out.returncode == 0 and "1 notification(s) would be resent to billing" in out.stdout
    out = await cli("resend", "--endpoint", "billing", "--state", "failed")
    assert out.returncode == 2 and "--yes" in out.stderr and "Traceback" not in out.stderr
    assert await redis.zcard(k.resends(a)) == 1  # only the --ids resend so far
    out = await cli("resend", "--endpoint", "billing", "--state", "failed", "--yes")
    assert out.returncode == 0 and "queued 1 resend(s)" in out.stdout and f"(resend of {a}) to billing" in out.stdout
    await wait_for(lambda: any(h.get("Relay-Resend-Of") == a for h, _ in billing.received), 15)
    # crm failed none: nothing is resent (exit 1, as for --ids), where it said "0 notification(s) would
    # be resent" and exited 0 as a dry run does; a dry run still counts 0 and exits 0
    resends = await redis.zcard(k.resends(a)) + await redis.zcard(k.resends(b))
    out = await cli("resend", "--endpoint", "crm", "--state", "failed", "--yes")
    assert out.returncode == 1 and "relay: nothing to resend to crm: no notification matches" in out.stderr, out
    assert "would be resent" not in out.stdout
    out = await cli("resend", "--endpoint", "crm", "--state", "failed", "--dry-run")
    assert out.returncode == 0 and "0 notification(s) would be resent to crm" in out.stdout, out.stdout
    assert await redis.zcard(k.resends(a)) + await redis.zcard(k.resends(b)) == resends


async def test_cli_bulk_resend_whose_every_match_is_skipped_says_so(
    client: TestClient, api_settings: Settings, redis: Redis, worker: Worker, sinks: tuple[RefSink, RefSink]
) -> None:
    """A filter that selects only originals already resent (paused at billing) resends nothing: exit 1
    with the skipped ones and why, not "0 notification(s) would be resent", exit 0."""
    billing, _ = sinks
    billing.failing = {"100"}
    a = await ingest(client, "100")
    await settled(redis, a)

    async def cli(*args: str) -> Any:
        return await asyncio.to_thread(relay_cli, api_settings, *args)

    out = await cli("endpoints", "pause", "billing", "--yes")
    assert out.returncode == 0, out.stderr
    args = ("resend", "--endpoint", "billing", "--state", "failed", "--yes")
    out = await cli(*args)
    assert out.returncode == 0 and "queued 1 resend(s)" in out.stdout, out.stderr
    out = await cli(*args)  # its resend is queued or paused at billing: in hand, so skipped
    assert out.returncode == 1 and "relay: nothing to resend to billing: 1 match, each skipped" in out.stderr, out
    assert f"{a}: already resent" in out.stdout and "would be resent" not in out.stdout, out.stdout
    assert await redis.zcard(k.resends(a)) == 1


@pytest.mark.parametrize(
    "args,message",
    [
        ([], "name a notification ID"),
        (["ipn_" + "0" * 24, "--state", "failed"], "--state selects by filter"),
        (["ipn_" + "0" * 24, "--ids", "x"], "ID or --ids"),
        (["--state", "failed", "--since", "soon", "--yes"], "--since 'soon'"),
        (
            ["--endpoint", "ledger", "--state", "failed", "--yes"],
            "--endpoint 'ledger': is not a configured endpoint (known: billing, crm)",
        ),
        (["ipn_" + "0" * 24], "no notification"),
        # every id unknown: it printed "queued 0 resend(s)" and exited 0, as if done
        (["--ids", f"ipn_{'0' * 24},lcn_{'1' * 24}"], "nothing resent: 2 skipped"),
        # a filter that matches nothing: it printed "0 notification(s) would be resent" and exited 0, as
        # a dry run does, though none was asked for
        (["--state", "failed", "--yes"], "nothing to resend: no notification matches"),
        (["--endpoint", "billing", "--state", "failed"], "nothing to resend to billing: no notification matches"),
    ],
)
async def test_cli_resend_refusals(api_settings: Settings, redis: Redis, args: list[str], message: str) -> None:
    out = await asyncio.to_thread(relay_cli, api_settings, "resend", *args)
    assert out.returncode in (1, 2) and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert out.returncode == (1 if message.startswith(("no notification", "nothing resent", "nothing to")) else 2)
    assert "would be resent" not in out.stdout


def run_in_terminal(settings: Settings, answer: str, *args: str) -> Done:
    """The CLI with a pseudo-terminal on stdin, answering its question with ``answer``."""
    leader, follower = pty.openpty()
    try:
        os.write(leader, answer.encode() + b"\n")
        with open(follower, closefd=False) as terminal:
            config = str(settings.config_path)
            return run_cli("--config", config, *args, redis_url=settings.redis_url or "", stdin=terminal)
    finally:
        os.close(follower)
        os.close(leader)


async def test_cli_bulk_resend_asks_in_a_terminal(
    client: TestClient, api_settings: Settings, redis: Redis, worker: Worker, sinks: tuple[RefSink, RefSink]
) -> None:
    billing, _ = sinks
    billing.failing = {"100"}
    a = await ingest(client, "100")
    await settled(redis, a)
    args = ("resend", "--endpoint", "billing", "--state", "failed")
    out = await asyncio.to_thread(run_in_terminal, api_settings, "n", *args)
    assert "Resend 1 notification(s) to billing? [y/N]" in out.stdout and out.returncode == 1, out.stderr
    assert "aborted" in out.stderr and not await redis.exists(k.resends(a))
    out = await asyncio.to_thread(run_in_terminal, api_settings, "y", *args)
    assert out.returncode == 0 and "queued 1 resend(s)" in out.stdout, out.stderr
    assert await redis.zcard(k.resends(a)) == 1

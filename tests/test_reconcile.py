"""Reconciliation with 2Checkout's order list, in process: a real Redis, the relay's real ingress app,
and the fake 2Checkout API of tests/fake_2checkout.py (which checks the authentication header)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from config.settings import ConfigError, Secret, Settings
from relay import constants as k
from relay.server import create_app
from relay.store import reconcile as store
from relay.store.connection import clock_ms
from relay.store.stats import health_report
from tests.fake_2checkout import Fake2Checkout, FakeOrder
from tests.support import SECRET_KEY, SELLER_ID, ipn_fields, signed_body
from workers import reconcile as worker
from workers.tco_api import auth_header, signing_source

MERCHANT = "RELAYTEST"


@pytest.fixture
async def api() -> AsyncIterator[Fake2Checkout]:
    fake = await Fake2Checkout(MERCHANT, SECRET_KEY).start()
    yield fake
    await fake.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def ingress(
    aiohttp_client: Any, make_settings: Callable[..., Settings], api: Fake2Checkout
) -> Callable[..., Awaitable[tuple[Settings, Any]]]:
    """``await ingress(*other_sources)``: the settings of the fake API's reconciled source (and the
    others) and a test client of the relay's ingress for them."""

    async def start(*others: dict[str, Any]) -> tuple[Settings, Any]:
        settings = make_settings(sources=[source(api.api_url), *others])
        return settings, await aiohttp_client(create_app(settings))

    return start


def source(api_url: str, **reconcile: Any) -> dict[str, Any]:
    return {
        "name": "default",
        "secret_key_env": "TCO_SECRET_KEY",
        "seller_id": SELLER_ID,
        "reconcile": {
            "merchant_code": MERCHANT,
            "api_url": api_url,
            "interval_seconds": 5,
            "grace_minutes": 0,
            **reconcile,
        },
    }


async def post_ipn(client: Any, ref: str, status: str, test: str = "0") -> None:
    body = signed_body(ipn_fields(ref, status=status, test=test, message_id=f"{ref}-{status}"))
    resp = await client.post("/ipn", data=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 200, await resp.text()


def refs(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["reference"], m["status"]) for m in doc["missing"]]


# -- the documented authentication ---------------------------------------------------------------------


def test_signing_source_is_2checkouts_documented_example() -> None:
    # 2Checkout's own example (API authentication, "HMAC source string"): 8AVANGATE192010-05-13 12:12:12,
    # whose HMAC with SECRET_KEY the page gives (md5 there, from the API's older versions)
    source_string = signing_source("AVANGATE", "2010-05-13 12:12:12")
    assert source_string == b"8AVANGATE192010-05-13 12:12:12"
    assert hmac.new(b"SECRET_KEY", source_string, hashlib.md5).hexdigest() == "bf763db7d333e9c3038698cf59ada3e6"
    # lengths in bytes: a non-ASCII code counts its UTF-8 bytes
    assert signing_source("MÜ", "d").startswith(b"3M")


def test_auth_header_shape_and_hash() -> None:
    at = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    header = auth_header("AVANGATE", Secret("SECRET_KEY"), at)
    parts = dict(re.findall(r'(\w+)="([^"]*)"', header))
    assert parts == {
        "code": "AVANGATE",
        "date": "2025-01-02 03:04:05",
        "algo": "sha256",
        "hash": hmac.new(b"SECRET_KEY", b"8AVANGATE192025-01-02 03:04:05", hashlib.sha256).hexdigest(),
    }


async def test_fake_api_refuses_a_wrong_hash_and_a_skewed_date(
    api: Fake2Checkout, session: aiohttp.ClientSession
) -> None:
    url = api.api_url + "/orders/?StartDate=2025-01-01"
    now = datetime.now(UTC)
    for header in (
        auth_header(MERCHANT, Secret("not the key"), now),
        auth_header(MERCHANT, Secret(SECRET_KEY), now - timedelta(hours=1)),
        auth_header("OTHER", Secret(SECRET_KEY), now),
        None,
    ):
        async with session.get(url, headers={"X-Avangate-Authentication": header} if header else {}) as resp:
            assert resp.status == 401
            assert (await resp.json())["error_code"] == "AUTHENTICATION_ERROR"
    async with session.get(
        url, headers={"X-Avangate-Authentication": auth_header(MERCHANT, Secret(SECRET_KEY), now)}
    ) as resp:
        assert resp.status == 200
    assert api.refused == [
        "wrong hash",
        "date too far from now",
        "unknown merchant code",
        "no X-Avangate-Authentication header",
    ]


async def test_fake_api_runs_standalone_for_trying_by_hand(tmp_path: Any, session: aiohttp.ClientSession) -> None:
    # docs/operations.md points at it to try reconciliation against relay dev: it must start from the
    # command line, check the header as in-process, and read the orders file again at every request
    import os
    import subprocess
    import sys

    from config.reconcile import ReconcileConfig
    from tests.support import free_port
    from workers.tco_api import ApiError, list_orders

    orders = tmp_path / "orders.json"
    orders.write_text(
        json.dumps([{"ref": "7001", "status": "COMPLETE"}, {"ref": "7002", "status": "PENDING", "test": True}])
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fake_2checkout",
            "--merchant-code",
            MERCHANT,
            "--port",
            str(port),
            "--orders",
            str(orders),
        ],
        env={**os.environ, "TCO_SECRET_KEY": SECRET_KEY},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
        api_url = f"http://127.0.0.1:{port}/rest/6.0"
        assert line.strip() == f'fake 2Checkout API: api_url = "{api_url}"'
        cfg = ReconcileConfig(merchant_code=MERCHANT, api_url=api_url)
        now = datetime.now(UTC)
        listed = await list_orders(session, cfg, Secret(SECRET_KEY), now)
        assert [(o.reference, o.status) for o in listed] == [("7001", "COMPLETE")]
        orders.write_text(json.dumps([{"ref": "7001", "status": "REFUND"}]))
        assert [(o.reference, o.status) for o in await list_orders(session, cfg, Secret(SECRET_KEY), now)] == [
            ("7001", "REFUND")
        ]
        with pytest.raises(ApiError) as refused:
            await list_orders(session, cfg, Secret("another key"), now)
        assert refused.value.http_status == 401
    finally:
        proc.terminate()
        proc.wait(10)


# -- what "missing" means --------------------------------------------------------------------------------


def test_a_later_status_covers_an_earlier_one() -> None:
    assert store.covered("COMPLETE", {"COMPLETE"})
    assert store.covered("PAYMENT_AUTHORIZED", {"COMPLETE"})
    assert store.covered("COMPLETE", {"REFUND"}) and store.covered("COMPLETE", {"REVERSED"})
    assert store.covered("PENDING", {"CANCELED"})
    assert not store.covered("COMPLETE", {"PAYMENT_AUTHORIZED", "PENDING"})
    assert not store.covered("REFUND", {"COMPLETE"})
    assert not store.covered("REFUND", {"REVERSED"})
    assert not store.covered("COMPLETE", {"CANCELED"})
    assert not store.covered("COMPLETE", set())


async def test_pass_reports_orders_without_their_ipn_and_clears_when_it_arrives(
    ingress: Callable[..., Awaitable[tuple[Settings, Any]]],
    redis: Redis,
    api: Fake2Checkout,
    session: aiohttp.ClientSession,
) -> None:
    settings, client = await ingress()
    api.add("1001", "COMPLETE")  # all its IPNs
    await post_ipn(client, "1001", "PAYMENT_AUTHORIZED")
    await post_ipn(client, "1001", "COMPLETE")
    api.add("1002", "COMPLETE")  # none at all
    api.add("1003", "COMPLETE")  # its COMPLETE IPN never came
    await post_ipn(client, "1003", "PAYMENT_AUTHORIZED")
    api.add("1004", "REFUND")  # refunded, both IPNs there
    await post_ipn(client, "1004", "COMPLETE")
    await post_ipn(client, "1004", "REFUND")
    api.add("1005", "COMPLETE", test=True)  # a test order: not listed with IncludeTestOrders=NO
    api.add("1006", "AUTHRECEIVED")  # the API's name of the stage PAYMENT_AUTHORIZED announces
    await post_ipn(client, "1006", "PAYMENT_AUTHORIZED")
    api.add("1007", "COMPLETE", placed=datetime.now(UTC) - timedelta(days=5))  # outside the lookback

    doc = await worker.run_pass(redis, session, settings.sources["default"])
    assert refs(doc) == [("1002", "COMPLETE"), ("1003", "COMPLETE")]
    assert doc["count"] == 2 and doc["error"] is None and doc["orders"] == 5
    assert api.requests[0]["query"]["IncludeTestOrders"] == "NO"
    since = doc["since"]

    await post_ipn(client, "1002", "COMPLETE")  # reissued from the control panel
    doc = await worker.run_pass(redis, session, settings.sources["default"])
    assert refs(doc) == [("1003", "COMPLETE")] and doc["since"] == since
    await post_ipn(client, "1003", "COMPLETE")
    doc = await worker.run_pass(redis, session, settings.sources["default"])
    assert doc["missing"] == [] and doc["count"] == 0 and doc["since"] is None


async def test_an_order_the_api_lists_authreceived_needs_its_authorization_ipn(
    ingress: Callable[..., Awaitable[tuple[Settings, Any]]],
    redis: Redis,
    api: Fake2Checkout,
    session: aiohttp.ClientSession,
) -> None:
    # The API's order Status names the authorized stage AUTHRECEIVED ("Order flow in 2Checkout API"); its
    # IPN is PAYMENT_AUTHORIZED (or PAYMENT_RECEIVED, PENDING_ORDER_APPROVAL). An order waiting there for
    # shipment or delivery confirmation whose IPN was lost was never reported: the merchant never ships.
    settings, client = await ingress()
    api.add("1101", "AUTHRECEIVED")  # no IPN at all
    api.add("1102", "AUTHRECEIVED")  # only its PENDING IPN
    await post_ipn(client, "1102", "PENDING")
    api.add("1103", "AUTHRECEIVED")  # announced
    await post_ipn(client, "1103", "PAYMENT_AUTHORIZED")
    api.add("1104", "AUTHRECEIVED")  # announced as awaiting delivery confirmation
    await post_ipn(client, "1104", "PENDING_ORDER_APPROVAL")
    api.add("1105", "PENDING")  # its PENDING_APPROVAL IPN tells the same news
    await post_ipn(client, "1105", "PENDING_APPROVAL")
    api.add("1106", "CANCELED")  # the API has no INVALID: an INVALID IPN's order is listed CANCELED
    await post_ipn(client, "1106", "INVALID")
    doc = await worker.run_pass(redis, session, settings.sources["default"])
    assert refs(doc) == [("1101", "AUTHRECEIVED"), ("1102", "AUTHRECEIVED")]
    assert store.covered("AUTHRECEIVED", {"COMPLETE"}) and not store.covered("AUTHRECEIVED", {"PURCHASE_PENDING"})


async def test_an_ipn_through_another_source_counts_an_lcn_does_not(
    ingress: Callable[..., Awaitable[tuple[Settings, Any]]],
    redis: Redis,
    api: Fake2Checkout,
    session: aiohttp.ClientSession,
) -> None:
    # One account, two IPN URLs (README: each extra URL configuration is a [[sources]] entry): 2Checkout
    # sends an order with NOTIFICATION_URL to that URL only, while the API lists every order of the
    # account. Counting only the reconciled source's IPNs reported all of the other URL's orders missing.
    other = {"name": "other", "secret_key_env": "TCO_SECRET_KEY"}
    settings, client = await ingress(other)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    api.add("2001", "COMPLETE")
    body = signed_body(ipn_fields("2001", status="COMPLETE", test="0"))
    assert (await client.post("/ipn/other", data=body, headers=form)).status == 200
    api.add("2002", "COMPLETE")  # only an LCN names it (its licence code happens to be the RefNo)
    lcn = signed_body(
        [("LICENSE_CODE", "2002"), ("STATUS", "ACTIVE"), ("DATE_UPDATED", "2024-01-02 03:04:05"), ("TEST", "0")]
    )
    assert (await client.post("/lcn", data=lcn, headers=form)).status == 200
    doc = await worker.run_pass(redis, session, settings.sources["default"])
    assert refs(doc) == [("2002", "COMPLETE")]


async def test_a_refund_listed_beside_its_order_needs_the_refund_ipn(
    ingress: Callable[..., Awaitable[tuple[Settings, Any]]],
    redis: Redis,
    api: Fake2Checkout,
    session: aiohttp.ClientSession,
) -> None:
    # 2Checkout lists a refund as an order of its own that shares the original's RefNo
    settings, client = await ingress()
    now = datetime.now(UTC)
    earlier = now - timedelta(hours=1)
    api.orders = [
        FakeOrder("2101", "REFUND", placed=now),
        FakeOrder("2101", "COMPLETE", placed=earlier),
        FakeOrder("2102", "COMPLETE", placed=earlier),
        FakeOrder("2102", "REFUND", placed=now),
    ]
    await post_ipn(client, "2101", "COMPLETE")
    await post_ipn(client, "2102", "COMPLETE")
    await post_ipn(client, "2102", "REFUND")
    doc = await worker.run_pass(redis, session, settings.sources["default"])
    assert refs(doc) == [("2101", "REFUND")]


async def test_test_orders_are_compared_when_asked(
    redis: Redis, make_settings: Callable[..., Settings], api: Fake2Checkout, session: aiohttp.ClientSession
) -> None:
    settings = make_settings(sources=[source(api.api_url, include_test_orders=True)])
    api.add("3001", "COMPLETE", test=True)
    doc = await worker.run_pass(redis, session, settings.sources["default"])
    assert api.requests[0]["query"]["IncludeTestOrders"] == "YES"
    assert refs(doc) == [("3001", "COMPLETE")]


async def test_grace_counts_from_when_the_order_was_first_seen_in_its_status(
    redis: Redis, make_settings: Callable[..., Settings], api: Fake2Checkout, session: aiohttp.ClientSession
) -> None:
    settings = make_settings(sources=[source(api.api_url, grace_minutes=0.5)])
    src = settings.sources["default"]
    api.add("4001", "PAYMENT_AUTHORIZED")
    doc = await worker.run_pass(redis, session, src)
    assert doc["missing"] == []  # within its grace
    first = int((await redis.hget(k.reconcile_seen("default"), "4001")).split()[1])
    # the relay saw it 40 s ago (as if): past the 30 s grace now
    await redis.hset(k.reconcile_seen("default"), "4001", f"PAYMENT_AUTHORIZED {first - 40_000}")
    doc = await worker.run_pass(redis, session, src)
    assert refs(doc) == [("4001", "PAYMENT_AUTHORIZED")]
    assert doc["missing"][0]["first_seen"] == first - 40_000
    # it moves on to COMPLETE: a new status, a new grace
    api.add("4001", "COMPLETE")
    doc = await worker.run_pass(redis, session, src)
    assert doc["missing"] == []
    assert (await redis.hget(k.reconcile_seen("default"), "4001")).startswith(b"COMPLETE ")
    # an order that left the listing is forgotten; the key expires
    api.orders.clear()
    await worker.run_pass(redis, session, src)
    assert await redis.exists(k.reconcile_seen("default")) == 0
    assert (
        0
        < await redis.pttl(k.reconcile_state("default"))
        <= settings.sources["default"].reconcile.lookback_ms + k.DAY_MS
    )  # type: ignore[union-attr]


async def test_pages_are_read_until_the_count_is_covered(
    redis: Redis, make_settings: Callable[..., Settings], api: Fake2Checkout, session: aiohttp.ClientSession
) -> None:
    settings = make_settings(sources=[source(api.api_url)])
    now = datetime.now(UTC)
    for i in range(450):
        api.add(str(500000 + i), "COMPLETE", placed=now - timedelta(seconds=i))
    doc = await worker.run_pass(redis, session, settings.sources["default"])
    assert [(r["query"]["Page"], r["query"]["Limit"]) for r in api.requests] == [
        ("1", "200"),
        ("2", "200"),
        ("3", "200"),
    ]
    assert doc["count"] == 450 and doc["orders"] == 450
    assert api.requests[0]["query"]["EndDate"] == now.strftime("%Y-%m-%d")
    assert api.requests[0]["query"]["StartDate"] == (now - timedelta(hours=48)).strftime("%Y-%m-%d")


# -- an API that cannot be read -------------------------------------------------------------------------


async def test_api_errors_keep_the_last_list_and_say_why(
    redis: Redis, make_settings: Callable[..., Settings], api: Fake2Checkout, session: aiohttp.ClientSession
) -> None:
    settings = make_settings(sources=[source(api.api_url, timeout_seconds=0.3)])
    src = settings.sources["default"]
    api.add("5001", "COMPLETE")
    doc = await worker.run_pass(redis, session, src)
    assert refs(doc) == [("5001", "COMPLETE")]
    checked = doc["checked_at"]

    api.requests.clear()
    api.script = [("status", 500)]
    doc = await worker.run_pass(redis, session, src)
    assert len(api.requests) == 3  # retried with backoff, then given up for this interval
    assert doc["error"]["http_status"] == 500 and "Something went wrong" in doc["error"]["message"]
    assert refs(doc) == [("5001", "COMPLETE")] and doc["checked_at"] == checked
    since = doc["error"]["since"]

    api.requests.clear()
    api.script = [("slow", 2)]
    doc = await worker.run_pass(redis, session, src)
    assert doc["error"]["http_status"] is None and doc["error"]["message"] == "no answer within 0.3 s"
    assert doc["error"]["since"] == since and refs(doc) == [("5001", "COMPLETE")]

    api.script = [("garbage", None)]
    doc = await worker.run_pass(redis, session, src)
    assert doc["error"]["message"] == "the answer is not JSON"

    api.script = []
    api.orders.clear()
    doc = await worker.run_pass(redis, session, src)
    assert doc["error"] is None and doc["missing"] == []


async def test_a_wrong_secret_is_a_401_not_retried_and_never_shown(
    redis: Redis, make_settings: Callable[..., Settings], api: Fake2Checkout, session: aiohttp.ClientSession
) -> None:
    wrong = "wrong-secret-Zq81"
    settings = make_settings(sources=[source(api.api_url)], env={"TCO_SECRET_KEY": wrong})
    api.add("6001", "COMPLETE")
    with capture_logs() as logs:
        doc = await worker.run_pass(redis, session, settings.sources["default"])
    assert len(api.requests) == 1 and api.refused == ["wrong hash"]
    assert doc["error"]["http_status"] == 401
    assert doc["error"]["message"] == "AUTHENTICATION_ERROR: Authentication needed for this resource"
    assert doc["missing"] == [] and doc["count"] == 0  # never "everything missing"
    sent_hash = re.search(r'hash="([0-9a-f]+)"', api.requests[0]["headers"]["X-Avangate-Authentication"])
    assert sent_hash is not None
    report = await health_report(redis, settings, await clock_ms(redis))
    shown = json.dumps([logs, doc, report])
    assert wrong not in shown and sent_hash.group(1) not in shown
    assert [p["kind"] for p in report["problems"] if p["kind"] == "reconcile_failing"] == ["reconcile_failing"]


# -- health -------------------------------------------------------------------------------------------


async def test_health_reports_missing_orders_and_a_failing_api(
    redis: Redis, make_settings: Callable[..., Settings], api: Fake2Checkout, session: aiohttp.ClientSession
) -> None:
    settings = make_settings(sources=[source(api.api_url)])
    await redis.zadd(k.WORKERS, {"w": await clock_ms(redis)})  # a live worker: only our problems remain
    for i in range(12):
        api.add(str(7000 + i), "COMPLETE")
    await worker.run_pass(redis, session, settings.sources["default"])
    report = await health_report(redis, settings, await clock_ms(redis))
    assert report["status"] == "degraded"
    [problem] = report["problems"]
    assert problem["kind"] == "notifications_missing" and problem["source"] == "default"
    assert problem["count"] == 12 and len(problem["references"]) == 10 and problem["since"]
    assert problem["references"][0].keys() == {"reference", "status", "first_seen"}
    assert "and 2 more" in problem["message"]

    api.script = [("status", 401)]
    await worker.run_pass(redis, session, settings.sources["default"])
    report = await health_report(redis, settings, await clock_ms(redis))
    assert [p["kind"] for p in report["problems"]] == ["notifications_missing", "reconcile_failing"]
    failing = report["problems"][1]
    assert failing["http_status"] == 401 and report["status"] == "degraded"
    assert store.view(report["reconcile"])["sources"][0]["error"].startswith("HTTP 401: ")


# -- one pass at a time ---------------------------------------------------------------------------------


async def test_one_pass_at_a_time_every_interval(redis: Redis) -> None:
    assert await store.take_turn(redis, "s", "w1")
    assert not await store.take_turn(redis, "s", "w2")
    assert not await store.take_turn(redis, "s", "cli", now=True)  # a running pass is never doubled
    await store.end_turn(redis, "s", "w2", 5000)  # not w2's lease: nothing changes
    assert await redis.get(k.reconcile_turn("s")) == b"run:w1"
    await store.end_turn(redis, "s", "w1", 5000)
    assert await redis.get(k.reconcile_turn("s")) == b"idle"
    assert 4000 < await redis.pttl(k.reconcile_turn("s")) <= 5000
    assert not await store.take_turn(redis, "s", "w2")  # not due yet
    assert await store.take_turn(redis, "s", "cli", now=True)  # relay reconcile: now
    assert 0 < await redis.pttl(k.reconcile_turn("s")) <= store.LEASE_MS


async def test_due_passes_runs_only_when_due(
    redis: Redis, make_settings: Callable[..., Settings], api: Fake2Checkout, session: aiohttp.ClientSession
) -> None:
    settings = make_settings(sources=[source(api.api_url)])
    first = await worker.due_passes(redis, session, settings, "w1")
    second = await worker.due_passes(redis, session, settings, "w2")
    assert first["default"] is not None and second == {"default": None}
    assert len(api.requests) == 1


async def test_two_workers_at_once_make_one_listing(
    redis: Redis, make_settings: Callable[..., Settings], api: Fake2Checkout, session: aiohttp.ClientSession
) -> None:
    settings = make_settings(sources=[source(api.api_url)])
    api.script = [("slow", 0.3)]  # both ask while the first listing is still out
    api.add("1", "COMPLETE")
    done = await asyncio.gather(*(worker.due_passes(redis, session, settings, f"w{i}") for i in range(4)))
    assert sorted(d["default"] is None for d in done) == [False, True, True, True]
    assert len(api.requests) == 1


# -- configuration -------------------------------------------------------------------------------------


def test_config_defaults_and_bad_values(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        sources=[{"name": "default", "secret_key_env": "TCO_SECRET_KEY", "reconcile": {"merchant_code": MERCHANT}}]
    )
    cfg = settings.sources["default"].reconcile
    assert cfg is not None
    assert (cfg.api_url, cfg.interval_seconds, cfg.lookback_hours, cfg.grace_minutes, cfg.include_test_orders) == (
        "https://api.2checkout.com/rest/6.0",
        600,
        48,
        30,
        False,
    )
    assert (
        make_settings(sources=[{"name": "default", "secret_key_env": "TCO_SECRET_KEY"}]).sources["default"].reconcile
        is None
    )
    with pytest.raises(ConfigError, match=r"source 'default': reconcile\.interval_seconds = 4: must be greater"):
        make_settings(sources=[source("http://127.0.0.1:9", interval_seconds=4)])
    with pytest.raises(ConfigError, match=r"source 'default': reconcile\.merchant_code: is required"):
        make_settings(sources=[{"name": "default", "secret_key_env": "TCO_SECRET_KEY", "reconcile": {}}])
    with pytest.raises(ConfigError, match=r"source 'default': reconcile\.grace: unknown key"):
        make_settings(sources=[source("http://127.0.0.1:9", grace=3)])
    with pytest.raises(ConfigError, match=r"source 'default': reconcile needs secret_key_env"):
        make_settings(
            sources=[
                {
                    "name": "default",
                    "ins_secret_word_env": "TCO_INS_SECRET_WORD",
                    "seller_id": SELLER_ID,
                    "reconcile": {"merchant_code": MERCHANT},
                }
            ]
        )
    assert (
        make_settings(sources=[source("http://127.0.0.1:9", grace_minutes=0.25)]).sources["default"].reconcile.grace_ms
        == 15_000
    )  # type: ignore[union-attr]


def test_retention_must_outlast_the_listing(make_settings: Callable[..., Settings]) -> None:
    # The pass reads the IPNs stored for each listed order: with retention_days = 1.5 and the default
    # 48 h lookback (whole UTC days: up to 72 h listed), every order older than 36 h would be reported
    # missing although its IPN came. The config now says so when it loads.
    delivery = {"retention_days": 1.5, "retry_window_hours": 24}
    with pytest.raises(
        ConfigError,
        match=r"source 'default': reconcile\.lookback_hours = 48 needs "
        r"delivery\.retention_days \(now 1\.5\) longer than lookback_hours \+ 24 h",
    ):
        make_settings(delivery=delivery, sources=[source("http://127.0.0.1:9")])
    assert (
        make_settings(delivery=delivery, sources=[source("http://127.0.0.1:9", lookback_hours=11)])
        .sources["default"]
        .reconcile
        is not None
    )


# -- alerts ---------------------------------------------------------------------------------------------


async def test_missing_orders_alert_once_and_recover(
    ingress: Callable[..., Awaitable[tuple[Settings, Any]]],
    redis: Redis,
    api: Fake2Checkout,
    session: aiohttp.ClientSession,
) -> None:
    from workers import alerts

    settings, client = await ingress()
    api.add("8001", "COMPLETE")
    api.add("8002", "REFUND")
    await post_ipn(client, "8002", "COMPLETE")
    await worker.run_pass(redis, session, settings.sources["default"])
    now = await clock_ms(redis)
    [notice] = [n for n in await alerts.evaluate(redis, settings, now) if n.kind.startswith("notifications")]
    assert notice.kind == "notifications_missing" and notice.subject == "default"
    assert notice.subject_line == "[relay] source default: 2 order(s) without their IPN"
    assert "8001 COMPLETE" in notice.text and "8002 REFUND" in notice.text
    assert "order_info.php?refno=8001" in notice.text
    assert notice.payload()["source"] == "default" and notice.payload()["count"] == 2
    # the same incident does not alert again within frequency_hours
    assert not [n for n in await alerts.evaluate(redis, settings, now + 60_000) if n.kind.startswith("notif")]

    await post_ipn(client, "8001", "COMPLETE")
    await post_ipn(client, "8002", "REFUND")
    await worker.run_pass(redis, session, settings.sources["default"])
    [notice] = [n for n in await alerts.evaluate(redis, settings, now + 120_000) if n.kind.startswith("notif")]
    # the incident began when the first pass found the orders missing, a moment before the first alert
    assert notice.kind == "notifications_recovered" and notice.since_ms is not None
    assert now - 10_000 < notice.since_ms <= now
    assert not [n for n in await alerts.evaluate(redis, settings, now + 180_000) if n.kind.startswith("notif")]


# -- the CLI's and the API's edges ------------------------------------------------------------------------


def test_reconcile_command_names_a_bad_source(
    make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    from relay.cli import main

    plain = make_settings(sources=[{"name": "default", "secret_key_env": "TCO_SECRET_KEY"}])
    assert main(["--config", str(plain.config_path), "reconcile"]) == 2
    assert capsys.readouterr().err.strip() == (
        "relay: no source has a [sources.reconcile] table: nothing to compare (docs/configuration.md)"
    )
    other = {"name": "other", "secret_key_env": "TCO_SECRET_KEY"}
    settings = make_settings(sources=[source("http://127.0.0.1:9"), other])
    assert main(["--config", str(settings.config_path), "reconcile", "--source", "nope"]) == 2
    assert "--source 'nope': no such source (known: default, other)" in capsys.readouterr().err
    assert main(["--config", str(settings.config_path), "reconcile", "--source", "other"]) == 2
    assert "--source 'other': has no [sources.reconcile] table" in capsys.readouterr().err


async def test_reconcile_command_without_the_secret_key_says_so_and_writes_nothing(
    redis: Redis,
    redis_server: Any,
    make_settings: Callable[..., Settings],
    api: Fake2Checkout,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # An operator's shell without TCO_SECRET_KEY recorded reconcile_failing in Redis: health turned
    # degraded and an alert could go out for everyone until the next worker pass.
    from relay.cli import main

    settings = make_settings(sources=[source(api.api_url)])
    monkeypatch.delenv("TCO_SECRET_KEY", raising=False)
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.chdir(tmp_path)
    argv = ["--config", str(settings.config_path), "reconcile"]
    assert await asyncio.to_thread(main, argv) == 2
    assert capsys.readouterr().err.strip() == (
        "relay: source default: TCO_SECRET_KEY is not set (its secret_key_env): "
        "2Checkout's API is signed with the account's secret key"
    )
    assert await redis.exists(k.reconcile_state("default"), k.reconcile_turn("default")) == 0
    assert api.requests == []
    # under `relay dev` the generated key is used, as send-test does
    (tmp_path / ".relay").mkdir()
    (tmp_path / ".relay" / "dev-secrets.json").write_text(
        json.dumps({"TCO_SECRET_KEY": SECRET_KEY, "RELAY_ADMIN_TOKEN": "not used here"})
    )
    api.add("5001", "COMPLETE")
    assert await asyncio.to_thread(main, argv) == 1
    out = capsys.readouterr()
    assert "5001" in out.out and api.refused == []
    assert out.err.strip() == "relay: using the development secrets in .relay/dev-secrets.json for TCO_SECRET_KEY"


async def test_api_reconcile_is_behind_the_token_and_empty_without_reconciliation(
    aiohttp_client: Any, make_settings: Callable[..., Settings], redis: Redis
) -> None:
    token = "reconcile-api-token-0123456789"
    settings = make_settings(env={"RELAY_ADMIN_TOKEN": token})
    client = await aiohttp_client(create_app(settings))
    assert (await client.get("/api/reconcile")).status == 401
    resp = await client.get("/api/reconcile", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200 and await resp.json() == {"sources": []}


async def test_dashboard_section_in_every_state(
    aiohttp_client: Any, redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    token = "reconcile-dash-token-0123456789"
    settings = make_settings(sources=[source("http://127.0.0.1:9")], env={"RELAY_ADMIN_TOKEN": token})
    client = await aiohttp_client(create_app(settings))
    resp = await client.post("/dashboard/login", data={"token": token}, allow_redirects=False)
    assert resp.status == 303

    async def section() -> str:
        resp = await client.get("/dashboard/data/overview")
        assert resp.status == 200
        html: str = (await resp.json())["html"]
        return html[html.index('<section class="reconcile"') :]

    assert "No pass yet" in await section()
    now = await clock_ms(redis)
    lookback = 48 * 3_600_000
    await store.save(redis, "default", now, lookback, error={"http_status": None, "message": "no answer within 30 s"})
    html = await section()
    assert "could not be read: no answer within 30 s" in html and "Nothing is known yet" in html
    await store.save(redis, "default", now, lookback, orders=3, missing=[])
    assert "Every order 2Checkout listed for the last 48 h has its IPN (3 listed" in await section()
    many = [{"reference": str(9100 + i), "status": "COMPLETE", "first_seen": now} for i in range(store.MISSING_CAP + 5)]
    await store.save(redis, "default", now, lookback, orders=len(many), missing=many)
    await store.save(redis, "default", now, lookback, error={"http_status": 503, "message": "<b>down</b>"})
    html = await section()
    assert "(HTTP 503): &lt;b&gt;down&lt;/b&gt;" in html and "from the last pass that could read it" in html
    assert f"{store.MISSING_CAP + 5} orders</strong>" in html and "… and 5 more" in html
    # relay reconcile lists the same capped list: the page must not send the operator there for the rest
    assert "relay reconcile</code> lists them" not in html and f"only the first {store.MISSING_CAP} are kept" in html
    assert html.count("Open in 2Checkout") == store.MISSING_CAP
    assert 'href="https://secure.2checkout.com/cpanel/order_info.php?refno=9100"' in html


async def test_an_unreadable_api_alerts_once_and_recovers(
    redis: Redis, make_settings: Callable[..., Settings], api: Fake2Checkout, session: aiohttp.ClientSession
) -> None:
    # before, reconcile_failing was a health problem only: a wrong API key stayed silent but for health
    from workers import alerts

    settings = make_settings(sources=[source(api.api_url)])
    api.script = [("status", 401)]
    await worker.run_pass(redis, session, settings.sources["default"])
    now = await clock_ms(redis)
    [notice] = [n for n in await alerts.evaluate(redis, settings, now) if n.kind.startswith("reconcile")]
    assert (notice.kind, notice.subject) == ("reconcile_failing", "default")
    assert notice.subject_line.startswith("[relay] source default: 2Checkout's order API cannot be read (401")
    assert "HTTP 401" in notice.text and "relay reconcile --source default" in notice.text
    assert notice.payload()["http_status"] == 401
    assert settings.sources["default"].secret_key is not None
    assert settings.sources["default"].secret_key.reveal() not in notice.text  # never the secret
    assert not [n for n in await alerts.evaluate(redis, settings, now + 60_000) if n.kind.startswith("reconcile")]

    api.script = []
    await worker.run_pass(redis, session, settings.sources["default"])
    [notice] = [n for n in await alerts.evaluate(redis, settings, now + 120_000) if n.kind.startswith("reconcile")]
    assert notice.kind == "reconcile_recovered" and notice.subject == "default"

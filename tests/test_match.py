"""``match``: an endpoint's content filter on the typed event document (config/match.py), end to end:
a real worker process, real redis-server, real HTTP endpoints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from config.match import compile_match, rejects
from config.settings import ConfigError, load_settings
from relay.store.ingest import notification_id
from tests.procs import RelayProcess
from tests.support import TEST_ENV, RedisServer, signed_body, write_config
from tests.test_delivery import FORM, final, relay

__all__ = ["relay"]  # the fixture, shared with test_delivery


def ipn(refno: str, total: str, items: list[tuple[str, str]], country: str = "DE") -> list[tuple[str, str]]:
    """An IPN of an order with these (product code, price) items, this total and customer country."""
    fields = [
        ("REFNO", refno),
        ("ORDERSTATUS", "COMPLETE"),
        ("CURRENCY", "EUR"),
        ("COUNTRY_CODE", country.lower()),
        ("IPN_TOTALGENERAL", total),
        ("MESSAGE_TYPE", "COMPLETE"),
        ("TEST_ORDER", "0"),
        ("IPN_DATE", "20240102030011"),
    ]
    for i, (code, price) in enumerate(items):
        fields += [
            ("IPN_PID[]", str(400 + i)),
            ("IPN_PNAME[]", code.title()),
            ("IPN_PCODE[]", code),
            ("IPN_PRICE[]", price),
            ("IPN_TOTAL[]", price),
        ]
    return fields


async def post(client: TestClient, fields: list[tuple[str, str]]) -> str:
    body = signed_body(fields)
    resp = await client.post("/ipn", data=body, headers=FORM)
    assert resp.status == 200, await resp.text()
    return notification_id("default", "ipn", body)


LICENSING = {"order.items[].code": ["PRO", "ENT"]}


async def test_a_product_code_routes_a_mixed_cart_to_licensing_and_other_orders_to_the_others(
    relay: Callable[..., Any], sink: Callable[..., Any], redis: Redis
) -> None:
    licensing, vat, everything = await sink(), await sink(), await sink()
    client = await relay(
        [
            {"name": "licensing", "url": licensing.url, "timeout": 2, "match": LICENSING},
            {"name": "eu-vat", "url": vat.url, "timeout": 2, "match": {"order.customer.country": ["DE", "FR", "IT"]}},
            {"name": "all", "url": everything.url, "timeout": 2, "format": "json"},
        ]
    )
    mixed = await post(client, ipn("5001", "120.00", [("BASIC", "20.00"), ("PRO", "100.00")]))
    basic = await post(client, ipn("5002", "20.00", [("BASIC", "20.00")], country="US"))
    # the opposite of each other: the cart with PRO reaches licensing, the one without does not
    assert (await final(redis, mixed, "licensing"))["state"] == "delivered"
    skipped = await final(redis, basic, "licensing")
    assert skipped["state"] == "skipped"
    assert skipped["reason"] == "match order.items[].code: BASIC is not one of ENT, PRO"
    # the country as the document normalises it (the IPN sent it lower-case)
    assert (await final(redis, mixed, "eu-vat"))["state"] == "delivered"
    country = "match order.customer.country: US is not one of DE, FR, IT"
    assert (await final(redis, basic, "eu-vat"))["reason"] == country
    assert (await final(redis, mixed, "all"))["state"] == "delivered"
    assert (await final(redis, basic, "all"))["state"] == "delivered"
    assert [r.headers["Relay-Notification-Id"] for r in licensing.received] == [mixed]
    assert len(everything.received) == 2
    # whatever the endpoint's format: licensing gets the original form body
    assert licensing.received[0].body == signed_body(ipn("5001", "120.00", [("BASIC", "20.00"), ("PRO", "100.00")]))


async def test_a_decimal_min_passes_500_00_and_skips_499_99(
    relay: Callable[..., Any], sink: Callable[..., Any], redis: Redis
) -> None:
    fraud = await sink()
    client = await relay([{"name": "fraud", "url": fraud.url, "timeout": 2, "match": {"order.total": {"min": "500"}}}])
    at_min = await post(client, ipn("6001", "500.00", [("PRO", "500.00")]))
    below = await post(client, ipn("6002", "499.99", [("PRO", "499.99")]))
    assert (await final(redis, at_min, "fraud"))["state"] == "delivered"
    skipped = await final(redis, below, "fraud")
    assert skipped["state"] == "skipped" and skipped["reason"] == "match order.total: 499.99 is not at least 500"
    assert len(fraud.received) == 1


def test_an_unknown_path_stops_a_worker_at_start_up_listing_the_paths_near_it(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    bad = write_config(
        tmp_path / "relay.toml",
        redis_port=redis_server.port,
        endpoints=[{"name": "licensing", "url": "http://127.0.0.1:9/", "match": {"order.item[].code": ["PRO"]}}],
    )
    worker = RelayProcess(bad, redis_server.url, "worker")
    try:
        assert worker.proc.wait(30) == 2
    finally:
        worker.stop()
    out = worker.output()
    assert "endpoint 'licensing': match" in out and "'order.item[].code' is not a path of the event document" in out
    assert "valid paths near it: order.items[].code" in out and "Traceback" not in out
    # the opposite: the right path starts (load_settings is what every process runs first)
    good = write_config(
        tmp_path / "good.toml",
        redis_port=redis_server.port,
        endpoints=[{"name": "licensing", "url": "http://127.0.0.1:9/", "match": {"order.items[].code": ["PRO"]}}],
    )
    assert load_settings(good, TEST_ENV).endpoints["licensing"].match == {"order.items[].code": frozenset({"PRO"})}


@pytest.mark.parametrize(
    ("rule", "needle"),
    [
        ({"order.total": {"min": 499.99}}, "min = 499.99: expected a decimal in quotes"),
        ({"order.total": {"min": "1", "max": "0.5"}}, "min 1 is above max 0.5"),
        ({"order.total": {"least": "1"}}, "not least"),
        ({"order.currency": {"min": "1"}}, "min and max need a decimal field"),
        ({"order.customer.country": ["de"]}, "'de' can never match"),
        ({"channel": ["IPN"]}, "'IPN' can never match; the document has one of ipn, lcn, ins"),
        ({"order.items[].code": []}, "expected a list of accepted values"),
        ({"raw": ["x"]}, "'raw' is not a path of the event document"),
    ],
)
def test_bad_rules_are_start_up_errors_naming_endpoint_and_path(
    tmp_path: Path, rule: dict[str, Any], needle: str
) -> None:
    path = write_config(tmp_path / "relay.toml", endpoints=[{"name": "e", "url": "http://127.0.0.1:9/", "match": rule}])
    with pytest.raises(ConfigError) as err:
        load_settings(path, TEST_ENV)
    assert "endpoint 'e': match" in str(err.value) and needle in str(err.value)


def test_decimals_are_compared_as_decimals_never_floats() -> None:
    rules = compile_match({"order.total": {"min": "0.3", "max": "0.3"}, "test": ["false"]})
    assert rules is not None
    # 0.1 + 0.2 as floats is 0.30000000000000004, above max; as decimals the amount "0.30" is 0.3
    assert rejects(rules, {"order": {"total": "0.30"}, "test": False}) is None
    above = "match order.total: 0.31 is not between 0.3 and 0.3"
    assert rejects(rules, {"order": {"total": "0.31"}, "test": False}) == above
    assert rejects(rules, {"order": None, "test": False}) == "match order.total: (none) is not between 0.3 and 0.3"
    assert rejects(rules, {"order": {"total": "0.3"}, "test": True}) == "match test: true is not one of false"


async def test_the_dashboard_detail_page_says_which_filter_skipped_an_endpoint(
    aiohttp_client: Any, make_settings: Callable[..., Any], redis: Redis
) -> None:
    from relay.server import create_app
    from tests.test_dashboard import TOKEN, login
    from workers.engine import Engine

    settings = make_settings(
        endpoints=[
            {"name": "licensing", "url": "http://127.0.0.1:9/", "match": LICENSING},
            {"name": "fraud", "url": "http://127.0.0.1:9/", "match": {"order.total": {"min": "500"}}},
        ],
        env={"RELAY_ADMIN_TOKEN": TOKEN},
    )
    client = await aiohttp_client(create_app(settings))
    nid = await post(client, ipn("7001", "499.99", [("BASIC", "499.99")]))
    await Engine(redis, settings, None).fanout(nid)  # type: ignore[arg-type]  # routed; nothing to send
    await login(client)
    page = await (await client.get(f"/dashboard/notifications/{nid}")).text()
    assert "Not sent: match order.items[].code: BASIC is not one of ENT, PRO." in page
    assert "Not sent: match order.total: 499.99 is not at least 500." in page


def test_a_removed_endpoints_rule_keeps_its_match_so_what_it_would_skip_is_skipped_not_cancelled(
    make_settings: Callable[..., Any],
) -> None:
    from relay import routing
    from relay.store.endpoints import from_rule, rule
    from workers import removed

    settings = make_settings(
        endpoints=[
            {
                "name": "fraud",
                "url": "http://127.0.0.1:9/",
                "channels": ["ipn"],
                "match": {"order.total": {"min": "500"}, "order.items[].code": ["PRO"]},
            }
        ]
    )
    gone = from_rule("fraud", rule(settings.endpoints["fraud"]))  # as relay:ep-removed keeps it
    assert gone.match == settings.endpoints["fraud"].match

    def routed(total: str) -> list[routing.Route]:
        doc = {"order": {"total": total, "items": [{"code": "PRO"}]}}
        return removed.marked(
            routing.route(
                [gone], source="default", channel="ipn", mtype="", status="", test=False, document=lambda: doc
            ),
            [gone],
        )

    assert routed("499.99") == [("fraud", "skip", "match order.total: 499.99 is not at least 500")]
    assert routed("500.00") == [("fraud", "removed", "")]  # the opposite: what it would have taken, cancelled

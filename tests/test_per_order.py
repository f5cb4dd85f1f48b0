"""``mode = "per_order"``: one request in flight per order, in order of receipt within it, across two
real worker processes; beside it, a ``serial`` endpoint given the same failing notification."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiohttp import web
from redis.asyncio import Redis

from config.settings import ConfigError, load_settings
from relay.server import create_app
from relay.store import audit
from relay.store.control import Control
from relay.store.ingest import notification_id
from relay.store.resend import Resender
from relay.store.stats import health_report
from tests.procs import RelayProcess
from tests.support import TEST_ENV, RedisServer, free_port, ipn_fields, signed_body, wait_for, write_config
from tests.test_delivery import delivery
from tests.test_reload_modes import reload, start_worker

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass
class Orders:
    """A real endpoint that records each request's order and message, answers 500 to ``broken`` messages,
    and counts the requests of one order in flight at once."""

    broken: set[str] = field(default_factory=set)
    retry_after: dict[str, str] = field(default_factory=dict)  # message -> Retry-After of its 500
    delay: float = 0.05
    log: list[tuple[str, str, int, float, float]] = field(default_factory=list)  # ref, msg, status, start, end
    in_flight: dict[str, int] = field(default_factory=dict)
    max_per_order: int = 0
    max_in_flight: int = 0
    port: int = 0
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        form = parse_qs((await request.read()).decode())
        ref, msg = form["REFNO"][0], form["MESSAGE_ID"][0]
        start = time.monotonic()
        self.in_flight[ref] = self.in_flight.get(ref, 0) + 1
        self.max_per_order = max(self.max_per_order, self.in_flight[ref])
        self.max_in_flight = max(self.max_in_flight, sum(self.in_flight.values()))
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight[ref] -= 1
        status = 500 if msg in self.broken else 200
        self.log.append((ref, msg, status, start, time.monotonic()))
        after = self.retry_after.get(msg) if status == 500 else None
        return web.Response(status=status, headers={"Retry-After": after} if after else {})

    def delivered(self) -> list[str]:
        return [msg for _, msg, status, _, _ in self.log if status == 200]

    async def start(self) -> Orders:
        app = web.Application()
        app.add_routes([web.post("/hook", self.handle)])
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self


@pytest.fixture
async def orders() -> AsyncIterator[Callable[..., Any]]:
    started: list[Orders] = []

    async def make(**kw: Any) -> Orders:
        o = await Orders(**kw).start()
        started.append(o)
        return o

    yield make
    for o in started:
        assert o.runner is not None
        await o.runner.cleanup()


# order A's first notification fails until fixed; B and C go on meanwhile
SEQUENCE = ["A1", "B1", "A2", "C1", "B2", "A3", "B3", "C2", "B4", "C3", "A4", "B5"]


async def test_per_order_holds_back_only_the_failing_order_across_two_workers(
    tmp_path: Path, redis: Redis, redis_server: RedisServer, aiohttp_client: Any, orders: Callable[..., Any]
) -> None:
    per_order, serial = await orders(broken={"A1"}), await orders(broken={"A1"})
    retry = [0.2] * 100
    config = write_config(
        tmp_path / "relay.toml",
        redis_port=redis_server.port,
        delivery={"jitter": 0},
        endpoints=[
            {
                "name": "billing",
                "url": f"http://127.0.0.1:{per_order.port}/hook",
                "mode": "per_order",
                "max_in_flight": 10,
                "retry_delays": retry,
                "timeout": 5,
            },
            {
                "name": "ledger",
                "url": f"http://127.0.0.1:{serial.port}/hook",
                "mode": "serial",
                "retry_delays": retry,
                "timeout": 5,
            },
        ],
    )
    settings = load_settings(config, {**TEST_ENV, "REDIS_URL": redis_server.url})
    client = await aiohttp_client(create_app(settings))
    workers = [RelayProcess(config, redis_server.url, "worker") for _ in range(2)]
    try:
        nids = []
        for msg in SEQUENCE:
            body = signed_body(ipn_fields(f"2300{msg[0]}", message_id=msg))
            resp = await client.post("/ipn", data=body, headers=FORM)
            assert resp.status == 200
            nids.append(notification_id("default", "ipn", body))
        others = [m for m in SEQUENCE if m[0] != "A"]
        # B's and C's notifications all reach the per_order endpoint while A1 keeps failing
        await wait_for(lambda: sorted(per_order.delivered()) == sorted(others), 30)
        assert [m for m in per_order.delivered() if m[0] == "B"] == ["B1", "B2", "B3", "B4", "B5"]
        assert [m for m in per_order.delivered() if m[0] == "C"] == ["C1", "C2", "C3"]
        assert sum(1 for _, m, s, _, _ in per_order.log if m == "A1" and s == 500) >= 1
        # and none of A's later ones was sent, to either endpoint
        assert not any(m[0] == "A" and m != "A1" for _, m, _, _, _ in per_order.log)
        # the opposite: the serial endpoint sent nothing behind A1
        assert {m for _, m, _, _, _ in serial.log} == {"A1"} and serial.delivered() == []
        per_order.broken.clear()
        serial.broken.clear()
        await wait_for(lambda: len(per_order.delivered()) == len(SEQUENCE), 30)
        # A's in receipt order, each sent only after the one before it was answered
        a_log = [(m, s, start, end) for _, m, s, start, end in per_order.log if m[0] == "A"]
        assert [m for m, s, _, _ in a_log if s == 200] == ["A1", "A2", "A3", "A4"]
        for (_, _, _, end), (_, _, start, _) in zip(a_log, a_log[1:], strict=False):
            assert start >= end
        # two workers, different orders side by side, never two requests for one order at once
        assert per_order.max_per_order == 1 and per_order.max_in_flight >= 2
        await wait_for(lambda: serial.delivered() == SEQUENCE, 30)  # serial: every one, in receipt order
        assert serial.max_in_flight == 1
    finally:
        for w in workers:
            w.stop()
    for w in workers:
        assert "Traceback" not in w.output()


async def test_an_order_held_behind_its_failing_head_is_a_backlog_even_while_the_endpoint_is_throttled(
    tmp_path: Path, redis: Redis, redis_server: RedisServer, aiohttp_client: Any, orders: Callable[..., Any]
) -> None:
    """A per_order endpoint with a rate_limit: order A's head fails, its later notification waits behind
    it while the other orders go at the limit. Health said healthy, with a note that deliveries "wait
    for its rate_limit" (a fault run: an order blocked for as long as its head retried, the endpoint
    throttled by the others); the same wait without a rate_limit was backlog_too_old. It waits for its
    head, not the rate: backlog_too_old, saying behind what."""
    endpoint = await orders(broken={"A1"}, delay=0.01)
    config = write_config(
        tmp_path / "relay.toml",
        redis_port=redis_server.port,
        delivery={"jitter": 0},
        endpoints=[
            {
                "name": "billing",
                "url": f"http://127.0.0.1:{endpoint.port}/hook",
                "mode": "per_order",
                "max_in_flight": 10,
                "rate_limit": 2,
                "retry_delays": [0.2] * 100,
                "timeout": 5,
            }
        ],
    )
    settings = load_settings(config, {**TEST_ENV, "REDIS_URL": redis_server.url})
    client = await aiohttp_client(create_app(settings))
    worker = RelayProcess(config, redis_server.url, "worker")
    try:
        # A1 then A2, then 12 orders of one notification each: 6 s of work at 2/s, throttled throughout
        for msg in ["A1", "A2", *(f"{chr(ord('B') + i)}1" for i in range(12))]:
            body = signed_body(ipn_fields(f"2300{msg[0]}", message_id=msg))
            assert (await client.post("/ipn", data=body, headers=FORM)).status == 200

        async def held() -> dict[str, Any] | None:
            sec, usec = await redis.time()
            report = await health_report(redis, settings, int(sec) * 1000 + int(usec) // 1000, max_pending_age=1)
            row = report["endpoints"]["billing"]
            backlog = [p for p in report["problems"] if p["kind"] == "backlog_too_old"]
            return {"row": row, "problem": backlog[0]} if backlog and row["throttled"] else None

        found = await wait_for(held, 5, what="no backlog_too_old while A2 waited behind A1 and billing was throttled")
        assert found["problem"]["message"].endswith(", behind an older delivery of its order retrying (HTTP 500)"), (
            found["problem"]
        )
        assert "A2" not in [m for _, m, _, _, _ in endpoint.log]  # it was held indeed
    finally:
        worker.stop()
    assert "Traceback" not in worker.output()


def test_mode_and_its_alias_concurrent_must_agree(tmp_path: Path) -> None:
    for mode, concurrent in [("serial", True), ("concurrent", False), ("per_order", True), ("per_order", False)]:
        path = write_config(
            tmp_path / "r.toml",
            endpoints=[{"name": "billing", "url": "http://127.0.0.1:9/", "mode": mode, "concurrent": concurrent}],
        )
        with pytest.raises(ConfigError) as err:
            load_settings(path, TEST_ENV)
        assert f"endpoint 'billing': mode = '{mode}' and concurrent = {str(concurrent).lower()} disagree" in str(
            err.value
        )
    # the opposite: consistent or alone, each is accepted
    for given, expected in [
        ({"mode": "serial", "concurrent": False}, "serial"),
        ({"concurrent": True}, "concurrent"),
        ({"mode": "per_order"}, "per_order"),
        ({}, "serial"),
    ]:
        path = write_config(tmp_path / "r.toml", endpoints=[{"name": "billing", "url": "http://127.0.0.1:9/", **given}])
        assert load_settings(path, TEST_ENV).endpoints["billing"].mode == expected


async def post(client: Any, msg: str) -> str:
    body = signed_body(ipn_fields(f"2300{msg[0]}", message_id=msg))
    resp = await client.post("/ipn", data=body, headers=FORM)
    assert resp.status == 200
    return notification_id("default", "ipn", body)


async def state_of(redis: Redis, nid: str, ep: str = "billing") -> str:
    return (await delivery(redis, nid, ep)).get("state", "")


async def test_retry_now_cancel_pause_resume_and_resend_keep_an_orders_receipt_order(
    tmp_path: Path, redis: Redis, redis_server: RedisServer, aiohttp_client: Any, orders: Callable[..., Any]
) -> None:
    billing = await orders(broken={"A1"})
    config = write_config(
        tmp_path / "relay.toml",
        redis_port=redis_server.port,
        delivery={"jitter": 0},
        endpoints=[
            {
                "name": "billing",
                "url": f"http://127.0.0.1:{billing.port}/hook",
                "mode": "per_order",
                "retry_delays": [60, 60, 60],
                "timeout": 5,
            }
        ],
    )
    settings = load_settings(config, {**TEST_ENV, "REDIS_URL": redis_server.url})
    client = await aiohttp_client(create_app(settings))
    control, origin = Control(redis, settings), audit.Origin("api", "127.0.0.9")
    worker = await start_worker(config, redis_server, redis)
    try:
        a1, a2, b1 = await post(client, "A1"), await post(client, "A2"), await post(client, "B1")
        await wait_for(lambda: billing.delivered() == ["B1"], 15)
        await wait_for(lambda: _is(redis, a1, "retrying"), 15)
        assert await state_of(redis, a2) == "pending"
        # retry now: A1 is sent again at once, not in 60 s; A2 still waits behind it
        assert (await control.retry(origin, nid=a1))["count"] == 1
        await wait_for(lambda: sum(m == "A1" for _, m, _, _, _ in billing.log) == 2, 5)
        await wait_for(lambda: _is(redis, a1, "retrying"), 15)
        assert await state_of(redis, a2) == "pending"
        # cancel A1: A2 is its order's head now, and is sent
        await control.cancel(a1, origin)
        await wait_for(lambda: billing.delivered() == ["B1", "A2"], 15)
        # pause: new work of both orders waits; resume sends it, each order in receipt order
        await control.pause("billing", origin)
        a3, b2, a4 = await post(client, "A3"), await post(client, "B2"), await post(client, "A4")
        await wait_for(lambda: _is(redis, a4, "paused"), 15)
        assert billing.delivered() == ["B1", "A2"]
        await control.resume("billing", origin)
        await wait_for(lambda: len(billing.delivered()) == 5, 15)
        assert [m for m in billing.delivered() if m[0] == "A"] == ["A2", "A3", "A4"]
        # a resend of A1 is a new notification of order A, after the others
        billing.broken.clear()
        await Resender(redis, settings).one(a1, endpoint="billing", origin=origin)
        await wait_for(lambda: billing.delivered()[-1:] == ["A1"], 15)
        assert billing.max_per_order == 1 and {await state_of(redis, n) for n in (a2, a3, a4, b1, b2)} == {"delivered"}
    finally:
        worker.stop()


async def _is(redis: Redis, nid: str, state: str) -> bool:
    return await state_of(redis, nid) == state


async def test_a_reload_from_concurrent_to_per_order_sends_an_orders_waiting_work_in_receipt_order(
    tmp_path: Path, redis: Redis, redis_server: RedisServer, aiohttp_client: Any, orders: Callable[..., Any]
) -> None:
    # three notifications of order A wait to be retried, due in the reverse of their order of receipt
    billing = await orders(broken={"A1", "A2", "A3"}, retry_after={"A1": "4", "A2": "3", "A3": "2"})

    def configure(mode: str) -> Path:
        return write_config(
            tmp_path / "relay.toml",
            redis_port=redis_server.port,
            delivery={"jitter": 0, "poll_interval": 0.05},
            endpoints=[
                {
                    "name": "billing",
                    "url": f"http://127.0.0.1:{billing.port}/hook",
                    "mode": mode,
                    "retry_delays": [1, 1, 1],
                    "timeout": 2,
                }
            ],
        )

    config = configure("concurrent")
    client = await aiohttp_client(create_app(load_settings(config, {**TEST_ENV, "REDIS_URL": redis_server.url})))
    worker = await start_worker(config, redis_server, redis)
    try:
        nids = [await post(client, m) for m in ("A1", "A2", "A3")]
        for nid in nids:
            await wait_for(lambda nid=nid: _is(redis, nid, "retrying"), 15)
        configure("per_order")
        billing.broken.clear()
        billing.max_per_order = 0  # concurrent until now: all three were sent at once
        await reload(worker, redis)
        await wait_for(lambda: len(billing.delivered()) == 3, 20)
    finally:
        worker.stop()
    assert billing.delivered() == ["A1", "A2", "A3"] and billing.max_per_order == 1
    assert {(await delivery(redis, nid, "billing"))["mode"] for nid in nids} == {"per_order"}

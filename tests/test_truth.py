"""Issue 11 end to end: real ``relay serve`` and ``relay worker`` processes, real endpoints, and the real
``relay`` command line, each case next to its opposite."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from relay import constants as k
from tests.procs import RelayProcess
from tests.support import TEST_ENV, RedisServer, free_port, ipn_fields, signed_body, wait_for, write_config

pytestmark = pytest.mark.slow  # real serve/worker/CLI processes end to end (~36 s): make test, not make check

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
TOKEN = "t0ken-for-the-admin-api"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SHOP2_KEY = "shop2-current-key"


@dataclass
class Endpoint:
    """A real endpoint that fails (503) for the REFNOs in ``failing``, or for all when ``down``."""

    down: bool = False
    failing: set[str] = field(default_factory=set)
    posts: int = 0
    port: int = 0
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        self.posts += 1
        refno = parse_qs((await request.read()).decode()).get("REFNO", [""])[0]
        if self.down or refno in self.failing:
            return web.Response(status=503, text="down for maintenance")
        return web.Response(text="ok")

    async def start(self) -> Endpoint:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self


@dataclass
class Stack:
    config: Path
    base: str
    redis_url: str
    procs: list[RelayProcess]

    def cli(self, *args: str) -> tuple[int, str]:
        env = {**TEST_ENV, "REDIS_URL": self.redis_url, "SHOP2_KEY": SHOP2_KEY}
        done = subprocess.run(
            [sys.executable, "-m", "relay", "--config", str(self.config), *args],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.returncode, done.stdout + done.stderr

    async def post(self, path: str, body: bytes) -> int:
        async with aiohttp.ClientSession() as http, http.post(f"{self.base}{path}", data=body, headers=FORM) as resp:
            return resp.status

    async def get_json(self, path: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as http, http.get(f"{self.base}{path}", headers=AUTH) as resp:
            return resp.status, await resp.json()


@pytest.fixture
async def stack(tmp_path: Path, redis_server: RedisServer, redis: Redis) -> AsyncIterator[Callable[..., Any]]:
    """``relay serve`` and ``relay worker`` as processes, for a config written from the arguments."""
    started: list[RelayProcess] = []
    endpoints_started: list[Endpoint] = []

    async def start(
        endpoints: dict[str, Endpoint],
        *,
        ep_options: dict[str, Any] | None = None,
        sources: list[dict[str, Any]] | None = None,
    ) -> Stack:
        for ep in endpoints.values():
            if not ep.port:
                await ep.start()
                endpoints_started.append(ep)
        port = free_port()
        eps = [
            {
                "name": name,
                "url": ep.url,
                "concurrent": True,
                "sources": [s["name"] for s in sources or []] or ["default"],
                "retry_delays": [0.05],
                **(ep_options or {}),
            }
            for name, ep in endpoints.items()
        ]
        path = write_config(
            tmp_path / "relay.toml",
            endpoints=eps,
            sources=sources,
            extra=f'[server]\nport = {port}\nadmin_token_env = "RELAY_ADMIN_TOKEN"\n',
        )
        env = {"RELAY_ADMIN_TOKEN": TOKEN, "SHOP2_KEY": SHOP2_KEY}
        procs = [
            RelayProcess(path, redis_server.url, "serve", env=env),
            RelayProcess(path, redis_server.url, "worker", env=env),
        ]
        started.extend(procs)
        s = Stack(path, f"http://127.0.0.1:{port}", redis_server.url, procs)

        async def up() -> bool:
            try:
                async with aiohttp.ClientSession() as http, http.get(f"{s.base}/healthz") as resp:
                    return resp.status == 200 and await redis.zcard(k.WORKERS) > 0
            except aiohttp.ClientError:
                return False

        await wait_for(up, timeout=30, interval=0.1)
        return s

    yield start
    for proc in started:
        proc.stop()
    for ep in endpoints_started:
        if ep.runner:
            await ep.runner.cleanup()


async def states(redis: Redis, ep: str, *names: str) -> list[int]:
    return [int(await redis.zcard(k.ep_state(ep, name))) for name in names]


async def test_one_endpoint_of_eight_down_then_recovered_by_resend(stack: Callable[..., Any], redis: Redis) -> None:
    names = ["billing", "crm", "erp", "licensing", "mail", "stats", "support", "warehouse"]
    eps = {name: Endpoint() for name in names}
    eps["warehouse"].down = True
    s: Stack = await stack(eps)
    for i in range(12):
        assert await s.post("/ipn", signed_body(ipn_fields(f"2300{i:05d}"))) == 200

    async def settled() -> bool:
        delivered = [await states(redis, n, "delivered") for n in names[:-1]]
        return await states(redis, "warehouse", "failed") == [12] and delivered == [[12]] * 7

    await wait_for(settled, timeout=30, interval=0.1)

    # relay health: degraded (exit 1), one problem, naming warehouse and its figures per delivery
    code, out = s.cli("health")
    assert code == 1, out
    lines = out.splitlines()
    assert lines[0] == "relay health: DEGRADED"
    assert lines[1].startswith(
        f"  endpoint_failing  endpoint warehouse (127.0.0.1:{eps['warehouse'].port}) "
        "failing: 12 of 12 deliveries (100.0%) failed in the last 4 h (threshold 25%); "
        "0 retrying, 12 given up; last error HTTP 503 (since 20"
    )
    assert lines[2] == ""
    assert [line.split()[0] for line in lines if line.startswith(tuple(names))][0] == "warehouse"  # first
    code, out = s.cli("health", "--json")
    report = json.loads(out)
    assert (code, report["status"]) == (1, "degraded")
    (problem,) = report["problems"]
    assert {key: problem[key] for key in ("kind", "endpoint", "failing", "attempted", "share", "last_error")} == {
        "kind": "endpoint_failing",
        "endpoint": "warehouse",
        "failing": 12,
        "attempted": 12,
        "share": 1.0,
        "last_error": "HTTP 503",
    }
    # the API says the same
    status, api = await s.get_json("/api/health")
    assert status == 200 and api["status"] == "degraded" and api["problems"][0]["endpoint"] == "warehouse"
    assert [e for e, row in api["endpoints"].items() if row["failing"]] == ["warehouse"]

    code, out = s.cli("notifications", "list", "--endpoint", "warehouse", "--state", "failed", "--json")
    assert code == 0 and len(json.loads(out)["items"]) == 12

    # fixed, and every failed delivery resent and delivered: healthy again, nothing left "failed"
    eps["warehouse"].down = False
    code, out = s.cli("resend", "--endpoint", "warehouse", "--state", "failed", "--yes")
    assert code == 0, out

    async def resolved() -> bool:
        code, out = s.cli("health", "--json")
        return code == 0 and json.loads(out)["endpoints"]["warehouse"]["resolved"] == 12

    await wait_for(resolved, timeout=30, interval=0.2)
    code, out = s.cli("health")
    assert code == 0 and out.startswith("relay health: healthy\n"), out
    code, out = s.cli("notifications", "list", "--endpoint", "warehouse", "--state", "failed", "--json")
    assert code == 0 and json.loads(out)["items"] == []
    code, out = s.cli(
        "notifications", "list", "--endpoint", "warehouse", "--state", "failed", "--include-resolved", "--json"
    )
    items = json.loads(out)["items"]
    assert len(items) == 12 and all(i["deliveries"]["warehouse"]["resolved_by"] for i in items)
    status, page = await s.get_json("/api/notifications?endpoint=warehouse&state=failed")
    assert status == 200 and page["items"] == []
    status, page = await s.get_json("/api/notifications?endpoint=warehouse&state=failed&include_resolved=true")
    assert status == 200 and len(page["items"]) == 12
    code, out = s.cli("notifications", "show", items[0]["id"])
    assert f"warehouse: failed → resolved by resend {items[0]['id']}~r1 at " in out, out


async def test_two_of_ten_failing_is_twenty_percent_and_three_more_tip_it(
    stack: Callable[..., Any], redis: Redis
) -> None:
    """The share damped by min_deliveries is of deliveries still retrying (a given-up one is a problem
    on its own: tests/test_alert_truth.py)."""
    erp = Endpoint(failing={"230000001", "230000002"})
    # a long retry delay: the failing ones wait for their second attempt while the test looks
    s: Stack = await stack({"erp": erp}, ep_options={"retry_delays": [600]})
    for i in range(10):
        assert await s.post("/ipn", signed_body(ipn_fields(f"2300{i:05d}"))) == 200
    await wait_for(lambda: _eq(redis, "erp", [8, 2], "retrying"), timeout=30, interval=0.1)
    code, out = s.cli("health", "--json")
    report = json.loads(out)
    assert code == 0 and report["status"] == "healthy", out
    window = report["endpoints"]["erp"]["window"]
    assert (window["failing"], window["attempted"], window["share"]) == (2, 10, 0.2)

    # the opposite: 4 more of 10 fail, 6 of 20 = 30 % > 25 %
    erp.failing |= {f"2301{i:05d}" for i in range(4)}
    for i in range(10):
        assert await s.post("/ipn", signed_body(ipn_fields(f"2301{i:05d}"))) == 200
    await wait_for(lambda: _eq(redis, "erp", [14, 6], "retrying"), timeout=30, interval=0.1)
    code, out = s.cli("health", "--json")
    report = json.loads(out)
    assert code == 1 and report["status"] == "degraded"
    assert [(p["kind"], p["failing"], p["attempted"], p["causes"]) for p in report["problems"]] == [
        ("endpoint_failing", 6, 20, ["threshold"])
    ]


async def _eq(redis: Redis, ep: str, want: list[int], failing: str = "failed") -> bool:
    return await states(redis, ep, "delivered", failing) == want


async def test_a_wrong_key_for_one_source_is_a_problem_until_five_are_accepted(
    stack: Callable[..., Any], redis: Redis
) -> None:
    sources = [
        {"name": "default", "secret_key_env": "TCO_SECRET_KEY"},
        {"name": "shop2", "secret_key_env": "SHOP2_KEY"},
    ]
    s: Stack = await stack({"erp": Endpoint()}, sources=sources)
    for i in range(9):  # 2Checkout still signs with the key the relay no longer has
        assert await s.post("/ipn/shop2", signed_body(ipn_fields(f"2302{i:05d}"), secret="shop2-old-key")) == 400
    assert await s.post("/ipn", signed_body(ipn_fields("230300001"))) == 200
    code, out = s.cli("health", "--json")
    assert code == 0 and json.loads(out)["sources"]["shop2"]["refused"] == 9  # under the 10 minimum

    assert await s.post("/ipn/shop2", signed_body(ipn_fields("230209999"), secret="shop2-old-key")) == 400
    code, out = s.cli("health", "--json")
    report = json.loads(out)
    assert code == 1 and report["status"] == "degraded", out
    (problem,) = report["problems"]  # only shop2: the default source is fine
    fingerprint = hashlib.sha256(SHOP2_KEY.encode()).hexdigest()[:8]
    assert (problem["kind"], problem["source"], problem["refused"], problem["requests"], problem["reason"]) == (
        "source_rejecting",
        "shop2",
        10,
        10,
        "signature_mismatch",
    )
    assert f"tried current (fingerprint {fingerprint})" in problem["detail"]
    assert "2Checkout retries a refused notification for 48 h" in problem["message"]
    code, out = s.cli("health")
    assert out.splitlines()[1].startswith("  source_rejecting  source shop2 refusing notifications: 10 of 10 ")

    # the key is fixed on 2Checkout's side: 4 accepted are not yet a recovery, the 5th is
    for i in range(4):
        assert await s.post("/ipn/shop2", signed_body(ipn_fields(f"2304{i:05d}"), secret=SHOP2_KEY)) == 200
    code, out = s.cli("health", "--json")
    assert code == 1 and json.loads(out)["problems"][0]["accepted_since_last"] == 4
    assert await s.post("/ipn/shop2", signed_body(ipn_fields("230409999"), secret=SHOP2_KEY)) == 200
    code, out = s.cli("health", "--json")
    assert code == 0 and json.loads(out)["problems"] == [], out
    # the refusal keys are bounded
    assert 0 < await redis.pttl(k.source_lastrej("shop2")) <= k.SOURCE_LASTREJ_TTL_MS

    # a URL the source cannot verify fails 2Checkout's URL check; one it can passes
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{s.base}/ins/shop2") as resp:
            assert resp.status == 404 and "cannot verify INS" in await resp.text()
        async with http.get(f"{s.base}/ipn/shop2") as resp:
            assert resp.status == 200


async def test_resends_are_not_accepted_notifications_of_a_refusing_source(
    stack: Callable[..., Any], redis: Redis
) -> None:
    """An operator's resends are not 2Checkout's requests: they neither dilute a source's refused share
    nor count toward the 5 accepted in a row that end its incident (only 2Checkout can end it)."""
    sources = [
        {"name": "default", "secret_key_env": "TCO_SECRET_KEY"},
        {"name": "shop2", "secret_key_env": "SHOP2_KEY"},
    ]
    s: Stack = await stack({"erp": Endpoint()}, sources=sources)
    assert await s.post("/ipn/shop2", signed_body(ipn_fields("230500001"), secret=SHOP2_KEY)) == 200
    code, out = s.cli("notifications", "list", "--source", "shop2", "--json")
    (original,) = [item["id"] for item in json.loads(out)["items"]]
    for i in range(10):
        assert await s.post("/ipn/shop2", signed_body(ipn_fields(f"2305{i:05d}"), secret="shop2-old-key")) == 400
    for _ in range(4):  # the operator resends the one notification that got through
        code, out = s.cli("resend", original, "--yes")
        assert code == 0, out
    code, out = s.cli("health", "--json")
    report = json.loads(out)
    row = report["sources"]["shop2"]
    assert (row["refused"], row["accepted"], row["requests"], row["accepted_since_last"]) == (10, 1, 11, 0), row
    assert code == 1 and [p["kind"] for p in report["problems"]] == ["source_rejecting"], out
    # the opposite: 5 notifications 2Checkout sends with the right key do end it
    for i in range(5):
        assert await s.post("/ipn/shop2", signed_body(ipn_fields(f"2306{i:05d}"), secret=SHOP2_KEY)) == 200
    code, out = s.cli("health", "--json")
    assert code == 0 and json.loads(out)["sources"]["shop2"]["accepted_since_last"] == 5, out


async def test_unknown_names_in_list_filters_are_errors(stack: Callable[..., Any]) -> None:
    s: Stack = await stack({"erp": Endpoint()})
    code, out = s.cli("notifications", "list", "--endpoint", "erpp")
    assert code == 2 and "'erpp'" in out and "is not a configured endpoint (known: erp)" in out
    status, body = await s.get_json("/api/notifications?source=shopp")
    assert status == 400 and "is not a configured source (known: default)" in body["error"]
    status, body = await s.get_json("/api/notifications?endpoint=erp")  # the opposite: a known name
    assert status == 200 and body["items"] == []


def _series(text: str) -> list[str]:
    return sorted(line for line in text.splitlines() if line.startswith("relay_notifications_"))


async def test_both_listeners_serve_the_same_metrics(tmp_path: Path, redis_server: RedisServer, redis: Redis) -> None:
    for public_metrics in (True, False):
        public, admin = free_port(), free_port()
        config = write_config(
            tmp_path / "relay.toml",
            admin={"port": admin},
            extra=f"[server]\nport = {public}\npublic_metrics = {str(public_metrics).lower()}\n",
        )
        proc = RelayProcess(config, redis_server.url, "serve")
        try:

            async def up(port: int = admin) -> bool:
                try:
                    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(up, timeout=30, interval=0.1)
            await wait_for(lambda port=public: up(port), timeout=30, interval=0.1)
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    f"http://127.0.0.1:{public}/ipn", data=signed_body(ipn_fields()), headers=FORM
                ) as resp:
                    assert resp.status == 200
                async with http.get(f"http://127.0.0.1:{admin}/metrics") as resp:
                    admin_text = await resp.text()
                async with http.get(f"http://127.0.0.1:{public}/metrics") as resp:
                    public_status, public_text = resp.status, await resp.text()
            assert (
                'relay_notifications_accepted_total{channel="ipn",duplicate="false",source="default"} 1.0' in admin_text
            )
            if public_metrics:
                assert public_status == 200 and _series(public_text) == _series(admin_text)
            else:
                assert public_status == 404
        finally:
            proc.stop()
        await redis.flushall()


async def test_receipt_to_delivered_buckets_reach_48_hours(
    redis: Redis, tmp_path: Path, redis_server: RedisServer
) -> None:
    from relay.web.delivery_metrics import DeliveryCollector

    await redis.hset(k.STATS, mapping={f"erp|r2d|{k.R2D_FIELD}13": 2, "erp|r2d|3": 1, "erp|r2d|12": 1})
    collector = DeliveryCollector(["erp"])
    await collector.refresh(redis, 0)
    (family,) = [m for m in collector.collect() if m.name == "relay_delivery_receipt_to_delivered_seconds"]
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    assert buckets["172800.0"] == 3.0 and buckets["+Inf"] == 4.0  # the old +Inf one stays +Inf
    # the old <= 0.01 s one (LATENCY_BUCKETS[3]) counts where the new bounds hold it: <= 0.01 s
    assert buckets["0.01"] == 1.0 and buckets["43200.0"] == 1.0


def test_header_values_take_variables_anywhere(tmp_path: Path) -> None:
    from config.settings import ConfigError, load_settings

    path = write_config(
        tmp_path / "relay.toml",
        endpoints=[
            {
                "name": "erp",
                "url": "http://127.0.0.1:9/hook",
                "headers": {"Authorization": "Bearer ${ERP_TOKEN}", "X-Plain": "as is"},
            }
        ],
    )
    settings = load_settings(path, {**TEST_ENV, "ERP_TOKEN": "abc"})
    headers = settings.endpoints["erp"].headers
    assert headers["Authorization"].reveal() == "Bearer abc" and headers["X-Plain"].reveal() == "as is"
    with pytest.raises(
        ConfigError, match="headers.Authorization = 'ERP_TOKEN': environment variable ERP_TOKEN is not set"
    ):
        load_settings(path, TEST_ENV)

"""One clock, Redis's: workers and an ingress whose clocks are 10 minutes off change nothing.

Real processes: two `relay worker`s, one of them under libfaketime (Debian's `faketime`) 10 minutes
fast or slow, and a `relay serve` (in one case itself 10 minutes fast). libfaketime shifts only the
wall clock here (FAKETIME_DONT_FAKE_MONOTONIC=1): timeouts and the event loop run on the monotonic
clock, as on a machine whose NTP is off.

Before the scripts took Redis's TIME, a worker 10 minutes fast expired every other worker's leases
as it claimed and sent live deliveries again (156 of them twice in one run), and an ingress 10
minutes fast scored its fan-out jobs in the future (none of 1,200 delivered within 35 s).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from relay import constants as k
from relay.store.ingest import notification_id
from tests.procs import RelayProcess
from tests.support import RedisServer, free_port, ipn_fields, signed_body, write_config

pytestmark = pytest.mark.slow  # real processes under faketime (~1 min here): make test, not make check


@pytest.fixture(autouse=True)
def faketime_installed() -> None:
    # a missing faketime fails the test rather than skipping it: a skip would let `make test` pass
    # on a machine where the clock promise was never checked (`make install-test` installs it)
    if shutil.which("faketime") is None:
        pytest.fail(
            "tests/test_clock_skew.py needs Debian's faketime: run scripts/ensure-faketime "
            "(or apt-get install faketime)"
        )


def skewed(offset: str) -> tuple[str, ...]:
    return ("env", "FAKETIME_DONT_FAKE_MONOTONIC=1", "faketime", "-f", offset)


N = 60
RETRIES = [0.05, 0.05, *[0.5] * 30]
DEADLINE_S = 150
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class Endpoint:
    """Records, per delivery (webhook-id), overlapping attempts and 200 answers. The first attempt of
    every third notification fails with 500, and answers take up to 0.3 s, so retries and leases both
    come into play."""

    def __init__(self) -> None:
        self.in_flight: Counter[str] = Counter()
        self.overlaps: list[str] = []
        self.ok: Counter[str] = Counter()
        self.ok_order: dict[str, list[str]] = defaultdict(list)  # endpoint name -> nids answered 200
        self.attempts: dict[str, list[str]] = defaultdict(list)
        self.port = free_port()
        self.rand = random.Random(7)

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        wid = request.headers["webhook-id"]
        attempt = request.headers["Relay-Attempt"]
        self.attempts[wid].append(attempt)
        self.in_flight[wid] += 1
        if self.in_flight[wid] > 1:
            self.overlaps.append(wid)
        try:
            await asyncio.sleep(self.rand.random() * 0.3)
            nid = request.headers["Relay-Notification-Id"]
            if attempt == "1" and int(nid.split("_")[1][:6], 16) % 3 == 0:
                return web.Response(status=500)
            self.ok[wid] += 1
            self.ok_order[request.match_info["name"]].append(nid)
            return web.Response(text="ok")
        finally:
            self.in_flight[wid] -= 1

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    ep = Endpoint()
    app = web.Application()
    app.add_routes([web.post("/{name}", ep.handle)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", ep.port).start()
    yield ep
    await runner.cleanup()


async def post_all(port: int) -> list[str]:
    nids = []
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 30
        while True:  # wait for the listener
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientError:
                assert time.monotonic() < deadline, "relay serve did not start"
                await asyncio.sleep(0.1)
        for i in range(N):
            body = signed_body(ipn_fields(f"5{i:05d}"))
            async with http.post(f"http://127.0.0.1:{port}/ipn", data=body, headers=FORM) as resp:
                assert resp.status == 200, await resp.text()
            nids.append(notification_id("default", "ipn", body))
    return nids


async def delivered(redis: Redis, nids: list[str], eps: tuple[str, ...]) -> int:
    async with redis.pipeline(transaction=False) as pipe:
        for nid in nids:
            for ep in eps:
                pipe.hget(k.delivery(nid, ep), "state")
        states = await pipe.execute()
    return sum(s == b"delivered" for s in states)


async def run(
    tmp_path: Path, redis_server: RedisServer, endpoint: Endpoint, *, worker_skew: str | None, ingress_skew: str | None
) -> float:
    """Post N notifications; returns the seconds until every delivery was made."""
    port = free_port()
    config = write_config(
        tmp_path / "relay.toml",
        extra=f"[server]\nport = {port}\n",
        endpoints=[
            # generous retries: a loaded machine may refuse or time out a few connections, and the
            # test is about clocks, not speed
            {"name": "serial", "url": endpoint.url("serial"), "timeout": 5, "retry_delays": RETRIES},
            {
                "name": "conc",
                "url": endpoint.url("conc"),
                "timeout": 5,
                "concurrent": True,
                "max_in_flight": 4,
                "retry_delays": RETRIES,
            },
        ],
    )
    procs = [
        RelayProcess(config, redis_server.url, "serve", prefix=skewed(ingress_skew) if ingress_skew else ()),
        RelayProcess(config, redis_server.url, "worker"),
    ]
    if worker_skew:
        procs.append(RelayProcess(config, redis_server.url, "worker", prefix=skewed(worker_skew)))
    redis = Redis.from_url(redis_server.url)
    try:
        await redis.flushall()
        started = time.monotonic()
        nids = await post_all(port)
        deadline = time.monotonic() + DEADLINE_S
        while await delivered(redis, nids, ("serial", "conc")) < 2 * N:
            assert time.monotonic() < deadline, f"deliveries stalled: {await _stalled(redis, nids)}"
            assert all(p.proc.poll() is None for p in procs), [p.output()[-2000:] for p in procs]
            await asyncio.sleep(0.1)
        took = time.monotonic() - started
        await asyncio.sleep(1.5)  # anything sent twice would arrive now
        assert not endpoint.overlaps, f"attempts of one delivery overlapped: {endpoint.overlaps[:5]}"
        twice = {wid: n for wid, n in endpoint.ok.items() if n > 1}
        assert not twice, f"{len(twice)} deliveries answered 200 more than once"
        assert len(endpoint.ok) == 2 * N
        assert endpoint.ok_order["serial"] == nids, "the serial endpoint got them out of receipt order"
        if worker_skew:
            # the skewed worker took part: it made some of the (logged) failed first attempts
            assert "delivery_attempt" in procs[-1].output()
        return took
    finally:
        for p in procs:
            p.stop()
        await redis.aclose()


async def _stalled(redis: Redis, nids: list[str]) -> list[object]:
    out: list[object] = [await redis.time()]
    for nid in nids:
        for ep in ("serial", "conc"):
            d = await redis.hgetall(k.delivery(nid, ep))
            if d.get(b"state") != b"delivered":
                out.append((nid, ep, d))
    return out[:6]


@pytest.mark.parametrize("skew", ["+10m", "-10m"])
async def test_a_worker_ten_minutes_off_sends_nothing_twice(
    tmp_path: Path, redis_server: RedisServer, endpoint: Endpoint, skew: str
) -> None:
    await run(tmp_path, redis_server, endpoint, worker_skew=skew, ingress_skew=None)


async def test_an_ingress_ten_minutes_fast_does_not_delay_fanout(
    tmp_path: Path, redis_server: RedisServer, endpoint: Endpoint
) -> None:
    took = await run(tmp_path, redis_server, endpoint, worker_skew=None, ingress_skew="+10m")
    assert took < DEADLINE_S  # (run() already failed past it; 10 minutes late would be 600 s)


@pytest.mark.parametrize("skew", ["+10m", "-10m"])
async def test_health_run_ten_minutes_off_judges_by_redis_clock(
    tmp_path: Path, redis_server: RedisServer, skew: str
) -> None:
    # a worker's heartbeat is scored on Redis's clock; `relay health` (or /api/health) on a machine
    # whose clock is 10 minutes fast judged it 10 minutes old and reported no live worker
    import json
    import os
    import subprocess
    import sys

    from tests.support import TEST_ENV

    config = write_config(tmp_path / "relay.toml", redis_port=redis_server.port)
    redis = Redis.from_url(redis_server.url)
    try:
        sec, usec = await redis.time()
        await redis.zadd(k.WORKERS, {"w-live": sec * 1000 + usec // 1000})
    finally:
        await redis.aclose()
    env = {**os.environ, **TEST_ENV, "REDIS_URL": redis_server.url}
    proc = subprocess.run(
        [*skewed(skew), sys.executable, "-m", "relay", "--config", str(config), "health", "--json"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert proc.stdout, proc.stderr.decode()[-2000:]
    report = json.loads(proc.stdout)
    kinds = [p["kind"] for p in report["problems"]]
    assert "no_worker" not in kinds, (report["problems"], report["workers"], proc.stderr.decode()[-2000:])


async def test_a_process_ten_minutes_slow_still_reports_its_config_hash(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # relay:procs entries are judged alive on Redis's clock (health's config.hashes); a worker that
    # stamped them with its own clock, 10 minutes slow, looked dead and its config went unchecked
    from config.settings import load_settings
    from relay.store.connection import clock_ms
    from relay.store.stats import health_report
    from tests.support import TEST_ENV

    config = write_config(tmp_path / "relay.toml", redis_port=redis_server.port)
    settings = load_settings(config, {**TEST_ENV, "REDIS_URL": redis_server.url})
    worker = RelayProcess(config, redis_server.url, "worker", prefix=skewed("-10m"))
    redis = Redis.from_url(redis_server.url)
    try:
        deadline = time.monotonic() + 60
        while not await redis.hlen(k.PROCS):
            assert time.monotonic() < deadline and worker.proc.poll() is None, worker.output()[-2000:]
            await asyncio.sleep(0.1)
        report = await health_report(redis, settings, await clock_ms(redis))
        assert report["config"]["hashes"], (report["config"], await redis.hgetall(k.PROCS))
    finally:
        await redis.aclose()
        worker.stop()


async def test_an_ingress_ten_minutes_fast_files_refusals_and_counts_workers_on_redis_clock(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # Before: refusal.lua took its time (and the per-minute counter's minute) from the ingress's clock,
    # so an ingress 10 minutes fast filed its refusals 10 minutes in the future, outside the window
    # health reads on Redis's clock, and source_rejecting never rose; and /metrics counted heartbeats
    # (scored on Redis's clock) against the ingress's own, reporting 0 live workers.
    from config.settings import load_settings
    from relay.store.connection import clock_ms
    from relay.store.stats import health_report
    from tests.support import TEST_ENV

    port = free_port()
    config = write_config(
        tmp_path / "relay.toml", redis_port=redis_server.port, extra=f"[server]\nport = {port}\npublic_metrics = true\n"
    )
    settings = load_settings(config, {**TEST_ENV, "REDIS_URL": redis_server.url})
    serve = RelayProcess(config, redis_server.url, "serve", prefix=skewed("+10m"))
    redis = Redis.from_url(redis_server.url)
    try:
        await redis.flushall()
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 60
            while True:
                assert time.monotonic() < deadline and serve.proc.poll() is None, serve.output()[-2000:]
                try:
                    async with http.get(f"{base}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            for i in range(12):  # signed with the wrong key: refused, and counted for health
                body = signed_body(ipn_fields(f"77{i:05d}"), secret="not-the-key")
                async with http.post(f"{base}/ipn", data=body, headers=FORM) as r:
                    assert r.status == 400, await r.text()
            now = await clock_ms(redis)
            await redis.zadd(k.WORKERS, {"w-live": now})  # a heartbeat, as a worker writes it
            report = await health_report(redis, settings, now)
            kinds = [p["kind"] for p in report["problems"]]
            assert "source_rejecting" in kinds, (report["problems"], serve.output()[-2000:])
            last_at = int(await redis.hget(k.source_lastrej("default"), "at"))
            assert abs(last_at - now) < 60_000  # Redis's time, not the ingress's (10 min ahead)
            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
            assert "relay_workers_alive 1.0" in text, [line for line in text.splitlines() if "workers" in line]
    finally:
        await redis.aclose()
        serve.stop()

"""Operator control: pause and resume, retry now, cancel, and the audit log, across two workers."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from arq.worker import Worker
from redis.asyncio import Redis

from config.settings import Settings
from relay import constants as k
from relay.server import create_app
from relay.store import audit
from relay.store.control import Control
from relay.store.queries import Conflict
from tests.cli import Done, run_cli
from tests.procs import RelayProcess
from tests.support import RedisServer, wait_for
from tests.test_delivery import delivery, ep, in_state, post
from tests.test_reload import rewrite

ORIGIN = audit.Origin("api", "127.0.0.9")


@pytest.fixture
async def workers(start_worker: Callable[..., Worker]) -> AsyncIterator[Callable[..., Any]]:
    started: list[Worker] = []

    async def start(settings: Settings, n: int = 2) -> None:
        for _ in range(n):
            started.append(start_worker(settings, ctx={"worker_name": f"w{len(started)}"}))

    yield start


def cli(settings: Settings, *args: str) -> Done:
    """``relay`` run in the test process (tests/cli.py): what it prints and its exit code."""
    return run_cli("--config", str(settings.config_path), *args, redis_url=settings.redis_url or "")


def refs(sink: Any) -> list[int]:
    return [int(r.body.split(b"REFNO=")[1].split(b"&")[0]) for r in sink.received]


async def states(redis: Redis, nids: list[str], name: str) -> list[str]:
    return [(await delivery(redis, nid, name)).get("state", "") for nid in nids]


@pytest.mark.slow  # two real worker processes (~17 s here): in make test, not in make check
async def test_pause_during_a_serial_backlog_then_resume_keeps_order_across_two_worker_processes(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    sink: Callable[..., Any],
    redis: Redis,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    s = await sink(delay=0.3)
    settings = make_settings(endpoints=[ep("serial", s)])
    client: TestClient = await aiohttp_client(create_app(settings))
    procs = [RelayProcess(settings.config_path, redis_server.url, "worker") for _ in range(2)]
    try:
        nids = [await post(client, str(i)) for i in range(40)]
        await wait_for(lambda: len(s.received) >= 3, 30)
        out = await asyncio.to_thread(cli, settings, "endpoints", "pause", "serial", "--yes")
        assert out.returncode == 0 and "paused serial" in out.stdout, out.stderr
        # what was in flight finishes; then nothing more is sent, by either worker
        await wait_for(lambda: _no_in_flight(redis, "serial"), 10)
        sent = len(s.received)
        await asyncio.sleep(1.0)
        assert len(s.received) == sent < 40
        waiting = await states(redis, nids[sent:], "serial")
        assert set(waiting) == {"paused"}, waiting
        # new work waits as paused too, and --state paused lists it
        late = await post(client, "40")
        nids.append(late)
        await wait_for(lambda: in_state(redis, late, "serial", "paused"), 15)
        listed = await asyncio.to_thread(
            cli,
            settings,
            "notifications",
            "list",
            "--endpoint",
            "serial",
            "--state",
            "paused",
            "--limit",
            "500",
            "--json",
        )
        assert {item["id"] for item in json.loads(listed.stdout)["items"]} == set(nids[sent:])
        shown = await asyncio.to_thread(cli, settings, "endpoints", "list", "--json")
        row = json.loads(shown.stdout)[0]
        assert row["paused"] and row["paused_by"].startswith("cli (") and row["paused_deliveries"] == 41 - sent
        out = await asyncio.to_thread(cli, settings, "endpoints", "resume", "serial", "--yes")
        assert out.returncode == 0 and f"resumed serial: {41 - sent} deliveries" in out.stdout, out.stderr
        for nid in nids:
            await wait_for(lambda nid=nid: in_state(redis, nid, "serial", "delivered"), 30)
    finally:
        for p in procs:
            p.stop()
    assert refs(s) == list(range(41))  # each once, in receipt order, across the pause and both workers
    assert s.max_in_flight == 1
    assert int((await delivery(redis, nids[-2], "serial"))["paused_ms"]) >= 1000
    pause, resume = (await audit.read(redis, action="pause"))[0], (await audit.read(redis, action="resume"))[0]
    assert pause["count"] == 40 - sent and pause["via"] == "cli" and resume["count"] == 41 - sent


async def _no_in_flight(redis: Redis, name: str) -> bool:
    return not await redis.zcard(k.ep_state(name, "in_flight"))


async def test_paused_time_does_not_count_against_the_retry_window(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    sink: Callable[..., Any],
    redis: Redis,
    workers: Callable[..., Any],
) -> None:
    s = await sink([500, 500, 200])
    # a 1.8 s window: the pause below is longer than that
    settings = make_settings(
        endpoints=[{"name": "x", "url": s.url, "timeout": 2}],
        delivery={"retry_delays": [0.2], "retry_every": 0.2, "retry_window_hours": 0.0005, "jitter": 0},
    )
    client: TestClient = await aiohttp_client(create_app(settings))
    await workers(settings)
    control = Control(redis, settings)
    nid = await post(client, "1")
    await wait_for(lambda: len(s.received) == 1, 15)
    await control.pause("x", ORIGIN)
    await wait_for(lambda: in_state(redis, nid, "x", "paused"), 10)
    await asyncio.sleep(2.5)
    assert len(s.received) == 1
    result = await control.resume("x", ORIGIN)
    assert result["count"] == 1
    await wait_for(lambda: in_state(redis, nid, "x", "delivered"), 15)
    assert len(s.received) == 3  # the second 500 was retried, not given up: the pause did not count


async def test_retry_now_skips_the_backoff_and_keeps_serial_order(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    sink: Callable[..., Any],
    redis: Redis,
    workers: Callable[..., Any],
) -> None:
    conc, serial = await sink(), await sink()
    for target in (conc, serial):
        target.script = [503]
    settings = make_settings(
        endpoints=[
            ep("conc", conc, concurrent=True, retry_delays=[60, 60]),
            ep("serial", serial, retry_delays=[60, 60]),
        ]
    )
    client: TestClient = await aiohttp_client(create_app(settings))
    await workers(settings)
    nids = [await post(client, str(i)) for i in range(3)]
    await wait_for(lambda: _count(redis, "conc", "retrying", 3), 15)
    await wait_for(lambda: in_state(redis, nids[0], "serial", "retrying"), 15)
    conc.script, serial.script = [200], [200]
    started = time.monotonic()
    # the whole endpoint: a bulk action, confirmed with --yes
    out = await asyncio.to_thread(cli, settings, "retry", "--endpoint", "conc")
    assert out.returncode == 2 and "retries 3 deliveries" in out.stderr, out.stderr
    out = await asyncio.to_thread(cli, settings, "retry", "--endpoint", "conc", "--yes", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["count"] == 3, out.stderr
    # one delivery of a serial endpoint: its head goes first, then the rest in order
    out = await asyncio.to_thread(cli, settings, "retry", nids[2], "--endpoint", "serial", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["endpoints"] == {"serial": 1}, out.stderr
    for nid in nids:
        await wait_for(lambda nid=nid: in_state(redis, nid, "conc", "delivered"), 15)
        await wait_for(lambda nid=nid: in_state(redis, nid, "serial", "delivered"), 15)
    assert time.monotonic() - started < 60  # well before the 60 s backoff would have ended
    assert refs(serial) == [0, 0, 1, 2]
    entries = await audit.read(redis, action="retry")
    assert [(e["target"], e["count"]) for e in entries] == [(f"{nids[2]}:serial", 1), ("conc", 3)]
    out = await asyncio.to_thread(cli, settings, "retry", nids[0], "--endpoint", "conc")
    assert out.returncode == 1 and "is delivered, not retrying" in out.stderr and "Traceback" not in out.stderr


async def _count(redis: Redis, name: str, state: str, n: int) -> bool:
    return bool(await redis.zcard(k.ep_state(name, state)) == n)


async def test_cancel_a_waiting_delivery_then_resend_it(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    sink: Callable[..., Any],
    redis: Redis,
    workers: Callable[..., Any],
) -> None:
    s = await sink([500])
    settings = make_settings(endpoints=[ep("x", s, retry_delays=[60])])
    client: TestClient = await aiohttp_client(create_app(settings))
    await workers(settings)
    head, second = await post(client, "1"), await post(client, "2")
    await wait_for(lambda: in_state(redis, head, "x", "retrying"), 15)
    assert (await delivery(redis, second, "x"))["state"] == "pending"
    out = await asyncio.to_thread(cli, settings, "cancel", second, "--endpoint", "x")
    assert out.returncode == 0 and f"{second}: cancelled to x" in out.stdout, out.stderr
    d = await delivery(redis, second, "x")
    assert d["state"] == "cancelled" and d["cancelled_by"].startswith("cli (") and int(d["cancelled_at"]) > 0
    # without --endpoint: every waiting delivery of the notification (the retrying head here)
    result = await Control(redis, settings).cancel(head, ORIGIN)
    assert result == {**result, "cancelled": ["x"], "by": "api (127.0.0.9)"}
    assert not await redis.zcard(k.ep_queue("x"))
    assert await redis.zcard(k.ep_state("x", "cancelled")) == 2 and not await redis.zcard(k.ep_state("x", "failed"))
    with pytest.raises(Conflict, match="already cancelled"):
        await Control(redis, settings).cancel(head, ORIGIN, endpoint="x")
    out = await asyncio.to_thread(cli, settings, "cancel", head, "--endpoint", "nope")
    # an unknown name is a usage error, as in every command (README, "Command line")
    assert out.returncode == 2 and "--endpoint 'nope': is not a configured endpoint" in out.stderr
    listed = await asyncio.to_thread(
        cli, settings, "notifications", "list", "--state", "cancelled", "--endpoint", "x", "--json"
    )
    assert {i["id"] for i in json.loads(listed.stdout)["items"]} == {head, second}
    # a cancelled delivery can be resent later
    s.script = [200]
    out = await asyncio.to_thread(cli, settings, "resend", second, "--endpoint", "x")
    assert out.returncode == 0, out.stderr
    await wait_for(lambda: len(s.received) >= 2 and b"REFNO=2" in s.received[-1].body, 15)
    entries = await audit.read(redis)
    assert [e["action"] for e in entries[:3]] == ["resend", "cancel", "cancel"]
    assert entries[0]["count"] == 1 and entries[0]["via"] == "cli"
    out = await asyncio.to_thread(cli, settings, "audit", "--action", "cancel")
    assert out.returncode == 0 and out.stdout.count(" cancel ") == 2 and "api (127.0.0.9)" in out.stdout


async def test_retry_and_resume_refusals(
    make_settings: Callable[..., Settings], sink: Callable[..., Any], redis: Redis
) -> None:
    s = await sink()
    settings = make_settings(endpoints=[ep("x", s)])
    control = Control(redis, settings)
    with pytest.raises(Conflict, match="not paused"):
        await control.resume("x", ORIGIN)
    await control.pause("x", ORIGIN)
    again = await control.pause("x", ORIGIN)
    assert again["already"] and again["paused_by"] == "api (127.0.0.9)"
    with pytest.raises(Conflict, match="is paused: resume it first"):
        await control.retry(ORIGIN, endpoint="x")
    out = await asyncio.to_thread(cli, settings, "retry")
    assert out.returncode == 2 and "name a notification ID, --endpoint, or both" in out.stderr
    out = await asyncio.to_thread(cli, settings, "audit", "--limit", "0")
    assert out.returncode == 2 and "--limit '0'" in out.stderr


async def test_the_audit_log_is_bounded(redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(k, "AUDIT_CAP", 5)
    for i in range(12):
        await audit.record(redis, audit.entry("reload", ORIGIN, target="config", count=i))
    assert await redis.llen(k.AUDIT) == 5
    assert [e["count"] for e in await audit.read(redis, limit=10)] == [11, 10, 9, 8, 7]


async def test_health_shows_a_pause_and_its_age_and_disagreeing_configs(
    make_settings: Callable[..., Settings], sink: Callable[..., Any], redis: Redis
) -> None:
    from relay.store.stats import health_report

    s = await sink()
    settings = make_settings(endpoints=[ep("x", s)], extra="[health]\nmax_pause_hours = 0.001\n")
    await Control(redis, settings).pause("x", ORIGIN)
    now = int(time.time() * 1000)
    await redis.hset(
        k.PROCS,
        mapping={
            "a:1": json.dumps({"role": "worker", "hash": "aaa", "seen": now}),
            "b:2": json.dumps({"role": "serve", "hash": "bbb", "seen": now}),
            "gone:3": json.dumps({"role": "serve", "hash": "ccc", "seen": now - 60_000}),
        },
    )
    report = await health_report(redis, settings, now + 1000)
    row = report["endpoints"]["x"]
    assert row["paused"] and row["paused_by"] == "api (127.0.0.9)" and 0 < row["paused_age_s"] < 60
    # paused, not failing, and not yet for too long (no worker runs here, which is a problem of its own)
    assert not [p for p in report["problems"] if p.get("endpoint") == "x"]
    assert report["config"] == {"agree": False, "hashes": {"aaa": ["a:1"], "bbb": ["b:2"]}}
    assert any("different configs" in w for w in report["warnings"])
    report = await health_report(redis, settings, now + 10_000)  # past 0.001 h = 3.6 s
    paused = [p for p in report["problems"] if p["kind"] == "endpoint_paused"]
    assert paused and paused[0]["endpoint"] == "x" and paused[0]["paused_by"] == "api (127.0.0.9)"


async def test_endpoint_actions_by_the_cli_name_what_the_workers_run_whatever_the_file_says(
    make_settings: Callable[..., Settings],
    sink: Callable[..., Any],
    redis: Redis,
    redis_server: RedisServer,
    workers: Callable[..., Any],
) -> None:
    """``relay endpoints pause|resume NAME``, ``relay retry --endpoint NAME`` and ``relay endpoints list``
    read the caller's config file only: with the file edited (the endpoint renamed) and not yet reloaded,
    the endpoint the workers still run could not be paused, resumed or retried (exit 2, 'not a configured
    endpoint') and was missing from the list, while ``retry ID --endpoint`` and ``cancel`` accepted it.
    They ask the registry (relay:endpoints) as the actions do; a name neither has is still exit 2."""
    s = await sink()
    settings = make_settings(endpoints=[ep("billing", s)])
    await workers(settings, 1)
    await wait_for(lambda: redis.hexists(k.EP_REGISTRY, "billing"), 15)
    edited = rewrite(settings, [ep("billing-v2", s)], redis_server.url)  # not reloaded
    out = await asyncio.to_thread(cli, edited, "retry", "--endpoint", "billing", "--yes", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["count"] == 0, out.stderr
    out = await asyncio.to_thread(cli, edited, "endpoints", "pause", "billing", "--yes", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["paused"], out.stderr
    assert await redis.hexists(k.PAUSED, "billing")
    out = await asyncio.to_thread(cli, edited, "endpoints", "list", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["endpoint"]: r for r in json.loads(out.stdout)}
    assert rows["billing"]["paused"] and not rows["billing-v2"]["paused"], out.stdout
    out = await asyncio.to_thread(cli, edited, "endpoints", "resume", "billing", "--json")
    assert out.returncode == 0 and not json.loads(out.stdout)["paused"], out.stderr
    assert not await redis.hexists(k.PAUSED, "billing")
    # a pause cut short (its first page only) leaves work pending under the flag: the list counts it as
    # waiting too (it said 100 of 250 in a fault run: only what waited as paused)
    await redis.hset(k.PAUSED, "billing", json.dumps({"at": 1, "by": "cli"}))
    await redis.zadd(k.ep_state("billing", "paused"), {"p1": 1})
    await redis.zadd(k.ep_state("billing", "pending"), {"n1": 1, "n2": 2})
    out = await asyncio.to_thread(cli, edited, "endpoints", "list")
    assert re.search(r"^billing\s+serial\s+paused\s+3\s", out.stdout, re.M), out.stdout
    await redis.delete(k.PAUSED, k.ep_state("billing", "paused"), k.ep_state("billing", "pending"))
    # a name no endpoint can have, from bytes that are not UTF-8 too (asking Redis about it raised)
    for bad in ("nowhere", "Bad Name", "\udcff"):
        for args in (
            ("endpoints", "pause", bad, "--yes"),
            ("retry", "--endpoint", bad, "--yes"),
            ("cancel", "ipn_" + "0" * 24, "--endpoint", bad),
        ):
            out = await asyncio.to_thread(cli, edited, *args)
            assert out.returncode == 2 and repr(bad) in out.stderr, (args, out.stderr)
            assert "billing, billing-v2" in out.stderr and "Traceback" not in out.stderr, out.stderr


async def test_resend_one_to_an_endpoint_the_workers_run_whatever_the_file_says(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    sink: Callable[..., Any],
    redis: Redis,
    redis_server: RedisServer,
    workers: Callable[..., Any],
) -> None:
    """``relay resend ID --endpoint E`` checked E against the caller's file alone (exit 2, 'not a
    configured endpoint') while the resend itself targets what the workers run: with the file edited
    and not yet reloaded, the endpoint they still send to could not be named."""
    s = await sink()
    settings = make_settings(endpoints=[ep("billing", s)])
    client: TestClient = await aiohttp_client(create_app(settings))
    await workers(settings, 1)
    nid = await post(client, "1")
    await wait_for(lambda: len(s.received) == 1, 15)
    edited = rewrite(settings, [ep("billing-v2", s)], redis_server.url)  # not reloaded
    out = await asyncio.to_thread(cli, edited, "resend", nid, "--endpoint", "billing", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["targets"] == ["billing"], out.stderr
    await wait_for(lambda: len(s.received) == 2, 15)
    out = await asyncio.to_thread(cli, edited, "resend", nid, "--endpoint", "\udcff")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    # and its deliveries can be listed by its name (it was 'not a configured endpoint' there too)
    out = await asyncio.to_thread(cli, edited, "notifications", "list", "--endpoint", "billing", "--json")
    assert out.returncode == 0 and nid in [i["id"] for i in json.loads(out.stdout)["items"]], out.stderr

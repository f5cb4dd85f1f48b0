# the workers fixture is imported from test_reload, so test arguments "redefine" it by design

"""Reloads and restarts while notifications flow (issue 21): routing never loses an acknowledged
notification, a removed endpoint's work ends cancelled however it was removed, and a process that
restarts itself keeps the configuration it last reloaded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp.test_utils import TestClient
from arq.worker import Worker
from redis.asyncio import Redis

from config.fingerprint import config_hash
from config.settings import Settings
from relay import constants as k
from relay.server import create_app
from relay.store import audit
from relay.store.reload import request_reload
from tests.cli import Done, run_cli
from tests.procs import RelayProcess
from tests.support import RedisServer, hold_fanout, release_fanout, wait_for, write_config
from tests.test_delivery import delivery, ep, in_state, post
from tests.test_reload import rewrite, workers  # noqa: F401  (a fixture, used by name)
from workers import jobs, retention

ORIGIN = audit.Origin("cli", "tester@test")
T = TypeVar("T")


async def _listening(redis: Redis, n: int) -> bool:
    return await redis.pubsub_numsub(k.RELOAD_CHANNEL) == [(k.RELOAD_CHANNEL.encode(), n)]


async def test_a_worker_that_restarts_after_a_redis_restart_keeps_the_endpoints_a_reload_added(
    aiohttp_client: Any, make_settings: Callable[..., Settings], sink: Callable[..., Any], tmp_path: Path
) -> None:
    server = RedisServer(appendonly=True).start()
    first, added = await sink(), await sink()
    extra = "[server]\nredis_timeout = 0.5\n"
    settings = make_settings(env={"REDIS_URL": server.url}, endpoints=[ep("first", first)], extra=extra)
    client: TestClient = await aiohttp_client(create_app(settings))
    worker = RelayProcess(settings.config_path, server.url, "worker")
    redis = Redis.from_url(server.url)
    try:
        await wait_for(lambda: _listening(redis, 1), 30)
        write_config(settings.config_path, endpoints=[ep("first", first), ep("added", added)], extra=extra)
        result = await request_reload(redis, ORIGIN)
        assert result["ok"] and result["answers"][0]["changes"]["added"] == ["added"], result
        await post(client, "1")
        await wait_for(lambda: len(added.received) == 1, 15)
        await redis.aclose()
        server.stop()
        # the worker must notice the lost connection before Redis is back (a wait, not a guessed sleep)
        await wait_for(lambda: "worker_redis_lost" in worker.output(), 30)
        server.start()
        redis = Redis.from_url(server.url)
        await post(client, "2")
        await wait_for(lambda: len(first.received) == 2, 30)
        await wait_for(lambda: len(added.received) == 2, 15)
    finally:
        worker.stop()
        await redis.aclose()
        server.cleanup()


# -- a removed endpoint's work ---------------------------------------------------------------------


def _cli(settings: Settings, *args: str) -> Done:
    """``relay`` run in the test process (tests/cli.py): what it prints and its exit code."""
    return run_cli("--config", str(settings.config_path), *args, redis_url=settings.redis_url or "")


async def _after_a_sweep(worker: Worker, check: Awaitable[T]) -> T:
    """``check`` after a sweep run now: the worker's cron runs one every 5 s (workers/settings.py), a
    wait a test need not sit through to see what a sweep does."""
    await jobs.sweep(worker.ctx)
    return await check


async def _lose_fanout_job(redis: Redis, nid: str) -> None:
    """As while a stalled worker holds its batch: the notification waits in relay:fanout, unrouted."""
    await hold_fanout(redis, nid)


async def test_a_rename_by_reload_leaves_a_cancelled_record_for_what_was_not_fanned_out_yet(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    sink: Callable[..., Any],
    redis: Redis,
    redis_server: RedisServer,
    workers: Callable[..., Any],
) -> None:
    """Acknowledged before a reload renamed its endpoint, fanned out after: a cancelled delivery to the
    old name (not nothing), selectable by that name to resend to the new one."""
    target = await sink()
    settings = make_settings(endpoints=[ep("billing", target)])
    client: TestClient = await aiohttp_client(create_app(settings))
    nid = await post(client, "1")
    await _lose_fanout_job(redis, nid)
    await workers(settings, 1)
    new = rewrite(settings, [ep("billing-v2", target)], redis_server.url)
    result = await request_reload(redis, ORIGIN)
    assert result["ok"] and result["answers"][0]["changes"]["removed"] == ["billing"], result
    await release_fanout(redis, nid)  # its lease lapses: a fan-out loop routes it
    d = await wait_for(lambda: _delivery(redis, nid, "billing"), 20)
    assert d["state"] == "cancelled" and "endpoint removed" in d["cancelled_by"], d
    assert await redis.zscore(k.ep_state("billing", "cancelled"), nid) is not None
    assert not await redis.exists(k.delivery(nid, "billing-v2")) and not target.received
    # the old name selects it, and a resend by that filter goes to the endpoint that receives it now
    out = await asyncio.to_thread(_cli, new, "notifications", "list", "--endpoint", "billing", "--json")
    assert out.returncode == 0 and [i["id"] for i in json.loads(out.stdout)["items"]] == [nid], out.stderr
    out = await asyncio.to_thread(
        _cli, new, "resend", "--endpoint", "billing", "--state", "cancelled", "--yes", "--json"
    )
    assert out.returncode == 0, out.stderr
    assert [r["targets"] for r in json.loads(out.stdout)["resends"]] == [["billing-v2"]], out.stdout
    await wait_for(lambda: len(target.received) == 1, 15)


async def test_what_an_endpoint_missed_while_removed_is_recorded_cancelled_after_its_re_add(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    sink: Callable[..., Any],
    redis: Redis,
    redis_server: RedisServer,
    workers: Callable[..., Any],
) -> None:
    """Received before the removal, fanned out after the re-add: the re-added endpoint gets only what
    came after it, so this one is recorded cancelled there rather than routed to nobody."""
    target = await sink()
    config = [ep("x", target)]
    settings = make_settings(endpoints=config)
    client: TestClient = await aiohttp_client(create_app(settings))
    nid = await post(client, "1")
    await _lose_fanout_job(redis, nid)
    await workers(settings, 1)
    rewrite(settings, [], redis_server.url)
    assert (await request_reload(redis, ORIGIN))["ok"]
    rewrite(settings, config, redis_server.url)
    assert (await request_reload(redis, ORIGIN))["ok"]
    await release_fanout(redis, nid)  # its lease lapses: a fan-out loop routes it
    d = await wait_for(lambda: _delivery(redis, nid, "x"), 20)
    assert d["state"] == "cancelled" and "endpoint removed" in d["cancelled_by"], d
    later = await post(client, "2")
    await wait_for(lambda: in_state(redis, later, "x", "delivered"), 15)
    assert len(target.received) == 1


async def _delivery(redis: Redis, nid: str, name: str) -> dict[str, str] | None:
    return (await delivery(redis, nid, name)) or None


async def test_remove_then_re_add_never_cancels_what_was_routed_after_the_re_add(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    sink: Callable[..., Any],
    redis: Redis,
    redis_server: RedisServer,
    workers: Callable[..., Any],
) -> None:
    slow = await sink(delay=1.5)
    config = [ep("x", slow, timeout=5)]
    settings = make_settings(endpoints=config)
    client: TestClient = await aiohttp_client(create_app(settings))
    await workers(settings, 1)
    first = await post(client, "0")
    await wait_for(lambda: len(slow.received) == 1 or slow.in_flight == 1, 10)
    rewrite(settings, [], redis_server.url)
    assert (await request_reload(redis, ORIGIN))["ok"]
    rewrite(settings, config, redis_server.url)
    assert (await request_reload(redis, ORIGIN))["ok"]
    slow.delay = 0  # the first request sleeps on; the later ones need not take 1.5 s each too
    # routed after the re-add, waiting behind one another while the removed lane's delivery drains
    later = [await post(client, str(i)) for i in range(1, 5)]
    for nid in later:
        await wait_for(lambda nid=nid: _final(redis, nid, "x"), 20)
    states = [(await delivery(redis, nid, "x"))["state"] for nid in later]
    assert states == ["delivered"] * 4, states
    assert (await delivery(redis, first, "x"))["state"] == "delivered"  # in flight at the removal: finished


async def _final(redis: Redis, nid: str, name: str) -> bool:
    return (await delivery(redis, nid, name)).get("state") in ("delivered", "cancelled", "failed")


async def test_a_dead_workers_delivery_to_a_removed_endpoint_is_cancelled_not_sent_when_re_added(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    sink: Callable[..., Any],
    redis: Redis,
    redis_server: RedisServer,
    workers: Callable[..., Any],
) -> None:
    hung = await sink([("hang",), 200])
    config = [ep("x", hung, timeout=1)]
    # the dead worker's claim waits out its lease: 2.5 s (timeout + margin), not the default 6 s
    short = {"lease_margin": 1.5}
    settings = make_settings(endpoints=config, delivery=short)
    client: TestClient = await aiohttp_client(create_app(settings))
    dead = RelayProcess(settings.config_path, redis_server.url, "worker")
    try:
        await wait_for(lambda: _listening(redis, 1), 30)
        nid = await post(client, "1")
        await wait_for(lambda: len(hung.received) == 1, 15)
        dead.kill()  # mid-delivery: its lease (timeout + lease_margin) has not run out yet
    finally:
        dead.stop()
    await redis.hdel(k.PROCS, *await redis.hkeys(k.PROCS))
    (worker,) = await workers(settings, 1)
    rewrite(settings, [], redis_server.url, delivery=short)
    assert (await request_reload(redis, ORIGIN))["ok"]
    rewrite(settings, config, redis_server.url, delivery=short)
    assert (await request_reload(redis, ORIGIN))["ok"]
    # cancelled by the first sweep after the dead worker's lease ran out
    d = await wait_for(lambda: _after_a_sweep(worker, in_state(redis, nid, "x", "cancelled")), 30, interval=0.2)
    assert "endpoint removed" in d["cancelled_by"], d
    later = await post(client, "2")
    await wait_for(lambda: in_state(redis, later, "x", "delivered"), 15)
    assert len(hung.received) == 2 and b"REFNO=2" in hung.received[1].body  # the first was never sent again
    assert not await redis.zcard(k.ep_lease("x")) and not await redis.zcard(k.ep_state("x", "in_flight"))


async def test_an_endpoint_removed_by_a_restart_ends_its_waiting_work_cancelled(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    sink: Callable[..., Any],
    redis: Redis,
    redis_server: RedisServer,
) -> None:
    keep, gone = await sink(), await sink([500])
    settings = make_settings(endpoints=[ep("keep", keep), ep("gone", gone, retry_delays=[60])])
    client: TestClient = await aiohttp_client(create_app(settings))
    worker = RelayProcess(settings.config_path, redis_server.url, "worker")
    try:
        nid = await post(client, "1")
        await wait_for(lambda: in_state(redis, nid, "gone", "retrying"), 30)
        worker.stop()
        write_config(settings.config_path, endpoints=[ep("keep", keep)])
        worker = RelayProcess(settings.config_path, redis_server.url, "worker")
        d = await wait_for(lambda: in_state(redis, nid, "gone", "cancelled"), 30)
        assert "endpoint removed" in d["cancelled_by"], d
        assert not await redis.zcard(k.ep_queue("gone"))
        record = json.loads(await redis.hget(k.EP_REMOVED, "gone"))
        assert record["by"] == "restart", record
        # the cancel's writes land before its log line: a stop in between (a loaded CI machine) cut
        # the start-up short and the line was never written, so wait for it rather than stop at once
        await wait_for(lambda: "endpoints_removed_at_start" in worker.output(), 30, what=worker.tail())
    finally:
        worker.stop()


async def test_a_reload_whose_cancel_fails_runs_the_new_config_says_so_and_finishes_later(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    sink: Callable[..., Any],
    redis: Redis,
    redis_server: RedisServer,
    workers: Callable[..., Any],
) -> None:
    keep, gone = await sink(), await sink([500])
    settings = make_settings(endpoints=[ep("keep", keep), ep("gone", gone, retry_delays=[60])])
    client: TestClient = await aiohttp_client(create_app(settings))
    await workers(settings, 1)
    nid = await post(client, "1")
    await wait_for(lambda: in_state(redis, nid, "gone", "retrying"), 15)
    # the removed endpoint's queue cannot be written: the reload's cancel fails half-way
    new = rewrite(settings, [ep("keep", keep)], redis_server.url)
    await redis.delete(k.ep_queue("gone"))
    await redis.set(k.ep_queue("gone"), "not a sorted set")
    result = await request_reload(redis, ORIGIN)
    answer = result["answers"][0]
    assert answer["outcome"] == "reloaded" and answer["hash"] == config_hash(new.file), answer
    assert "retried" in answer["error"] and not result["ok"], answer
    assert (await delivery(redis, nid, "gone"))["state"] == "retrying"
    await redis.delete(k.ep_queue("gone"))
    await wait_for(lambda: in_state(redis, nid, "gone", "cancelled"), 15)
    # the process runs, and reports, the new config: the same file again changes nothing
    again = await request_reload(redis, ORIGIN)
    assert again["answers"][0]["outcome"] == "unchanged" and again["ok"], again


def test_a_worker_refuses_to_start_with_retention_shorter_than_a_retry_schedule(tmp_path: Path) -> None:
    """A delivery retrying past retention would vanish with its notification instead of ending failed."""
    for delivery_conf, endpoint, named in [
        ({"retention_days": 1}, {}, ["delivery.retention_days = 1", "delivery.retry_window_hours = 48"]),
        (
            {"retention_days": 0.01, "retry_window_hours": 0.1},
            {"retry_delays": [600, 600]},
            ["endpoint 'x': retry_delays", "delivery.retention_days = 0.01"],
        ),
    ]:
        config = write_config(
            tmp_path / "relay.toml",
            delivery=delivery_conf,
            endpoints=[{"name": "x", "url": "http://127.0.0.1:9/hook", **endpoint}],
        )
        # refused before it starts anything: the command can run in the test process
        out = run_cli("--config", str(config), "worker", redis_url="redis://127.0.0.1:9/0")
        assert out.returncode == 2 and all(n in out.stderr for n in named), out.stderr
        assert "Traceback" not in out.stderr


async def test_a_re_added_endpoints_keys_lose_the_expiry_at_once(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    sink: Callable[..., Any],
    redis: Redis,
    redis_server: RedisServer,
    workers: Callable[..., Any],
) -> None:
    s = await sink([500])
    config = [ep("x", s, retry_delays=[60])]
    settings = make_settings(endpoints=config)
    client: TestClient = await aiohttp_client(create_app(settings))
    await workers(settings, 1)
    await post(client, "1")
    await wait_for(lambda: redis.zcard(k.ep_state("x", "retrying")), 15)
    removed = rewrite(settings, [], redis_server.url)
    assert (await request_reload(redis, ORIGIN))["ok"]
    # the sweeper's walk meets the removed name's keys and gives them the retention period
    walk = retention.Walk()
    for _ in range(3):
        await retention.expire_removed(redis, removed, walk)
    keys = [key async for key in redis.scan_iter(match=f"{k.EP_PREFIX}x:*") if b":m:" not in key]
    assert keys and all([await redis.pttl(key) > 0 for key in keys]), keys
    rewrite(settings, config, redis_server.url)
    assert (await request_reload(redis, ORIGIN))["ok"]
    assert [
        (key, await redis.pttl(key)) for key in keys if await redis.pttl(key) != -1 and await redis.exists(key)
    ] == []


async def test_a_resend_from_an_edited_file_not_yet_reloaded_targets_only_what_the_workers_run(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    sink: Callable[..., Any],
    redis: Redis,
    redis_server: RedisServer,
    workers: Callable[..., Any],
) -> None:
    """The CLI reads the file, which may be edited and not yet reloaded: an endpoint it adds is run by no
    worker, so a resend to it was queued, reported resent, and routed to nobody (no delivery, no
    record). A resend's targets are what the workers run (relay:endpoints)."""
    a, b = await sink(), await sink()
    settings = make_settings(endpoints=[ep("a", a)])
    client: TestClient = await aiohttp_client(create_app(settings))
    await workers(settings, 1)
    nid = await post(client, "1")
    await wait_for(lambda: len(a.received) == 1, 15)
    edited = rewrite(settings, [ep("a", a), ep("b", b)], redis_server.url)  # not reloaded
    out = await asyncio.to_thread(_cli, edited, "resend", nid, "--endpoint", "b", "--json")
    assert out.returncode == 2 and "'b'" in out.stderr and "relay reload" in out.stderr, (out.stdout, out.stderr)
    out = await asyncio.to_thread(_cli, edited, "resend", nid, "--json")
    assert out.returncode == 0, out.stderr
    resent = json.loads(out.stdout)
    assert resent["targets"] == ["a"], resent
    await wait_for(lambda: len(a.received) == 2, 15)
    assert not b.received


async def test_cancel_and_retry_by_the_cli_name_an_endpoint_the_workers_run_whatever_the_file_says(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    sink: Callable[..., Any],
    redis: Redis,
    redis_server: RedisServer,
    workers: Callable[..., Any],
) -> None:
    """The actions decide from Redis, so the CLI's own check must too: with the file edited to drop an
    endpoint and not yet reloaded, its waiting delivery could be neither retried nor cancelled by name
    (exit 2, 'not a configured endpoint') although the workers still send to it."""
    keep, busy = await sink(), await sink([500] * 10)
    settings = make_settings(endpoints=[ep("keep", keep), ep("busy", busy, retry_delays=[60, 60])])
    client: TestClient = await aiohttp_client(create_app(settings))
    await workers(settings, 1)
    nid = await post(client, "1")
    await wait_for(lambda: in_state(redis, nid, "busy", "retrying"), 15)
    edited = rewrite(settings, [ep("keep", keep)], redis_server.url)  # not reloaded
    out = await asyncio.to_thread(_cli, edited, "retry", nid, "--endpoint", "busy", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["endpoints"] == {"busy": 1}, out.stderr
    await wait_for(lambda: len(busy.received) == 2, 15)
    await wait_for(lambda: in_state(redis, nid, "busy", "retrying"), 15)
    out = await asyncio.to_thread(_cli, edited, "cancel", nid, "--endpoint", "busy", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["cancelled"] == ["busy"], out.stderr
    out = await asyncio.to_thread(_cli, edited, "cancel", nid, "--endpoint", "nowhere")
    assert out.returncode == 2 and "'nowhere'" in out.stderr, out.stderr


async def test_a_fan_out_while_a_reload_cannot_record_its_removal_still_leaves_a_cancelled_record(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    sink: Callable[..., Any],
    redis: Redis,
    redis_server: RedisServer,
    workers: Callable[..., Any],
) -> None:
    """A reload ran the new config first and recorded the removal after (a round trip later, or, when
    that failed, only once its background retry got through): a notification received before the
    reload and fanned out in between was routed to nobody, with no record. The worker holds the
    removal from the moment it stops running the endpoint."""
    target = await sink()
    settings = make_settings(endpoints=[ep("billing", target)])
    client: TestClient = await aiohttp_client(create_app(settings))
    nid = await post(client, "1")
    await _lose_fanout_job(redis, nid)
    await workers(settings, 1)
    await redis.delete(k.EP_REMOVED)
    await redis.set(k.EP_REMOVED, "not a hash")  # recording the removal fails until this is gone
    try:
        rewrite(settings, [ep("billing-v2", target)], redis_server.url)
        answer = (await request_reload(redis, ORIGIN))["answers"][0]
        assert answer["outcome"] == "reloaded" and "retried" in answer["error"], answer
        # the fan-out comes (its lease lapses), while the removal is not recorded
        await release_fanout(redis, nid)
        await wait_for(lambda: _routed(redis, nid), 15)
        d = await delivery(redis, nid, "billing")
        assert d.get("state") == "cancelled" and "endpoint removed" in d.get("cancelled_by", ""), d
    finally:
        await redis.delete(k.EP_REMOVED)
    # the removal is recorded once Redis lets it, and the record then decides
    await wait_for(lambda: redis.hexists(k.EP_REMOVED, "billing"), 15)
    assert not target.received


async def _routed(redis: Redis, nid: str) -> bool:
    return await redis.zscore(k.FANOUT, nid) is None

"""Reloading the config without a restart: in-process workers, then real worker processes under load."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from arq.worker import Worker
from redis.asyncio import Redis

from config.fingerprint import config_hash
from config.settings import Settings, load_settings
from relay import constants as k
from relay.server import create_app
from relay.store import audit
from relay.store.connection import clock_ms
from relay.store.ingest import notification_id
from relay.store.reload import Reloader, request_reload
from tests.cli import cli_async
from tests.procs import RelayProcess
from tests.support import (
    TEST_ENV,
    RedisServer,
    free_port,
    ipn_fields,
    signed_body,
    wait_for,
    write_config,
)
from tests.test_delivery import FORM, attempts, delivery, ep, in_state, post

ORIGIN = audit.Origin("cli", "tester@test")


@pytest.fixture
async def workers(
    redis: Redis, redis_server: RedisServer, start_worker: Callable[..., Worker]
) -> AsyncIterator[Callable[..., Any]]:
    started: list[Worker] = []

    async def start(settings: Settings, n: int) -> list[Worker]:
        new = []
        env = {**TEST_ENV, "REDIS_URL": redis_server.url}
        for _ in range(n):
            w = start_worker(
                settings,
                ctx={"worker_name": f"w{len(started)}", "load_settings": lambda path: load_settings(path, env)},
            )
            started.append(w)
            new.append(w)
        # each worker's reloader reports its hash once it runs: then it also listens
        await wait_for(lambda: _reported(redis, len(started)), 15)
        return new

    yield start


async def _reported(redis: Redis, n: int) -> bool:
    return len(await redis.hgetall(k.PROCS)) >= n and await redis.pubsub_numsub(k.RELOAD_CHANNEL) == [
        (k.RELOAD_CHANNEL.encode(), n)
    ]


def rewrite(settings: Settings, endpoints: list[dict[str, Any]], redis_url: str, **config: Any) -> Settings:
    """The config file rewritten with ``endpoints`` (and write_config's other sections from ``config``)."""
    path = write_config(settings.config_path, endpoints=endpoints, **config)
    return load_settings(path, {**TEST_ENV, "REDIS_URL": redis_url})


async def test_reload_adds_changes_and_removes_endpoints_in_two_workers(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    sink: Callable[..., Any],
    redis: Redis,
    redis_server: RedisServer,
    workers: Callable[..., Any],
) -> None:
    keep, old_url, new_url, gone, added = [await sink() for _ in range(5)]
    gone.script = [500]  # its work keeps waiting (retrying) until the reload removes it
    settings = make_settings(endpoints=[ep("keep", keep), ep("moved", old_url), ep("gone", gone, retry_delays=[30])])
    client: TestClient = await aiohttp_client(create_app(settings))
    await workers(settings, 2)
    before = await post(client, "1")
    await wait_for(lambda: len(keep.received) == 1 and len(old_url.received) == 1 and len(gone.received) == 1, 15)
    await wait_for(lambda: in_state(redis, before, "gone", "retrying"), 10)

    new = rewrite(settings, [ep("keep", keep), ep("moved", new_url), ep("added", added)], redis_server.url)
    result = await request_reload(redis, ORIGIN)
    assert result["ok"] and result["asked"] == 2 and result["answered"] == 2, result
    assert {a["outcome"] for a in result["answers"]} == {"reloaded"}
    assert {a["hash"] for a in result["answers"]} == {config_hash(new.file)}
    changes = result["answers"][0]["changes"]
    assert (changes["added"], changes["changed"], changes["removed"]) == (["added"], ["moved"], ["gone"])

    # the removed endpoint's waiting work is cancelled, never dropped, and says why
    d = await delivery(redis, before, "gone")
    assert d["state"] == "cancelled" and "endpoint removed" in d["cancelled_by"], d
    assert await redis.zscore(k.ep_state("gone", "cancelled"), before) is not None
    assert not await redis.zcard(k.ep_queue("gone"))
    # the new endpoint gets only what arrives after the reload; the changed one goes to its new URL
    after = await post(client, "2")
    await wait_for(lambda: len(added.received) == 1 and len(new_url.received) == 1 and len(keep.received) == 2, 15)
    assert b"REFNO=2" in added.received[0].body and len(old_url.received) == 1
    assert await redis.hget(k.notification(before), "eps") == b"keep,moved,gone"  # routed fan-out unchanged
    assert not await redis.exists(k.delivery(before, "added"))
    assert (await delivery(redis, after, "added"))["state"] == "delivered"
    entries = await audit.read(redis, action="reload")
    assert entries[0]["via"] == "cli" and entries[0]["address"] == "tester@test" and entries[0]["count"] == 2
    # and what the reload changed, in the keys an operator wrote
    assert entries[0]["changed"] == ["+endpoints.added", "-endpoints.gone", "endpoints.moved.url"], entries[0]
    assert result["answers"][0]["changed"] == entries[0]["changed"]
    cancels = await audit.read(redis, action="cancel")
    assert cancels and cancels[0]["target"] == "gone" and cancels[0]["reason"] == "endpoint removed"
    assert sum(e["count"] for e in cancels) == 1  # the second worker found nothing left to cancel


async def test_an_invalid_config_is_refused_and_the_old_one_stays(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    sink: Callable[..., Any],
    redis: Redis,
    workers: Callable[..., Any],
) -> None:
    s = await sink()
    settings = make_settings(endpoints=[ep("x", s)])
    client: TestClient = await aiohttp_client(create_app(settings))
    await workers(settings, 2)
    text = settings.config_path.read_text()
    settings.config_path.write_text(text.replace('name = "x"', 'name = "X Y"'))
    result = await request_reload(redis, ORIGIN)
    assert not result["ok"] and [a["outcome"] for a in result["answers"]] == ["refused", "refused"]
    assert all("the 1st [[endpoints]]: name" in a["error"] for a in result["answers"])
    assert {a["hash"] for a in result["answers"]} == {config_hash(settings.file)}
    # the old config is still in force
    await post(client, "1")
    await wait_for(lambda: len(s.received) == 1, 15)
    # the CLI prints each answer and the error, and exits 1
    good = ("--config", str(settings.config_path.with_name("good.toml")), "reload", "--wait", "5")
    out = await cli_async(*good, redis_url=settings.redis_url or "")
    assert out.returncode == 2 and "configuration file not found" in out.stderr  # its own config is read too
    settings.config_path.with_name("good.toml").write_text(text)
    out = await cli_async(*good, redis_url=settings.redis_url or "")
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout.count("refused") == 2 and "the 1st [[endpoints]]: name" in out.stdout
    assert "Traceback" not in out.stderr
    assert f"config {config_hash(settings.file)}" in out.stdout


async def test_a_process_not_subscribed_when_the_reload_is_published_reloads_once_it_subscribes(
    make_settings: Callable[..., Settings],
    sink: Callable[..., Any],
    redis: Redis,
    redis_server: RedisServer,
    workers: Callable[..., Any],
) -> None:
    """A reload published while a process is not subscribed (its pub/sub connection lost: a Redis
    restart, a failover) does not reach it: PUBLISH did not count it, so `relay reload` waited for the
    others only and exited 0 although it listed that process as not answering, and the process ran its
    old config until the next reload (a fault run: right after a Redis restart, 1 of 3 processes got it).
    Now it reloads once it subscribes again and answers, and a process that stays silent fails the
    reload (exit 1, 409), as documented."""
    s = await sink()
    settings = make_settings(endpoints=[ep("x", s)])
    await workers(settings, 2)
    new = rewrite(settings, [ep("x", s, timeout=7)], redis_server.url)
    # every pub/sub connection dropped: each reloader subscribes again after its backoff (0.5 s)
    for client in await redis.client_list(_type="pubsub"):
        await redis.client_kill_filter(_id=client["id"])
    result = await request_reload(redis, ORIGIN)
    assert result["asked"] == 0  # nobody subscribed at that moment: no answer was waited for
    # yet each process catches up as it subscribes again, and answers the request
    await wait_for(lambda: _hashes(redis, {config_hash(new.file)}, 2), 10, what="a process kept its old config")
    answers = await redis.lrange(k.reload_answers(result["id"]), 0, -1)
    assert sorted(json.loads(a)["outcome"] for a in answers) == ["reloaded", "reloaded"]
    # a worker whose loop starts again after a Redis outage has a new reloader: it answers too
    await workers(new, 1)
    await wait_for(lambda: _answers(redis, result["id"], 3), 5, what="a restarted reloader did not answer")
    # the next reload of the same file: all subscribed, unchanged, and the one answer each
    again = await request_reload(redis, ORIGIN)
    assert again["ok"] and again["asked"] == 3 and [a["outcome"] for a in again["answers"]] == ["unchanged"] * 3
    # each loss of the connection is a new outage: the reloaders subscribe again within their first
    # backoff every time (it doubled for a process's life: 0.5, 1, 2, 4, 8 s, deaf for longer each time)
    for _ in range(5):
        for client in await redis.client_list(_type="pubsub"):
            await redis.client_kill_filter(_id=client["id"])
        await wait_for(lambda: _subscribed(redis, 3), 2.5, what="a reloader waited longer after each lost connection")
    # a live process that does not answer (stopped here, its entry still fresh) fails the reload
    await redis.hset(k.PROCS, "gone:1", json.dumps({"role": "worker", "hash": "x", "seen": await clock_ms(redis)}))
    silent = await request_reload(redis, ORIGIN, wait_s=0.5)
    assert silent["silent"] == ["gone:1"] and not silent["ok"], silent


def _reloader(redis: Redis, settings: Settings, name: str, redis_url: str) -> Reloader:
    async def apply(old: Settings, new: Settings) -> dict[str, Any]:
        return {}

    env = {**TEST_ENV, "REDIS_URL": redis_url}
    return Reloader(redis, settings, role="worker", apply=apply, name=name, load=lambda path: load_settings(path, env))


async def test_a_reload_counts_each_process_once_and_keeps_answers_through_a_long_wait(
    make_settings: Callable[..., Settings], redis: Redis, redis_server: RedisServer
) -> None:
    """The answers list expires ANSWER_TTL_S after its last answer, so within a longer `relay reload
    --wait N` a later answer started a new list, which the requester read from its old index: a process
    that did answer was reported silent. And a worker whose loop started again within the wait (a new
    reloader, same name) catches up on the request its old reloader answered and answers again: the
    result listed it twice (answered 3 of 2 processes)."""
    settings = make_settings()
    started: list[Reloader] = []

    def start(name: str) -> None:
        started.append(_reloader(redis, settings, name, redis_server.url))
        started[-1].start()

    async def live(*names: str) -> None:
        now = await clock_ms(redis)
        for name in names:
            await redis.hset(k.PROCS, name, json.dumps({"role": "worker", "hash": "x", "seen": now}))

    try:
        start("w1")
        await wait_for(lambda: _subscribed(redis, 1), 5, what="the reloader did not subscribe")
        await live("w1", "w2")  # w2: live, subscribing only later
        pending = asyncio.create_task(request_reload(redis, ORIGIN, wait_s=10))
        request_id = json.loads(await _last_request(redis))["id"]
        await wait_for(lambda: _answers(redis, request_id, 1), 5, what="w1 did not answer")
        await asyncio.sleep(0.2)  # the requester has read it
        await redis.delete(k.reload_answers(request_id))  # its TTL passed within the wait
        start("w2")
        expired = await asyncio.wait_for(pending, 15)
        assert expired["silent"] == [] and expired["ok"], expired
        await live("w3")  # w3: live, subscribing only later
        pending = asyncio.create_task(request_reload(redis, ORIGIN, wait_s=10))
        request_id = json.loads(await _last_request(redis, other_than=request_id))["id"]
        await wait_for(lambda: _answers(redis, request_id, 2), 5, what="w1 and w2 did not answer")
        start("w1")  # w1's loop starts again: it catches up on the request, answered already
        await wait_for(lambda: _answers(redis, request_id, 3), 5, what="the new w1 did not catch up")
        start("w3")
        twice = await asyncio.wait_for(pending, 15)
    finally:
        for r in started:
            await r.stop()
    assert twice["ok"] and twice["answered"] == 3, twice
    assert [a["process"] for a in twice["answers"]] == ["w1", "w2", "w3"], twice


async def test_a_process_that_missed_two_reloads_in_a_row_counts_for_both(
    make_settings: Callable[..., Settings], redis: Redis, redis_server: RedisServer
) -> None:
    """Two reloads in a row while a process is not subscribed (a Redis restart): relay:reload:last keeps
    the latest only, so the process catches up on the second and answers it alone. The first reload
    waited for it, reported it silent and failed (exit 1, 409), though the process had reloaded after
    that request was made, from the file as it is now."""
    settings = make_settings()
    now = await clock_ms(redis)
    await redis.hset(k.PROCS, "w1", json.dumps({"role": "worker", "hash": "x", "seen": now}))
    first = asyncio.create_task(request_reload(redis, ORIGIN, wait_s=10))
    first_id = json.loads(await _last_request(redis))["id"]
    second = asyncio.create_task(request_reload(redis, ORIGIN, wait_s=10))
    second_id = json.loads(await _last_request(redis, other_than=first_id))["id"]
    late = _reloader(redis, settings, "w1", redis_server.url)
    late.start()
    try:
        results = await asyncio.wait_for(asyncio.gather(first, second), 15)
    finally:
        await late.stop()
    for result in results:
        assert result["ok"] and result["silent"] == [] and [a["process"] for a in result["answers"]] == ["w1"], result
    assert results[0]["answers"][0]["for"] == second_id and "for" not in results[1]["answers"][0]


async def test_a_process_catches_up_on_a_request_whose_requester_waits_longer_than_a_minute(
    make_settings: Callable[..., Settings], redis: Redis, redis_server: RedisServer
) -> None:
    """A reloader started 70 s into a `relay reload --wait 120` (a worker's loop after a long Redis
    outage) answers it: it judged a request recent by ANSWER_TTL_S (60 s) alone, so it reloaded without
    answering and the requester, still waiting, reported it silent."""
    settings = make_settings()
    at = await clock_ms(redis) - 70_000
    request = {"id": "r70", "via": "cli", "address": None, "at": at, "wait_ms": 120_000}
    await redis.set(k.RELOAD_LAST, json.dumps(request))
    late = _reloader(redis, settings, "w1", redis_server.url)
    late.start()
    try:
        await wait_for(lambda: _answers(redis, "r70", 1), 5, what="the late reloader did not answer")
    finally:
        await late.stop()


async def _last_request(redis: Redis, other_than: str | None = None) -> bytes:
    """The request a reload just made (relay:reload:last), once it is there."""
    for _ in range(100):
        raw = await redis.get(k.RELOAD_LAST)
        if raw is not None and json.loads(raw)["id"] != other_than:
            return bytes(raw)
        await asyncio.sleep(0.02)
    raise AssertionError("no reload request was made")


async def _subscribed(redis: Redis, n: int) -> bool:
    return await redis.pubsub_numsub(k.RELOAD_CHANNEL) == [(k.RELOAD_CHANNEL.encode(), n)]


async def _hashes(redis: Redis, want: set[str], n: int) -> bool:
    docs = [json.loads(v) for v in (await redis.hgetall(k.PROCS)).values()]
    return len(docs) == n and {d["hash"] for d in docs} == want


async def _answers(redis: Redis, request_id: str, n: int) -> bool:
    return int(await redis.llen(k.reload_answers(request_id))) == n


async def test_relay_reload_with_nobody_listening(make_settings: Callable[..., Settings], redis: Redis) -> None:
    result = await request_reload(redis, ORIGIN, wait_s=0.2)
    assert result == {**result, "asked": 0, "answered": 0, "answers": [], "ok": True}


# -- real processes -------------------------------------------------------------------------------


async def test_reload_under_load_across_two_worker_processes(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    sink: Callable[..., Any],
    redis: Redis,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """Two `relay worker` processes, notifications arriving all along; a reload adds, changes and
    removes endpoints. Nothing is lost: every notification reaches each endpoint it was routed to (or
    its delivery to a removed endpoint is cancelled), in order on the serial one."""
    serial, old_c, new_c, gone, added = [await sink() for _ in range(5)]
    gone.delay = 0.2  # slow: it still has a backlog when the reload removes it
    config = [ep("serial", serial), ep("conc", old_c, concurrent=True), ep("gone", gone)]
    settings = make_settings(endpoints=config)
    client: TestClient = await aiohttp_client(create_app(settings))
    procs = [RelayProcess(settings.config_path, redis_server.url, "worker") for _ in range(2)]
    nids: list[str] = []
    try:
        await wait_for(lambda: _reported(redis, 2), 30)

        async def load(n: int) -> None:
            for _ in range(n):
                nids.append(await post(client, str(len(nids))))
                await asyncio.sleep(0.01)

        feeding = asyncio.create_task(load(120))
        await wait_for(lambda: len(nids) >= 40, 30)
        write_config(
            settings.config_path,
            endpoints=[ep("serial", serial), ep("conc", new_c, concurrent=True), ep("added", added)],
        )
        asked_at = len(nids)
        result = await request_reload(redis, ORIGIN)
        reloaded_at = len(nids)
        await feeding
        assert result["ok"] and result["answered"] == 2, result
        for nid in nids:
            try:
                await wait_for(lambda nid=nid: _settled(redis, nid), 30)
            except AssertionError:
                eps = (await redis.hget(k.notification(nid), "eps") or b"").decode()
                raise AssertionError(
                    f"{nid} #{nids.index(nid)} not settled: "
                    f"{[(e, await delivery(redis, nid, e)) for e in eps.split(',') if e]}; "
                    f"logs: {[p.output()[-3000:] for p in procs]}"
                ) from None
        # the SIGHUP path: one process re-reads the same file (unchanged) and says so in the audit log
        procs[0].proc.send_signal(signal.SIGHUP)
        await wait_for(lambda: _signal_audited(redis), 15)
    finally:
        for p in procs:
            p.stop()
    refs = [int(r.body.split(b"REFNO=")[1].split(b"&")[0]) for r in serial.received]
    assert refs == list(range(len(nids)))  # every one, once, in order, across the reload
    assert len(old_c.received) + len(new_c.received) == len(nids) and new_c.received
    got_added = sorted(int(r.body.split(b"REFNO=")[1].split(b"&")[0]) for r in added.received)
    # what was received once every process had reloaded goes to the new endpoint, and nothing from before
    assert got_added and got_added[0] >= asked_at - 1 and set(range(reloaded_at, len(nids))) <= set(got_added)
    states = [(await delivery(redis, nid, "gone")).get("state") for nid in nids]
    assert "pending" not in states and "retrying" not in states and "in_flight" not in states
    sent = [r.body.split(b"REFNO=")[1].split(b"&")[0].decode() for r in gone.received]
    cancelled = [
        (i, await attempts(redis, nid, "gone"), await delivery(redis, nid, "gone"))
        for i, nid in enumerate(nids)
        if states[i] == "cancelled" and str(i) in sent
    ]
    assert not cancelled, (cancelled, sent)
    assert states.count("delivered") == len(gone.received) and "cancelled" in states
    assert {s for s in states if s} <= {"delivered", "cancelled"}
    for nid in nids[:3]:
        assert not [a for a in await attempts(redis, nid, "serial") if a["outcome"] != "delivered"]
    assert not await redis.hlen(k.PROCS)  # both deregistered on SIGTERM


async def _settled(redis: Redis, nid: str) -> bool:
    eps = await redis.hget(k.notification(nid), "eps")
    if eps is None:
        return False
    for name in eps.decode().split(","):
        state = (await delivery(redis, nid, name)).get("state")
        if state not in ("delivered", "cancelled", "skipped"):
            return False
    return True


async def _signal_audited(redis: Redis) -> bool:
    entries = await audit.read(redis, action="reload")
    return any(e["via"] == "signal" and e.get("outcome") == "unchanged" for e in entries)


async def test_relay_reload_reaches_serve_and_worker_processes(
    tmp_path: Path, redis_server: RedisServer, redis: Redis, sink: Callable[..., Any]
) -> None:
    """`relay reload` from a shell: a `relay serve` (both listeners) and a `relay worker` answer; the
    serve process then routes admin requests with the new endpoints, on both of its listeners."""
    first, second = await sink(), await sink()
    public, admin = free_port(), free_port()
    server = f"[server]\nport = {public}\n"
    config = write_config(tmp_path / "relay.toml", admin={"port": admin}, extra=server, endpoints=[ep("first", first)])
    token = {"RELAY_ADMIN_TOKEN": "t0ken"}
    procs = [
        RelayProcess(config, redis_server.url, "serve", env=token),
        RelayProcess(config, redis_server.url, "worker"),
    ]
    env = {**os.environ, **TEST_ENV, "REDIS_URL": redis_server.url}
    try:
        await wait_for(lambda: _reported(redis, 2), 30)
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer t0ken"}) as http:
            async with http.post(
                f"http://127.0.0.1:{public}/ipn", data=signed_body(ipn_fields("1")), headers=FORM
            ) as resp:
                assert resp.status == 200
            nid = notification_id("default", "ipn", signed_body(ipn_fields("1")))
            await wait_for(lambda: len(first.received) == 1, 15)
            resend = f"http://127.0.0.1:{admin}/api/notifications/{nid}/resend"
            async with http.post(resend, json={"endpoint": "second"}) as resp:
                assert resp.status == 400 and "second" in (await resp.json())["error"]
            write_config(
                config, admin={"port": admin}, extra=server, endpoints=[ep("first", first), ep("second", second)]
            )
            out = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "relay", "--config", str(config), "reload"],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
            )
            assert out.returncode == 0, out.stdout + out.stderr
            lines = out.stdout.splitlines()
            assert len(lines) == 2 and {line.split()[1] for line in lines} == {"serve", "worker"}, out.stdout
            assert all(" reloaded " in line and line.endswith(" changed +endpoints.second") for line in lines), lines
            hashes = {line.split("config ")[1].split()[0] for line in lines}
            assert hashes == {config_hash(load_settings(config, env).file)}
            async with http.post(resend, json={"endpoint": "second"}) as resp:
                assert resp.status == 202, await resp.text()
            await wait_for(lambda: len(second.received) == 1, 15)
            # a SIGHUP to the serve process: the same file, so nothing changes, and the audit log says so
            procs[0].proc.send_signal(signal.SIGHUP)
            await wait_for(lambda: _signal_audited(redis), 15)
            async with http.get(f"http://127.0.0.1:{public}/healthz") as resp:
                assert resp.status == 200
    finally:
        for p in procs:
            p.stop()
    assert procs[0].proc.returncode == 0, procs[0].output()[-2000:]
    assert "config_reloaded" in procs[0].output() and "config_reloaded" in procs[1].output()


async def test_a_crashed_process_entry_is_forgotten_so_relay_procs_stays_bounded(
    make_settings: Callable[..., Settings], redis: Redis, workers: Callable[..., Any]
) -> None:
    # a SIGKILLed process never deregisters; over months of crashes and restarts (each a new
    # host:pid) relay:procs would grow without bound. A live process's report sweeps such entries.
    import json
    import time

    from relay.store.reload import PROC_FORGET_MS

    long_ago = int(time.time() * 1000) - PROC_FORGET_MS - 60_000
    await redis.hset(k.PROCS, "crashed:1", json.dumps({"role": "worker", "hash": "x", "seen": long_ago}))
    await redis.hset(k.PROCS, "garbled:2", "not json")
    recent = int(time.time() * 1000) - 120_000  # not alive, but within the forget period: kept for now
    await redis.hset(k.PROCS, "recent:3", json.dumps({"role": "worker", "hash": "x", "seen": recent}))
    await workers(make_settings(), 1)
    names = await wait_for(lambda: _names_without(redis, b"crashed:1"), 15)
    assert b"garbled:2" not in names and b"recent:3" in names, names


async def _names_without(redis: Redis, name: bytes) -> set[bytes] | None:
    names = set(await redis.hkeys(k.PROCS))
    return None if name in names else names


async def test_a_reload_changing_an_endpoints_headers_applies_to_the_next_delivery(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    sink: Callable[..., Any],
    redis: Redis,
    redis_server: RedisServer,
    workers: Callable[..., Any],
) -> None:
    """The engine keeps each endpoint's configured headers built once; a reload must rebuild them."""
    s = await sink()
    settings = make_settings(endpoints=[ep("x", s, headers={"X-Tenant": "blue", "User-Agent": "custom/1"})])
    client: TestClient = await aiohttp_client(create_app(settings))
    await workers(settings, 1)
    await post(client, "1")
    await wait_for(lambda: len(s.received) == 1, 15)
    first = s.received[0].headers
    assert first["X-Tenant"] == "blue" and first["User-Agent"] == "custom/1"  # configured headers override ours

    rewrite(settings, [ep("x", s, headers={"X-Tenant": "green"})], redis_server.url)
    result = await request_reload(redis, ORIGIN)
    assert result["ok"] and result["answers"][0]["changes"]["changed"] == ["x"], result
    await post(client, "2")
    await wait_for(lambda: len(s.received) == 2, 15)
    second = s.received[1].headers
    assert second["X-Tenant"] == "green" and second["User-Agent"].startswith("2checkout-relay/")


async def test_after_a_reload_every_endpoint_still_uses_its_headers_built_once(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    sink: Callable[..., Any],
    redis: Redis,
    redis_server: RedisServer,
    workers: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An endpoint a reload left as it was keeps its lane, and its lane the Endpoint read at start: the
    per-endpoint headers (and URL, timeout) built at the reload must still serve it, not be rebuilt
    for every delivery from then on."""
    from workers import forward

    s = await sink()
    settings = make_settings(
        endpoints=[ep("x", s, headers={"X-Tenant": "blue"}), ep("y", s, headers={"X-Tenant": "red"})]
    )
    client: TestClient = await aiohttp_client(create_app(settings))
    await workers(settings, 1)
    await post(client, "1")
    await wait_for(lambda: len(s.received) == 2, 15)
    rewrite(
        settings, [ep("x", s, headers={"X-Tenant": "green"}), ep("y", s, headers={"X-Tenant": "red"})], redis_server.url
    )
    result = await request_reload(redis, ORIGIN)
    assert result["ok"] and result["answers"][0]["changes"]["changed"] == ["x"], result

    built: list[str] = []
    real = forward.configured_headers

    def counted(endpoint: Any) -> dict[str, str]:
        built.append(endpoint.name)
        return real(endpoint)

    monkeypatch.setattr(forward, "configured_headers", counted)
    for n in ("2", "3", "4"):
        await post(client, n)
    await wait_for(lambda: len(s.received) == 8, 15)
    assert sorted(r.headers["X-Tenant"] for r in s.received[2:]) == ["green"] * 3 + ["red"] * 3
    assert built == [], built

"""Issue 21, finding 8: a reload that switches an endpoint between serial and concurrent re-scores its
waiting work: in receipt order when it becomes serial, by due time when it becomes concurrent, and a
waiting retry keeps the new mode's schedule. A real ``relay worker`` process, reloaded by SIGHUP."""

from __future__ import annotations

import re
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from config.settings import Settings
from relay import constants as k
from relay.server import create_app
from tests.procs import RelayProcess
from tests.support import RedisServer, free_port, wait_for, write_config
from tests.test_delivery import delivery, post


class Ledger:
    """An endpoint that answers each REFNO as told (status, Retry-After) and records what it accepted."""

    def __init__(self) -> None:
        self.answers: dict[int, tuple[int, str | None]] = {}
        self.accepted: list[int] = []
        self.requests: list[tuple[int, int]] = []  # (REFNO, Relay-Attempt)
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        refno = int(re.search(rb"REFNO=(\d+)", await request.read()).group(1))  # type: ignore[union-attr]
        self.requests.append((refno, int(request.headers["Relay-Attempt"])))
        status, retry_after = self.answers.get(refno, (200, None))
        if status == 200:
            self.accepted.append(refno)
        return web.Response(status=status, headers={"Retry-After": retry_after} if retry_after else {})

    async def start(self) -> Ledger:
        app = web.Application()
        app.add_routes([web.post("/hook", self.handle)])
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self


@pytest.fixture
async def ledger() -> AsyncIterator[Ledger]:
    sink = await Ledger().start()
    yield sink
    assert sink.runner is not None
    await sink.runner.cleanup()


def configure(path: Path, url: str, *, concurrent: bool, retry_delays: list[float]) -> None:
    write_config(
        path,
        delivery={"jitter": 0, "poll_interval": 0.05},
        endpoints=[
            {"name": "ledger", "url": url, "concurrent": concurrent, "retry_delays": retry_delays, "timeout": 2}
        ],
    )


async def start_worker(config: Path, redis_server: RedisServer, redis: Redis) -> RelayProcess:
    worker = RelayProcess(config, redis_server.url, "worker")

    async def listening() -> bool:
        assert worker.proc.poll() is None, worker.output()[-2000:]
        return await redis.pubsub_numsub(k.RELOAD_CHANNEL) == [(k.RELOAD_CHANNEL.encode(), 1)]

    await wait_for(listening, 30)
    return worker


async def reload(worker: RelayProcess, redis: Redis) -> None:
    """SIGHUP, then wait for the worker's own audit entry of it (reloaded, not refused)."""
    before = await redis.llen(k.AUDIT)
    worker.proc.send_signal(signal.SIGHUP)
    await wait_for(lambda: _grew(redis, before), 15)
    assert b'"outcome":"reloaded"' in await redis.lindex(k.AUDIT, 0), await redis.lindex(k.AUDIT, 0)


async def _grew(redis: Redis, before: int) -> bool:
    return int(await redis.llen(k.AUDIT)) > before


async def test_concurrent_to_serial_sends_the_waiting_work_in_order_of_receipt(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    redis: Redis,
    redis_server: RedisServer,
    ledger: Ledger,
) -> None:
    # four notifications wait to be retried, due in the reverse of their order of receipt
    ledger.answers = {1: (503, "2"), 2: (503, "1.5"), 3: (503, "1.25"), 4: (503, "1")}
    settings = make_settings()
    configure(settings.config_path, ledger.url, concurrent=True, retry_delays=[1, 1, 1])
    client: TestClient = await aiohttp_client(create_app(settings))
    worker = await start_worker(settings.config_path, redis_server, redis)
    try:
        nids = [await post(client, str(n)) for n in (1, 2, 3, 4)]
        await wait_for(lambda: _all_retrying(redis, nids), 15)
        configure(settings.config_path, ledger.url, concurrent=False, retry_delays=[1, 1, 1])
        await reload(worker, redis)
        # from now on it accepts (one retried before the reload got another 503: it is only later)
        ledger.answers = {}
        await wait_for(lambda: len(ledger.accepted) == 4, 20)
    finally:
        worker.stop()
    # before: the serial head was the lowest score, a due time: 4, 3, 2, 1
    assert ledger.accepted == [1, 2, 3, 4], ledger.requests
    assert {(await delivery(redis, nid, "ledger"))["mode"] for nid in nids} == {"serial"}
    assert "endpoint_remoded" in worker.output()


async def test_serial_to_concurrent_keeps_a_waiting_retry_on_its_schedule(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    redis: Redis,
    redis_server: RedisServer,
    ledger: Ledger,
) -> None:
    ledger.answers = {1: (500, None)}
    settings = make_settings()
    configure(settings.config_path, ledger.url, concurrent=False, retry_delays=[60])
    client: TestClient = await aiohttp_client(create_app(settings))
    worker = await start_worker(settings.config_path, redis_server, redis)
    try:
        head = await post(client, "1")
        await wait_for(lambda: _all_retrying(redis, [head]), 15)
        behind = await post(client, "2")  # held back by the serial head
        configure(settings.config_path, ledger.url, concurrent=True, retry_delays=[60])
        await reload(worker, redis)
        await wait_for(lambda: ledger.accepted == [2], 15)  # concurrent now: nothing holds it back
        d = await delivery(redis, head, "ledger")
        score = await redis.zscore(k.ep_queue("ledger"), head)
    finally:
        worker.stop()
    # before: the head kept its serial score (its seq, "due" since 1970) and mode, so the concurrent
    # lane retried it at once, and then at every lease expiry
    assert d["state"] == "retrying" and d["attempts"] == "1", (d, ledger.requests)
    assert d["mode"] == "concurrent" and score == int(d["next"])
    assert (await delivery(redis, behind, "ledger"))["state"] == "delivered"


async def _all_retrying(redis: Redis, nids: list[str]) -> bool:
    states = [(await delivery(redis, nid, "ledger")).get("state") for nid in nids]
    return states == ["retrying"] * len(nids)


async def test_a_worker_restarted_with_the_other_mode_re_scores_the_waiting_work_too(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    redis: Redis,
    redis_server: RedisServer,
    ledger: Ledger,
) -> None:
    """The config edited and the worker restarted instead of reloaded: the same switch, the same result."""
    ledger.answers = {1: (500, None)}
    settings = make_settings()
    configure(settings.config_path, ledger.url, concurrent=False, retry_delays=[60])
    client: TestClient = await aiohttp_client(create_app(settings))
    worker = await start_worker(settings.config_path, redis_server, redis)
    try:
        head = await post(client, "1")
        await wait_for(lambda: _all_retrying(redis, [head]), 15)
        behind = await post(client, "2")
        # routed (serial, behind the head) before the stop: what is re-scored is a queue of two, and a
        # fan-out job cut off by the stop (re-run only by the sweeper, 30 s on) cannot stall the test
        await wait_for(lambda: delivery(redis, behind, "ledger"), 15)
    finally:
        worker.stop()
    assert (await delivery(redis, behind, "ledger"))["mode"] == "serial"
    configure(settings.config_path, ledger.url, concurrent=True, retry_delays=[60])
    worker = await start_worker(settings.config_path, redis_server, redis)
    try:
        await wait_for(lambda: ledger.accepted == [2], 15)
        d = await delivery(redis, head, "ledger")
        score = await redis.zscore(k.ep_queue("ledger"), head)
    finally:
        worker.stop()
    assert d["state"] == "retrying" and d["attempts"] == "1", (d, ledger.requests)
    assert d["mode"] == "concurrent" and score == int(d["next"])
    assert (await delivery(redis, behind, "ledger"))["state"] == "delivered"


async def test_re_scoring_a_long_queue_never_reads_it_whole(
    redis: Redis,
    make_settings: Callable[..., Settings],
) -> None:
    """A mode switch re-scores the whole waiting queue: its script goes in pages, and so must the read of
    the queue (one ZRANGE of a backlog of a million held Redis, and filled the worker, as one reply)."""
    from relay.store.endpoints import from_rule
    from workers import remode

    n = 3 * remode.PAGE + 11
    name = "x"
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(n):
            nid = f"ipn_{i:024x}"
            pipe.hset(
                k.delivery(nid, name), mapping={"state": "pending", "seq": i, "created": 10**12 + i, "mode": "serial"}
            )
            pipe.zadd(k.ep_queue(name), {nid: i})
        await pipe.execute()
    ep = from_rule(name, '{"mode": "concurrent", "concurrent": true}')
    await redis.config_set("slowlog-log-slower-than", 0)
    await redis.config_set("slowlog-max-len", 100_000)
    await redis.slowlog_reset()
    try:
        assert await remode.remode(redis, ep) >= n
        log = await redis.slowlog_get(100_000)
    finally:
        await redis.config_set("slowlog-log-slower-than", 10_000)
    reads = [
        e["command"]
        for e in log
        if k.ep_queue(name).encode() in e["command"] and e["command"].split()[0].upper() in (b"ZRANGE", b"ZSCAN")
    ]
    assert reads and not any(cmd.upper().startswith(b"ZRANGE ") and cmd.endswith(b" 0 -1") for cmd in reads), reads
    scores = dict(await redis.zrange(k.ep_queue(name), 0, -1, withscores=True))
    assert len(scores) == n and min(scores.values()) >= 10**12  # every one re-scored by due time

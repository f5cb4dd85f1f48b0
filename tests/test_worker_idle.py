"""An idle worker waits for its queue to change instead of polling Redis every 5 ms (workers/wake.py),
and a notification received while it waits is still fanned out at once."""

# the fixtures are imported from test_api, so test arguments "redefine" them by design

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from config.settings import Settings
from relay import constants as k
from tests.procs import RelayProcess
from tests.support import RedisServer, wait_for, write_config
from tests.test_api import (  # noqa: F401  (fixtures used by name)
    api_settings,
    client,
    ingest,
    sinks,
)
from workers import wake
from workers.main import create_worker


def test_an_idle_worker_asks_redis_a_few_times_a_second_not_200(tmp_path: Path) -> None:
    server = RedisServer().start()  # its own: the command counts are this worker's alone
    worker = None
    try:
        config = write_config(
            tmp_path / "relay.toml",
            redis_port=server.port,
            endpoints=[{"name": "a", "url": "http://127.0.0.1:9/h"}],
            delivery={"poll_interval": 0.25},
        )
        worker = RelayProcess(config, server.url, "worker")
        r = sync_redis.Redis(port=server.port)
        deadline = time.monotonic() + 30
        while not r.zcard(k.WORKERS) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.zcard(k.WORKERS), worker.output()
        r.config_resetstat()
        window = 2.0
        time.sleep(window)  # a measurement window, not a synchronisation
        stats = r.info("commandstats")
        polls = stats.get("cmdstat_zrangebyscore", {}).get("calls", 0)
        # ARQ's own 5 ms poll made ~400 in 2 s; idle, the worker looks every IDLE_POLL_S (0.25 s)
        assert polls <= window / wake.IDLE_POLL_S * 2 + 2, (polls, stats)
        assert "worker_idle_wake_unavailable" not in worker.output()
    finally:
        if worker is not None:
            worker.stop()
        server.cleanup()


async def test_a_notification_wakes_an_idle_worker_at_once(
    client: TestClient, api_settings: Settings, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # so long that only the wake through Redis can explain a prompt fan-out
    monkeypatch.setattr(wake, "IDLE_POLL_S", 60.0)
    worker = create_worker(api_settings, handle_signals=False)
    assert isinstance(worker, wake.RelayWorker)
    task = asyncio.create_task(worker.async_run())
    try:
        assert await wait_for(lambda: worker.waiting and worker.queue_watch.active, timeout=20)
        nid = await ingest(client, "9001")
        started = time.monotonic()

        async def routed() -> bool:
            return bool(await redis.hget(k.notification(nid), "eps"))

        assert await wait_for(routed, timeout=15)
        assert time.monotonic() - started < 15 < wake.IDLE_POLL_S
    finally:
        from tests.support import close_worker

        await close_worker(worker)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _idle_polls(r: Any, window: float = 2.0) -> int:
    r.config_resetstat()
    time.sleep(window)  # a measurement window, not a synchronisation
    calls: int = r.info("commandstats").get("cmdstat_zrangebyscore", {}).get("calls", 0)
    return calls


@pytest.mark.slow  # a real worker across a Redis restart (~9 s): in make test, not in make check
def test_an_idle_worker_waits_again_after_its_redis_restarts(tmp_path: Path) -> None:
    """A Redis restart used to leave the worker on ARQ's 5 ms poll for good (7 % of a core idle): its
    watch was started once, before ARQ's own connection retries brought it back."""
    server = RedisServer().start()
    worker = None
    try:
        config = write_config(
            tmp_path / "relay.toml",
            redis_port=server.port,
            endpoints=[{"name": "a", "url": "http://127.0.0.1:9/h"}],
            delivery={"poll_interval": 0.25},
        )
        worker = RelayProcess(config, server.url, "worker")
        r: Any = sync_redis.Redis(port=server.port)  # the sync client: its awaitable-or-value types say little

        def watching() -> bool:
            return (
                bool(r.zcard(k.WORKERS))
                and dict(r.pubsub_numsub(wake.INVALIDATE)).get(wake.INVALIDATE.encode(), 0) >= 1
            )

        deadline = time.monotonic() + 30
        while not watching() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watching(), worker.output()
        server.stop()
        time.sleep(1.5)  # Redis stays down past the worker's first restart (1 s), as a real restart can
        server.start()
        r = sync_redis.Redis(port=server.port)
        deadline = time.monotonic() + 40
        while not watching() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert watching(), worker.output()
        assert _idle_polls(r) <= 2.0 / wake.IDLE_POLL_S * 2 + 2
    finally:
        if worker is not None:
            worker.stop()
        server.cleanup()


async def test_the_wake_survives_redis_closing_idle_clients() -> None:
    """A Redis with ``timeout`` set closes a client idle that long; the tracking connection never sends
    a command after its CLIENT TRACKING, so it was closed and the wake went silent (the worker fell back
    to its 0.25 s idle poll without a word). A subscribed connection is never closed for idleness."""
    server = RedisServer(extra=["--timeout", "1"]).start()
    watch = wake.QueueWatch(server.url)
    r = Redis(port=server.port)
    try:
        assert await watch.start()

        async def idle_past_the_timeout() -> bool:
            clients = await r.client_list()
            # every client of the watch idle past Redis's timeout (2 s > 1 s), or closed for it
            return all(int(c["idle"]) >= 2 for c in clients if c["cmd"] != "client|list") and bool(
                [c for c in clients if "P" in c["flags"]]
            )

        assert await wait_for(idle_past_the_timeout, timeout=20, interval=0.2)
        assert not [c for c in await r.client_list() if "t" in c["flags"] and "P" not in c["flags"]]
        watch.changed.clear()
        await r.zadd(k.QUEUE_NAME, {"job": 1})
        await asyncio.wait_for(watch.changed.wait(), 5)
    finally:
        await watch.stop()
        await r.aclose()
        server.cleanup()


async def test_stopping_the_watch_never_swallows_the_callers_cancellation(redis_server: RedisServer) -> None:
    # A worker told to stop (SIGTERM) while it restarted its watch kept polling for 20 s until it was
    # killed: stop() awaited the cancelled reader under suppress(CancelledError), which also swallowed
    # the cancellation of the task calling it. The reader here takes a moment to end, as one blocked in
    # a read does.
    watch = wake.QueueWatch(redis_server.url)

    async def slow_reader() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0.5)  # its own cleanup (a connection closing)
            raise

    watch._reader = asyncio.create_task(slow_reader())
    await asyncio.sleep(0)
    stopping = asyncio.create_task(watch.stop())
    await asyncio.sleep(0.1)  # stop() now waits for the reader
    stopping.cancel()
    done, _ = await asyncio.wait([stopping], timeout=5)
    assert done and stopping.cancelled(), "the caller's cancellation was swallowed"
    # and a reader that ends on its own error is not the caller's failure
    watch2 = wake.QueueWatch(redis_server.url)

    async def failing_reader() -> None:
        raise OSError("connection lost")

    watch2._reader = asyncio.create_task(failing_reader())
    await asyncio.sleep(0)
    await watch2.stop()

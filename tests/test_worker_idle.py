"""An idle worker waits for its queue to change instead of polling Redis every 5 ms (workers/wake.py),
and a notification received while it waits is still fanned out at once."""

# the fixtures are imported from test_api, so test arguments "redefine" them by design
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import time
from pathlib import Path

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
        config = write_config(tmp_path / "relay.toml", redis_port=server.port,
                              endpoints=[{"name": "a", "url": "http://127.0.0.1:9/h"}],
                              delivery={"poll_interval": 0.25})
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


async def test_a_notification_wakes_an_idle_worker_at_once(client: TestClient, api_settings: Settings,
                                                           redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
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

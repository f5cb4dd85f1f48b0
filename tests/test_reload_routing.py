"""Reloads and restarts while notifications flow (issue 21): routing never loses an acknowledged
notification, a removed endpoint's work ends cancelled however it was removed, and a process that
restarts itself keeps the configuration it last reloaded."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from config.settings import Settings
from relay.server import create_app
from relay.store import audit
from relay.store.reload import request_reload
from tests.procs import RelayProcess
from tests.support import RedisServer, wait_for, write_config
from tests.test_delivery import ep, post

ORIGIN = audit.Origin("cli", "tester@test")


async def _listening(redis: Redis, n: int) -> bool:
    from relay import constants as k
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
        await asyncio.sleep(1.5)  # long enough for the worker to notice the lost connection
        server.start()
        redis = Redis.from_url(server.url)
        await wait_for(lambda: "worker_redis_lost" in worker.output(), 15)
        await post(client, "2")
        await wait_for(lambda: len(first.received) == 2, 30)
        await wait_for(lambda: len(added.received) == 2, 15)
    finally:
        worker.stop()
        await redis.aclose()
        server.cleanup()

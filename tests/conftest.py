from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from arq.worker import Worker
from redis.asyncio import Redis

from config.settings import Settings, load_settings
from tests.support import TEST_ENV, RedisServer, Sink, close_worker, write_config
from workers.main import create_worker


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def make_settings(tmp_path: Path, redis_server: RedisServer) -> Callable[..., Settings]:
    """Settings for a config written from keyword args, pointed at the test Redis."""

    def make(*, env: dict[str, str] | None = None, **kwargs: Any) -> Settings:
        path = write_config(tmp_path / "relay.toml", **kwargs)
        return load_settings(path, {**TEST_ENV, "REDIS_URL": redis_server.url, **(env or {})})

    return make


@pytest.fixture
async def sink() -> AsyncIterator[Callable[..., Any]]:
    """Factory of real endpoint apps on free ports; all stopped at the end of the test."""
    started: list[Sink] = []

    async def make(script: list[Any] | None = None, **kwargs: Any) -> Sink:
        s = await Sink(script=script or [200], **kwargs).start()
        started.append(s)
        return s

    yield make
    for s in started:
        await s.stop()


@pytest.fixture
async def start_worker() -> AsyncIterator[Callable[..., Worker]]:
    """The one factory of in-process ARQ workers: ``start_worker(settings, **create_worker_kwargs)`` runs
    a real worker, lanes and all, on the test's loop (signals left to the test runner) and returns it;
    every one started is closed at the end with close_worker."""
    started: list[tuple[Worker, asyncio.Task[None]]] = []

    def start(settings: Settings, **kwargs: Any) -> Worker:
        worker = create_worker(settings, handle_signals=False, **kwargs)
        started.append((worker, asyncio.create_task(worker.async_run())))
        return worker

    yield start
    for worker, task in started:
        await close_worker(worker)  # never worker.close() alone: see close_worker
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

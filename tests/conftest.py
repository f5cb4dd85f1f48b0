from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from config.settings import Settings, load_settings
from tests.support import TEST_ENV, RedisServer, Sink, write_config


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

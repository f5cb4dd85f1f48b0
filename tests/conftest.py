from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from arq.worker import Worker
from redis.asyncio import Redis

from config.settings import Settings, load_settings
from tests.support import TEST_ENV, RedisServer, Sink, close_worker, write_config
from workers.main import create_worker

# the machine's temp directory, before the session's own replaces it (below)
SYSTEM_TMP = tempfile.gettempdir()


@pytest.fixture(scope="session", autouse=True)
def _own_temp_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temp directory of this session's own, for it and every process it starts (TMPDIR).

    What relay keeps per host lives there, the Redis outage record first (relay/alerting/watch.py,
    ``HostMark``: one file per host and Redis URL). In the machine's /tmp it outlived the run that
    wrote it: a test that ended while its Redis was down left "alert sent", and a later run whose
    Redis drew the same port got a ``redis_recovered`` alert at its start (test_alert_truth saw
    one). pytest's own directories (tmp_path, with the processes' logs) stay where they were."""
    tmp_path_factory.getbasetemp()  # fixed before TMPDIR moves
    own = tempfile.mkdtemp(prefix="relay-tests-")
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = own
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    yield Path(own)
    if before is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = before
    tempfile.tempdir = None
    shutil.rmtree(own, ignore_errors=True)


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

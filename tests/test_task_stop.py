"""Shutdown never hangs on a background task whose cancel was lost (relay/tasks.py).

redis-py can turn a cancellation into a TimeoutError (when it lands as the socket timeout expires),
which the alert watcher's loop reads as "Redis went away, try again": before relay/tasks.py, a
``relay serve`` member SIGTERMed in that moment never finished stopping and its supervisor killed it.
Here the lost cancel is made certain by a check that swallows the first one, as the client would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from redis.asyncio import Redis

from config.settings import Settings
from relay import tasks
from relay.alerting.watch import Notice, Watcher


class LosesOneCancel(Watcher):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.checks = 0
        self.lost = 0

    async def check(self, session: aiohttp.ClientSession) -> list[Notice]:
        self.checks += 1
        await self.redis.ping()  # type: ignore[misc]
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.lost += 1  # swallowed, as redis-py's timeout handling does
        return []


async def test_a_watcher_that_loses_a_cancel_still_stops(redis: Redis, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    watcher = LosesOneCancel(redis, lambda: settings)
    watcher.start()
    deadline = time.monotonic() + 5
    while watcher.checks == 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    started = time.monotonic()
    await asyncio.wait_for(watcher.stop(), timeout=10)
    assert watcher.lost == 1  # the first cancel was lost, and stopping went on regardless
    assert time.monotonic() - started < tasks.TRIES * tasks.WAIT_S
    assert watcher.checks == 1  # the loop ran no second check after it was asked to stop


async def test_stop_gives_up_on_a_task_that_never_ends() -> None:
    async def stubborn() -> None:
        for _ in range(30):  # bounded: it outlives the two tries below, then ends by itself (3 s)
            try:
                await asyncio.sleep(0.1)
            except asyncio.CancelledError:
                pass

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)  # let it start: a task cancelled before its first step just ends
    started = time.monotonic()
    assert await tasks.stop(task, tries=2, wait_s=0.2) is False
    assert 0.35 < time.monotonic() - started < 2
    assert not task.done()
    assert await tasks.stop(None) is True
    done = asyncio.create_task(asyncio.sleep(0), name="done")
    await done
    assert await tasks.stop(done) is True
    task.cancel()
    await asyncio.wait({task}, timeout=15)

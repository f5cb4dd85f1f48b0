"""An idle worker that sleeps until there is work, instead of asking Redis 200 times a second.

ARQ polls its queue every ``poll_delay`` (5 ms here, for a fan-out picked up within milliseconds of
receipt): about 200 round trips a second, 5-8 % of a core for a worker with nothing to do. Here the
worker polls at that pace only while it has work; once a poll finds nothing and no job runs, it
waits for the queue to change, or for ``IDLE_POLL_S`` at most (cron jobs and deferred fan-out
retries are due by the clock, not by a write).

"The queue changed" comes from Redis itself, through client-side caching's broadcast mode: one
connection runs ``CLIENT TRACKING on REDIRECT <id> BCAST PREFIX relay:queue`` and another, with that
id, is subscribed to ``__redis__:invalidate``. Every write to the ARQ queue (an ingest's or a
resend's ZADD, whichever process makes it) then sends that subscriber one message per Redis event
loop cycle, so the writers (the ingress's Lua script, resends) stay as they are. A Redis that
cannot track (before 6.0, or refusing CLIENT) leaves the worker polling every 5 ms as before.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from arq.worker import Worker
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection

from relay.constants import QUEUE_NAME
from relay.store.connection import REDIS_ERRORS, connect

logger = structlog.get_logger()

# the longest an idle worker waits without a write to its queue: cron jobs run on the second (ARQ
# looks at most 0.5 s late), and a deferred fan-out retry is due by the clock
IDLE_POLL_S = 0.25
INVALIDATE = "__redis__:invalidate"
LISTEN_S = 60.0


class QueueWatch:
    """Sets ``changed`` whenever a key under ``prefix`` is written, by anyone."""

    def __init__(self, url: str, prefix: str = QUEUE_NAME, timeout: float = 2.0) -> None:
        self.changed = asyncio.Event()
        self._redis: Redis = connect(url, timeout=timeout)
        self._prefix = prefix
        self._conns: list[AbstractConnection] = []
        self._reader: asyncio.Task[None] | None = None
        self.active = False

    async def start(self) -> bool:
        """Subscribe and turn tracking on; False (and a warning) when this Redis cannot."""
        pool = self._redis.connection_pool
        try:
            # connections of their own, outside the pool's lending: neither ever serves another command
            listener = pool.make_connection()  # type: ignore[no-untyped-call]
            self._conns.append(listener)
            await listener.connect()
            await listener.send_command("CLIENT", "ID")
            client_id = await listener.read_response()
            await listener.send_command("SUBSCRIBE", INVALIDATE)
            await listener.read_response()
            tracker = pool.make_connection()  # type: ignore[no-untyped-call]
            self._conns.append(tracker)
            await tracker.connect()
            await tracker.send_command("CLIENT", "TRACKING", "on", "REDIRECT", client_id, "BCAST",
                                       "PREFIX", self._prefix)
            await tracker.read_response()
        except (*REDIS_ERRORS, OSError) as exc:
            logger.warning("worker_idle_wake_unavailable", error=f"{type(exc).__name__}: {exc}",
                           consequence="an idle worker polls its queue every 5 ms")
            await self.stop()
            return False
        self._reader = asyncio.create_task(self._read(listener), name="queue-watch")
        self.active = True
        return True

    async def _read(self, listener: AbstractConnection) -> None:
        try:
            while True:
                # an invalidation message, or anything else on this connection: either way, look. The
                # timeout only bounds each read (None would mean the 2 s socket timeout, an error)
                if await listener.read_response(timeout=LISTEN_S) is not None:
                    self.changed.set()
        except (*REDIS_ERRORS, OSError) as exc:
            # the connection is gone (a Redis restart ends the worker anyway): keep it polling
            logger.warning("worker_idle_wake_lost", error=f"{type(exc).__name__}: {exc}")
        finally:
            self.active = False
            self.changed.set()

    async def stop(self) -> None:
        self.active = False
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, *REDIS_ERRORS, OSError):
                await self._reader
        for conn in self._conns:
            with contextlib.suppress(*REDIS_ERRORS, OSError):
                await conn.disconnect()
        self._conns.clear()
        with contextlib.suppress(*REDIS_ERRORS, OSError):
            await self._redis.aclose()


class RelayWorker(Worker):
    """ARQ's worker, polling at ``poll_delay`` while busy and waiting for its queue to change when idle."""

    def __init__(self, *args: Any, redis_url: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue_watch = QueueWatch(redis_url)
        self.waiting = False  # in the idle wait now (tests look)

    async def main(self) -> None:
        await self.queue_watch.start()
        try:
            await super().main()
        finally:
            await self.queue_watch.stop()

    async def _poll_iteration(self) -> None:
        watch = self.queue_watch
        # cleared before the queue is read: a write after this point wakes the wait below
        watch.changed.clear()
        finished = self.jobs_complete + self.jobs_retried + self.jobs_failed
        await super()._poll_iteration()
        busy = bool(self.tasks) or self.jobs_complete + self.jobs_retried + self.jobs_failed != finished
        if watch.active and not busy:
            self.waiting = True
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watch.changed.wait(), IDLE_POLL_S)
            finally:
                self.waiting = False

"""An idle worker that sleeps until there is work, instead of asking Redis 200 times a second.

Two things wait for work in a worker: ARQ, polling its queue (``relay:queue``: the cron jobs, and the
fan-out jobs of an ingress older than the batched fan-out) every ``poll_delay`` while it runs jobs,
and the engine's fan-out loop (workers/fanout.py), which must pick a new notification up within a
millisecond or two of its receipt. Polling for that costs about 200 round trips a second, 5-8 % of a
core for a worker with nothing to do. Here an idle ARQ loop waits for its queue to change, or for
``IDLE_POLL_S`` at most (cron jobs are due by the clock, not by a write), and the fan-out loop for a
notification to be stored.

Both cues come from Redis itself, through client-side caching's broadcast mode: one connection runs
``CLIENT TRACKING on REDIRECT <its own id> BCAST PREFIX relay:queue PREFIX relay:seq`` and then
subscribes to ``__redis__:invalidate``. Every write to the ARQ queue sets ``changed``; every write of
``relay:seq``, which ingest.lua and resend.lua increment for each notification they store (and nothing
else writes), sets ``stored``. Redis sends one message per event loop cycle, naming the keys, so the
writers stay as they are and the fan-out's own writes (route.lua's to ``relay:fanout``) wake nobody.
One connection, subscribed, because Redis's
``timeout`` never closes a subscriber: a second, silent tracking connection was closed after
``timeout`` seconds and the wake went quiet. A Redis that cannot track (before 6.0, or refusing
CLIENT) leaves the worker polling every 5 ms as before; a watch lost to a connection error (a Redis
restart) is started again within ``RESTART_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from arq.worker import Worker
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

from relay.constants import QUEUE_NAME, SEQ
from relay.store.connection import REDIS_ERRORS, connect

logger = structlog.get_logger()

# the longest an idle worker waits without a write to its queue: cron jobs run on the second (ARQ
# looks at most 0.5 s late), and a deferred fan-out retry is due by the clock
IDLE_POLL_S = 0.25
INVALIDATE = "__redis__:invalidate"
# each read of the subscription waits this long, then a PING checks the connection is still there
LISTEN_S = 60.0
# a watch lost to a connection error is tried again this often (not one refused by Redis: that stays)
RESTART_S = 5.0


class QueueWatch:
    """Sets ``changed`` whenever a key under ``prefix`` is written, by anyone, and ``stored`` whenever
    ``stored_key`` is (a notification stored: the fan-out loop's cue)."""

    def __init__(self, url: str, prefix: str = QUEUE_NAME, timeout: float = 2.0, stored_key: str = SEQ) -> None:
        self.changed = asyncio.Event()
        self.stored = asyncio.Event()
        self._url = url
        self._timeout = timeout
        self._redis: Redis | None = None
        self._prefix = prefix
        self._stored_key = stored_key.encode()
        self._conns: list[AbstractConnection] = []
        self._reader: asyncio.Task[None] | None = None
        self.active = False
        # False once Redis itself refused (no CLIENT, no tracking): trying again would be refused again
        self.retryable = True
        self._warned = False

    async def start(self) -> bool:
        """Turn tracking on and subscribe; False (and a warning, once) when this Redis cannot."""
        await self.stop()
        self._redis = connect(self._url, timeout=self._timeout)
        try:
            # a connection of its own, outside the pool's lending: it never serves another command
            listener = self._redis.connection_pool.make_connection()  # type: ignore[no-untyped-call]
            self._conns.append(listener)
            await listener.connect()
            await listener.send_command("CLIENT", "ID")
            client_id = await listener.read_response()
            # tracking first (a subscribed RESP2 connection takes no CLIENT command), redirected to itself
            await listener.send_command(
                "CLIENT",
                "TRACKING",
                "on",
                "REDIRECT",
                client_id,
                "BCAST",
                "PREFIX",
                self._prefix,
                "PREFIX",
                self._stored_key,
            )
            await listener.read_response()
            await listener.send_command("SUBSCRIBE", INVALIDATE)
            await listener.read_response()
        except (*REDIS_ERRORS, OSError) as exc:
            # a reply of refusal (ResponseError) is this Redis's configuration; anything else may pass
            self.retryable = not isinstance(exc, ResponseError)
            log = logger.debug if self._warned else logger.warning
            self._warned = True
            log(
                "worker_idle_wake_unavailable",
                error=f"{type(exc).__name__}: {exc}",
                consequence="an idle worker polls its queue and relay:fanout every 5 ms",
                retry_in_s=RESTART_S if self.retryable else None,
            )
            await self.stop()
            return False
        self._reader = asyncio.create_task(self._read(listener), name="queue-watch")
        self.active = True
        if self._warned:
            logger.info("worker_idle_wake_restored")
            self._warned = False
        return True

    async def _read(self, listener: AbstractConnection) -> None:
        try:
            while True:
                # an invalidation message, or anything else on this connection: either way, look. The
                # timeout only bounds each read (None would mean the 2 s socket timeout, an error)
                message = await listener.read_response(timeout=LISTEN_S)
                if message is not None:
                    self._dispatch(message)
                else:
                    # a quiet minute: a PING (allowed while subscribed) finds a connection that died
                    # without a word; its reply is a message, read (and looked at) by the next turn
                    await listener.send_command("PING")
        except (*REDIS_ERRORS, OSError) as exc:
            # the connection is gone: poll meanwhile; RelayWorker starts the watch again
            self._warned = True
            logger.warning("worker_idle_wake_lost", error=f"{type(exc).__name__}: {exc}", retry_in_s=RESTART_S)
        finally:
            self.active = False
            self.changed.set()
            self.stored.set()

    def _dispatch(self, message: Any) -> None:
        """Set the event of each key an invalidation names; anything else (a PING's reply, a flush's
        invalidation naming no key) sets both: a look too many costs one round trip, one too few a wait."""
        keys = message[2] if isinstance(message, list) and len(message) == 3 and message[0] == b"message" else None
        if not isinstance(keys, list):
            self.changed.set()
            self.stored.set()
            return
        for key in keys:
            if key == self._stored_key:
                self.stored.set()
            else:
                self.changed.set()

    async def stop(self) -> None:
        self.active = False
        if self._reader is not None:
            reader = self._reader
            if reader is not asyncio.current_task():
                reader.cancel()
                # wait() takes the reader's own end (cancelled, a lost connection) without raising it,
                # while a cancellation of the task calling stop() (SIGTERM during a restart of the
                # watch) still reaches it: suppressing CancelledError around `await reader` swallowed
                # that too, and the worker polled on until it was killed
                await asyncio.wait([reader])
                if not reader.cancelled():
                    reader.exception()  # retrieved: the reader's error is not this stop's
            self._reader = None
        for conn in self._conns:
            with contextlib.suppress(*REDIS_ERRORS, OSError):
                await conn.disconnect()
        self._conns.clear()
        if self._redis is not None:
            with contextlib.suppress(*REDIS_ERRORS, OSError):
                await self._redis.aclose()
            self._redis = None


class RelayWorker(Worker):
    """ARQ's worker, polling at ``poll_delay`` while busy and waiting for its queue to change when idle."""

    def __init__(self, *args: Any, redis_url: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue_watch = QueueWatch(redis_url)
        self.ctx["queue_watch"] = self.queue_watch  # jobs.startup hands it to the engine's fan-out loop
        self.waiting = False  # in the idle wait now (tests look)
        self._watch_tried = 0.0  # loop time of the last start of the watch

    async def main(self) -> None:
        self._watch_tried = asyncio.get_running_loop().time()
        await self.queue_watch.start()
        try:
            await super().main()
        finally:
            await self.queue_watch.stop()

    async def _poll_iteration(self) -> None:
        watch = self.queue_watch
        now = asyncio.get_running_loop().time()
        if not watch.active and watch.retryable and now - self._watch_tried >= RESTART_S:
            # lost to a connection error (a Redis restart: ARQ's connection came back, the watch did not)
            self._watch_tried = now
            await watch.start()
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

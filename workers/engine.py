"""The delivery engine: one lane per endpoint, claiming work from Redis under a lease.

Each worker process runs a lane for every configured endpoint. A lane claims due deliveries with
claim.lua, which enforces the endpoint's in-flight limit across *all* processes (a lease per
delivery in ``relay:ep:{ep}:lease``), sends them, and records each result with complete.lua. A
serial endpoint's queue is ordered by receipt and only its head is ever claimed, so a delivery
waiting to retry holds back the later ones. A lease that expires without a result (a worker killed
mid-delivery) makes the delivery due again: nothing is lost or left ``in_flight``.

The engine coordinates: it holds the lanes (workers/lanes.py) and their shared step calls
(workers/step.py), makes attempts (workers/attempt.py), applies reloads, and runs the fan-out loop
(workers/fanout.py), which routes new notifications to the lanes in batches.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import aiohttp
import structlog
from redis.asyncio import Redis

from config.settings import Endpoint, Settings
from relay import constants as k
from relay.store.endpoints import Removed
from workers import fanout, forward, remode
from workers.attempt import Result, Sender
from workers.lanes import Lane
from workers.step import Stepper

if TYPE_CHECKING:
    from workers.wake import QueueWatch

logger = structlog.get_logger()


class Engine:
    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.session = session
        self.clock = clock
        self.rand = rand
        self.sender = Sender(session, settings.delivery, settings.endpoints, clock=clock, rand=rand)
        self.policy = settings.delivery
        self.poll_interval = settings.delivery.poll_interval
        self.stopping = False
        self.lanes = {name: Lane(self, ep) for name, ep in settings.endpoints.items()}
        # lanes a reload took out of service, until their in-flight deliveries are recorded
        self.retired: set[Lane] = set()
        # endpoint -> ms (Redis's clock) a reload added it: the fan-out gives it only what came after
        self.added: dict[str, int] = {}
        # endpoints a reload or restart removed (relay/store/endpoints.py), kept current by workers/jobs.py
        self.removed: dict[str, Removed] = {}
        self.step = Stepper(redis, self)
        # Redis's clock minus this process's, learned from every step.lua reply (see redis_ms)
        self.skew_ms = 0
        # set when a notification is stored (workers/wake.py's watch, once jobs.startup shares it): the
        # fan-out loop's cue. Without an active watch the loop polls
        self.fanout_signal = asyncio.Event()
        self.fanout_watch: QueueWatch | None = None
        self.fanout_task: asyncio.Task[None] | None = None

    def now_ms(self) -> int:
        """This process's clock: for what is only displayed or logged."""
        return int(self.clock() * 1000)

    def redis_ms(self) -> int:
        """Redis's clock, as last learned: what the scripts compare times by, whatever this machine's says."""
        return self.now_ms() + self.skew_ms

    async def start(self) -> None:
        self.added = await self._added(self.settings)
        for lane in self.lanes.values():
            # started with a config that switched the endpoint's mode (edited, then a restart rather than
            # a reload): its waiting work is re-scored as a reload would have
            lane.remode = await remode.switched(self.redis, lane.endpoint)
            self._start_lane(lane)
        self.fanout_task = asyncio.create_task(self._supervised("fanout", lambda: fanout.run(self)), name="fanout")

    async def _supervised(self, what: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run ``run`` until the engine stops; a crash is logged and it is started again, never left stopped."""
        backoff = 0.1
        while not self.stopping:
            try:
                await run()
                return
            except Exception:
                logger.exception(f"{what}_crashed", restart_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _start_lane(self, lane: Lane) -> None:
        lane.task = asyncio.create_task(lane.supervise(), name=f"lane:{lane.endpoint.name}")

    async def _added(self, settings: Settings) -> dict[str, int]:
        raw: dict[bytes, bytes] = await self.redis.hgetall(k.EP_ADDED)  # type: ignore[misc]
        return {name.decode(): int(ms) for name, ms in raw.items() if name.decode() in settings.endpoints}

    async def reconfigure(self, settings: Settings) -> dict[str, list[str]]:
        """Run ``settings`` from now on (a config reload). Returns the endpoints added, changed, removed.

        A changed or removed endpoint's lane is retired: it claims nothing more and ends once its
        in-flight deliveries are recorded, while a new lane (changed) starts at once; the in-flight
        limit holds across both because it is counted in Redis leases. An added endpoint is recorded in
        ``relay:ep-added`` first (HSETNX: the first process to add it sets the time for all), so the
        fan-out gives it only notifications received after the reload.
        """
        old = self.settings.endpoints
        new = settings.endpoints
        added = sorted(set(new) - set(old))
        removed = sorted(set(old) - set(new))
        changed = sorted(name for name in set(old) & set(new) if old[name] != new[name])
        now = self.redis_ms()  # compared with receipt times, which are Redis's
        if added or removed:
            async with self.redis.pipeline(transaction=True) as pipe:
                for name in added:
                    pipe.hsetnx(k.EP_ADDED, name, str(now))
                if removed:
                    pipe.hdel(k.EP_ADDED, *removed)
                await pipe.execute()
        since = await self._added(settings)
        self.settings, self.policy, self.added = settings, settings.delivery, since
        self.poll_interval = settings.delivery.poll_interval
        self.sender.configure(settings.delivery, new)
        for name in (*removed, *changed):
            lane = self.lanes.pop(name)
            lane.retired = True
            lane.wake.set()
            self.retired.add(lane)
        for name in (*added, *changed):
            switched = name in old and old[name].mode != new[name].mode
            lane = self.lanes[name] = Lane(self, new[name], remode=switched)
            self._start_lane(lane)
        return {"added": added, "changed": changed, "removed": removed}

    async def drain_retired(self, timeout: float) -> None:
        """Wait (up to ``timeout`` s) for retired lanes to record what they had in flight."""
        lanes = list(self.retired)
        tasks = {t for lane in lanes for t in (lane.task, *lane.tasks) if t is not None}
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        for lane in lanes:
            if (lane.task is None or lane.task.done()) and not lane.tasks:
                self.retired.discard(lane)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming, let in-flight deliveries finish (up to ``grace`` s), then cancel the rest."""
        self.stopping = True
        self.fanout_signal.set()  # the batch in hand is routed, then the loop ends
        every = [*self.lanes.values(), *self.retired]
        for lane in every:
            lane.wake.set()
        lanes = [lane.task for lane in every if lane.task]
        inflight = [t for lane in every for t in lane.tasks]
        pending = {*lanes, *inflight, *([self.fanout_task] if self.fanout_task else [])}
        if pending:
            _, still = await asyncio.wait(pending, timeout=grace)
            for t in still:
                t.cancel()  # their leases expire and the deliveries are retried
            await asyncio.gather(*still, return_exceptions=True)

    def wake(self, endpoint: str) -> None:
        lane = self.lanes.get(endpoint)
        if lane is not None:
            lane.wake.set()

    # -- fan-out -----------------------------------------------------------------------------

    async def fanout(self, nid: str) -> int | None:
        """Route one stored notification to its endpoints now (workers/fanout.py), outside the batches:
        an old ingress's ARQ job, tests. Safe to run any number of times."""
        return await fanout.fan_out(self, nid)

    def unblock(self, oldest: int | None) -> None:
        """Wake the lanes (serial, per_order) whose claim no unrouted notification precedes any more.

        Only those: waking every blocked lane on every fan-out made each of them claim in vain.
        ``oldest`` is the seq of the oldest notification still waiting for its fan-out (-1: none;
        None: unknown, wake them all).
        """
        for lane in self.lanes.values():
            seq = lane.blocked_seq
            if seq is not None and (oldest is None or oldest < 0 or oldest > seq):
                lane.blocked_seq = None
                lane.wake.set()

    @property
    def retention_ms(self) -> int:
        return self.policy.retention_ms

    # -- claiming and delivering -------------------------------------------------------------

    def lease_ms(self, ep: Endpoint) -> int:
        return int((ep.timeout + self.policy.lease_margin) * 1000)

    # the lanes record and claim through ``self.step`` (workers/step.py) directly: a wrapper here was one
    # more coroutine per delivery

    # -- one attempt (workers/attempt.py) -----------------------------------------------------------

    async def attempt(self, ep: Endpoint, item: forward.Claimed) -> Result:
        """Send one delivery attempt and classify it; the result still has to be recorded."""
        # a lane a reload left running holds the Endpoint it started with (equal to the new one, not
        # the same object); one retired may finish a delivery to an endpoint no longer configured
        lane = self.lanes.get(ep.name)
        return await self.sender.attempt(
            ep, item, current=lane is not None and lane.endpoint is ep, redis_ms=self.redis_ms
        )

"""Delivery lanes: one per endpoint in each worker process.

A lane claims due deliveries for its endpoint through the engine's step calls (workers/step.py),
sends them (workers/attempt.py) and has their results recorded. A serial lane holds at most its
queue's head; a concurrent one runs up to the endpoint's in-flight limit, counted across all
processes in Redis leases. A lane retired by a reload claims nothing more and ends once what it
holds is recorded.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from config.settings import Endpoint
from relay.store.connection import REDIS_ERRORS
from workers import forward, remode
from workers.attempt import Result

if TYPE_CHECKING:
    from workers.engine import Engine

logger = structlog.get_logger()


@dataclass(eq=False)  # lanes are compared by identity (Engine.retired is a set of them)
class Lane:
    engine: Engine
    endpoint: Endpoint
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    # serial head (or per_order claim) waiting for the fan-out of an older notification: its seq (Engine.unblock)
    blocked_seq: int | None = None
    # when the lane's wait ends (loop time), so a claim hint of an earlier due time can wake it
    deadline: float = 0.0
    restarts: int = 0
    # a reload removed or changed its endpoint: it claims no more, and ends once its work is recorded
    retired: bool = False
    # a reload switched its endpoint's mode: re-score the queue before claiming
    remode: bool = False

    @property
    def done(self) -> bool:
        return self.engine.stopping or self.retired

    @property
    def serial(self) -> bool:
        return not self.endpoint.concurrent

    async def supervise(self) -> None:
        """Run the lane; an unexpected exception is logged and the lane restarted, never left stopped.

        What the crashed lane held is safe: a claimed delivery's lease expires and it is retried.
        """
        backoff = 0.1
        while not self.done:
            try:
                await self.run()
                return
            except Exception:
                self.restarts += 1
                logger.exception("lane_crashed", endpoint=self.endpoint.name, restart_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def run(self) -> None:
        if self.remode:
            await self._remode()
        if self.serial:
            await self._run_serial()
        else:
            await self._run_concurrent()

    async def _remode(self) -> None:
        """Re-score the endpoint's waiting work for its new mode (workers/remode.py), retrying a Redis
        error: nothing is claimed in the new mode from a queue still scored for the old one."""
        engine, ep = self.engine, self.endpoint
        backoff = 0.1
        while not self.done:
            try:
                count = await remode.remode(engine.redis, ep)
            except REDIS_ERRORS as exc:
                logger.warning("endpoint_remode_failed", endpoint=ep.name, error=type(exc).__name__, retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            logger.info("endpoint_remoded", endpoint=ep.name, mode=remode.mode_of(ep), deliveries=count)
            self.remode = False
            return

    async def _run_serial(self) -> None:
        """Record the head's result and claim the next head in one round trip."""
        engine, ep = self.engine, self.endpoint
        backoff = 0.1
        pending: Result | None = None
        while True:
            if self.done:
                if pending is not None:
                    await engine.step.record(pending)
                return
            # a wake that came before this claim is answered by it: clear it now, not after
            self.wake.clear()
            self.blocked_seq = None
            try:
                _, (code, wait, items) = await engine.step.request(self, pending, claim=True)
                backoff = 0.1
            except REDIS_ERRORS as exc:
                logger.warning("claim_failed", endpoint=ep.name, error=type(exc).__name__, retry_in=backoff)
                if pending is not None and time.monotonic() > pending.deadline:
                    engine.step.not_recorded(pending, exc)
                    pending = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            pending = None
            if items:
                try:
                    pending = await engine.attempt(ep, items[0])
                except Exception:  # a bug must not kill the lane; the lease expiry retries it
                    logger.exception("delivery_crashed", endpoint=ep.name, nid=items[0].nid)
                continue
            if code == "blocked":
                self.blocked_seq, wait = wait, 0
            await self._wait(wait)

    async def _run_concurrent(self) -> None:
        """Claim until the limit; each finished delivery records its result and claims again."""
        engine, ep = self.engine, self.endpoint
        backoff = 0.1
        while not self.done:
            self.wake.clear()
            try:
                _, (code, wait, items) = await engine.step.request(self, None, claim=True)
                backoff = 0.1
            except REDIS_ERRORS as exc:
                logger.warning("claim_failed", endpoint=ep.name, error=type(exc).__name__, retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if items:
                continue  # the engine started them (Engine._dispatch); there may be more room
            await self._wait(0 if code == "blocked" else wait)  # blocked: wait is a seq (per_order)

    async def _wait(self, wait_ms: int) -> None:
        """Wait for a wake, the poll interval, or ``wait_ms`` (ms from the claim, by Redis's clock)."""
        timeout = self.engine.poll_interval
        if wait_ms:
            timeout = min(timeout, wait_ms / 1000)
        self.deadline = asyncio.get_running_loop().time() + timeout
        try:
            await asyncio.wait_for(self.wake.wait(), timeout)
        except TimeoutError:
            pass
        self.deadline = 0.0

    def hint(self, due_in_ms: int) -> None:
        """A claim made for this lane found its first item due in ``due_in_ms``: wake it then, not later."""
        if self.deadline and due_in_ms / 1000 < self.deadline - asyncio.get_running_loop().time():
            self.wake.set()

    def start(self, items: list[forward.Claimed]) -> None:
        for item in items:
            task = asyncio.create_task(self._deliver(item))
            self.tasks.add(task)
            task.add_done_callback(self._done)

    async def _deliver(self, item: forward.Claimed) -> None:
        engine = self.engine
        result = await engine.attempt(self.endpoint, item)
        await engine.step.record(result, claim=self)

    def adopt(self, items: list[forward.Claimed]) -> None:
        """Send items claimed for this endpoint's previous lane (retired by a reload meanwhile)."""
        for item in items:
            self._track(asyncio.create_task(self._adopted(item)))

    async def _adopted(self, item: forward.Claimed) -> None:
        engine = self.engine
        result = await engine.attempt(self.endpoint, item)
        await engine.step.record(result)
        self.wake.set()  # a serial lane found its head leased meanwhile: it is free now

    def _track(self, task: asyncio.Task[None]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def release(self, items: list[forward.Claimed], why: str) -> None:
        """Give back claimed items unsent (recorded as such, due again at once), e.g. claims that came
        back after this lane was retired. Tracked with the lane's deliveries, so a stop waits for them."""
        for item in items:
            result = self.engine.sender.not_sent(self.endpoint, item, why, self.engine.redis_ms())
            self._track(asyncio.create_task(self.engine.step.record(result)))

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("delivery_crashed", endpoint=self.endpoint.name, exc_info=task.exception())
            self.wake.set()

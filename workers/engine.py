"""The delivery engine: one lane per endpoint, claiming work from Redis under a lease.

Each worker process runs a lane for every configured endpoint. A lane claims due deliveries with
claim.lua, which enforces the endpoint's in-flight limit across *all* processes (a lease per
delivery in ``relay:ep:{ep}:lease``), sends them, and records each result with complete.lua. A
serial endpoint's queue is ordered by receipt and only its head is ever claimed, so a delivery
waiting to retry holds back the later ones. A lease that expires without a result (a worker killed
mid-delivery) makes the delivery due again: nothing is lost or left ``in_flight``.

The lanes of a process share their Redis round trips: results to record and claims to make are
queued, and one script call (step.lua) records every waiting result and then claims for every lane
that asked. A call is sent as soon as none is in flight, so an idle worker waits for nothing, and a
busy one sends fewer, larger calls (a redis-py call costs ~55 us of worker CPU whatever it carries).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from config.settings import Endpoint, Settings
from relay import constants as k
from relay.store.connection import REDIS_ERRORS
from relay.store.endpoints import Removed
from workers import forward, remode, wire
from workers.attempt import NOT_SENT_RETIRED, Result, Sender
from workers.fanout import fan_out

logger = structlog.get_logger()

CLAIM_BATCH = 64


Claim = tuple[str, int, list[forward.Claimed]]  # code, wait (ms from now, or blocking seq), items


class _Batch:
    """What the next step.lua call carries."""

    __slots__ = ("results", "claims")

    def __init__(self) -> None:
        self.results: list[tuple[Result, asyncio.Future[bool]]] = []
        # keyed by the lane that asked, never by its endpoint's name: a reload that changes an endpoint
        # starts a new lane under the same name while the retired one may still be waiting, and one
        # claim shared by both sent a serial item twice at once, one request per lane (issue 21)
        self.claims: dict[Lane, asyncio.Future[Claim]] = {}

    def futures(self) -> list[asyncio.Future[Any]]:
        return [f for _, f in self.results] + list(self.claims.values())

    def fail(self, exc: BaseException) -> None:
        """Every future not yet settled gets ``exc``: nobody waiting on this batch waits forever."""
        for fut in self.futures():
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # a claim nobody awaits (Engine.record) must not warn "never retrieved"


@dataclass(eq=False)  # lanes are compared by identity (Engine.retired is a set of them)
class Lane:
    engine: Engine
    endpoint: Endpoint
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    # serial head waiting for the fan-out of an older notification: its seq (see Engine.fanout)
    blocked_seq: int | None = None
    # when the lane's wait ends (loop time), so a claim hint of an earlier due time can wake it
    deadline: float = 0.0
    restarts: int = 0
    # a reload removed or changed its endpoint: it claims no more, and ends once its work is recorded
    retired: bool = False
    # a reload switched its endpoint between serial and concurrent: re-score the queue before claiming
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
                count = await remode.remode(engine.redis, engine.remode_script, ep)
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
                    await engine.record(pending)
                return
            # a wake that came before this claim is answered by it: clear it now, not after
            self.wake.clear()
            self.blocked_seq = None
            try:
                _, (code, wait, items) = await engine.request(self, pending, claim=True)
                backoff = 0.1
            except REDIS_ERRORS as exc:
                logger.warning("claim_failed", endpoint=ep.name, error=type(exc).__name__, retry_in=backoff)
                if pending is not None and time.monotonic() > pending.deadline:
                    engine.not_recorded(pending, exc)
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
                _, (code, wait, items) = await engine.request(self, None, claim=True)
                backoff = 0.1
            except REDIS_ERRORS as exc:
                logger.warning("claim_failed", endpoint=ep.name, error=type(exc).__name__, retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if items:
                continue  # the engine started them (Engine._dispatch); there may be more room
            await self._wait(wait)

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
        await engine.record(result, claim=self)

    def adopt(self, items: list[forward.Claimed]) -> None:
        """Send items claimed for this endpoint's previous lane (retired by a reload meanwhile)."""
        for item in items:
            self._track(asyncio.create_task(self._adopted(item)))

    async def _adopted(self, item: forward.Claimed) -> None:
        engine = self.engine
        result = await engine.attempt(self.endpoint, item)
        await engine.record(result)
        self.wake.set()  # a serial lane found its head leased meanwhile: it is free now

    def _track(self, task: asyncio.Task[None]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def release(self, items: list[forward.Claimed], why: str) -> None:
        """Give back claimed items unsent (recorded as such, due again at once), e.g. claims that came
        back after this lane was retired. Tracked with the lane's deliveries, so a stop waits for them."""
        for item in items:
            result = self.engine.sender.not_sent(self.endpoint, item, why, self.engine.redis_ms())
            self._track(asyncio.create_task(self.engine.record(result)))

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("delivery_crashed", endpoint=self.endpoint.name, exc_info=task.exception())
            self.wake.set()


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
        # complete.lua and claim.lua define the functions step.lua calls: one script, one round trip
        self._step = wire.script(redis, "complete", "claim", "step")
        self.route_script = wire.script(redis, "route")
        self.remode_script = wire.script(redis, "remode")
        self.lanes = {name: Lane(self, ep) for name, ep in settings.endpoints.items()}
        # lanes a reload took out of service, until their in-flight deliveries are recorded
        self.retired: set[Lane] = set()
        # endpoint -> ms (Redis's clock) a reload added it: the fan-out gives it only what came after
        self.added: dict[str, int] = {}
        # endpoints a reload or restart removed (relay/store/endpoints.py), kept current by workers/jobs.py
        self.removed: dict[str, Removed] = {}
        self._next: _Batch | None = None
        self._flusher: asyncio.Task[None] | None = None
        # Redis's clock minus this process's, learned from every step.lua reply (see redis_ms)
        self.skew_ms = 0

    def now_ms(self) -> int:
        """This process's clock: for what is only displayed or logged."""
        return int(self.clock() * 1000)

    def redis_ms(self) -> int:
        """Redis's clock, as last learned: what the scripts compare times by, whatever this machine's says."""
        return self.now_ms() + self.skew_ms

    async def start(self) -> None:
        self.added = await self._added(self.settings)
        for lane in self.lanes.values():
            self._start_lane(lane)

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
            switched = name in old and old[name].concurrent != new[name].concurrent
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
        every = [*self.lanes.values(), *self.retired]
        for lane in every:
            lane.wake.set()
        lanes = [lane.task for lane in every if lane.task]
        inflight = [t for lane in every for t in lane.tasks]
        pending = {*lanes, *inflight}
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

    async def fanout(self, nid: str) -> int:
        """Route one stored notification to its endpoints (workers/fanout.py). Safe to run any number of times."""
        return await fan_out(self, nid)

    def unblock(self, oldest: int | None) -> None:
        """Wake the serial lanes whose head no unrouted notification precedes any more.

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

    async def request(self, lane: Lane, result: Result | None, *, claim: bool) -> tuple[bool | None, Claim]:
        """Record ``result`` (if any) and claim for ``lane``, in the next step.lua call."""
        batch = self._batch()
        recorded = None
        if result is not None:
            recorded = asyncio.get_running_loop().create_future()
            batch.results.append((result, recorded))
        claimed = batch.claims.get(lane)
        if claimed is None:
            claimed = batch.claims[lane] = asyncio.get_running_loop().create_future()
        return (await recorded if recorded is not None else None), await claimed

    async def record(self, result: Result, claim: Lane | None = None) -> None:
        """Record one result; a concurrent lane claims again in the same call (its slot is free now).

        A Redis blip must not lose a result: it is retried until its deadline (complete.lua records an
        attempt once however often it is sent); past that the lease expires and the delivery is simply
        made again (at least once).
        """
        wait = 0.05
        while True:
            batch = self._batch()
            recorded: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            batch.results.append((result, recorded))
            if claim is not None and not claim.done and claim not in batch.claims:
                # nobody awaits this claim: Engine._run hands its items to the lane
                batch.claims[claim] = asyncio.get_running_loop().create_future()
            try:
                await recorded
                return
            except Exception as exc:
                # not only Redis errors: a step call that failed past Redis (step_failed, a reply it could
                # not read) hands its error to every result of the call, and raised here it crashed the
                # delivery's task (delivery_crashed) with its result unrecorded. Recording again is safe:
                # complete.lua records an attempt once however often it is sent
                if time.monotonic() > result.deadline:
                    self.not_recorded(result, exc)
                    return
                await asyncio.sleep(wait * self.rand())
                wait = min(wait * 2, 1.0)

    def not_recorded(self, result: Result, exc: BaseException) -> None:
        logger.error("result_not_recorded", endpoint=result.ep.name, nid=result.nid, error=type(exc).__name__,
                     outcome=result.outcome)

    # -- the step.lua call: a small state machine ----------------------------------------------
    # _next: the batch being filled (None: nothing queued); _flusher: the task sending batches one
    # call at a time (None: none running). Invariant: whenever _next is set, a flusher runs or is
    # about to, whatever any step raised.

    def _batch(self) -> _Batch:
        if self._next is None:
            self._next = _Batch()
        self._ensure_flusher()
        return self._next

    def _ensure_flusher(self) -> None:
        if self._flusher is None and self._next is not None:
            self._flusher = asyncio.create_task(self._flush(), name="step")

    async def _flush(self) -> None:
        """Send the queued batches one call at a time; what queues up meanwhile goes in the next."""
        try:
            while self._next is not None:
                batch, self._next = self._next, None
                try:
                    await self._run(batch)
                except Exception as exc:
                    # a bug past the call (a reply it cannot read): this batch fails, the next goes on
                    logger.exception("step_failed", results=len(batch.results), claims=len(batch.claims))
                    batch.fail(exc)
                except BaseException:
                    # cancelled mid-call: to the waiting lanes a failed call (they retry), not their own
                    # cancellation, which would end them
                    batch.fail(StepInterrupted("the step call was interrupted"))
                    raise
        finally:
            self._flusher = None
            self._ensure_flusher()

    async def _run(self, batch: _Batch) -> None:
        keys, args = self._encode(batch)
        before = self.now_ms()
        sent = time.monotonic()  # before Redis's TIME: what it claims is held at least a lease from now
        raw = await self._call(batch, keys, args)
        if raw is None:
            return
        # Redis's clock at the call, against ours at its midpoint
        self.skew_ms = int(raw[0]) - (before + self.now_ms()) // 2
        pos = self._settle_results(batch, raw, 1)
        self._settle_claims(batch, raw, pos, sent)

    def _encode(self, batch: _Batch) -> tuple[list[str], list[str | int]]:
        keys = [k.FANOUT, k.STATS]
        args: list[str | int] = [len(batch.results)]
        for result, _ in batch.results:
            args.extend(result.args())
            keys.extend(result.keys())
        for lane, wanted in list(batch.claims.items()):
            # a lane retired (by a reload) or stopping while its claim was queued claims nothing more
            if lane.done:
                del batch.claims[lane]
                if not wanted.done():
                    wanted.set_result(("idle", 0, []))
                continue
            ep = lane.endpoint
            name = ep.name
            by_name: dict[str, str | int] = {
                "ep": name, "serial": 0 if ep.concurrent else 1, "limit": ep.in_flight_limit,
                "lease_ms": self.lease_ms(ep), "batch": CLAIM_BATCH,
            }
            args.extend(by_name[f] for f in wire.CLAIM_FIELDS)
            keys.extend(wire.claim_keys(name))
        return keys, args

    async def _call(self, batch: _Batch, keys: list[str], args: list[str | int]) -> list[Any] | None:
        """The script call; an error fails every future of the batch (their owners retry)."""
        try:
            raw: list[Any] = await self._step(keys=keys, args=args)
            return raw
        except Exception as exc:
            batch.fail(exc)
            return None
        except BaseException:
            batch.fail(StepInterrupted("the step call was interrupted"))
            raise

    def _settle_results(self, batch: _Batch, raw: list[Any], pos: int) -> int:
        for result, fut in batch.results:
            flag = raw[pos]
            pos += 1
            if flag == b"err":
                if not fut.done():
                    fut.set_exception(ResultNotRecorded(f"complete.lua raised for {result.nid}"))
                continue
            if int(flag) == 0:
                logger.warning("stale_result", endpoint=result.ep.name, nid=result.nid, outcome=result.outcome)
            if not fut.done():
                fut.set_result(int(flag) != 0)
        return pos

    def _settle_claims(self, batch: _Batch, raw: list[Any], pos: int, sent: float) -> None:
        width = len(wire.CLAIMED_FIELDS)
        for lane, fut in batch.claims.items():
            code, wait, count = raw[pos].decode(), int(raw[pos + 1]), int(raw[pos + 2])
            pos += 3
            held_until = sent + self.lease_ms(lane.endpoint) / 1000
            items = [_claimed(raw[i:i + width], held_until) for i in range(pos, pos + width * count, width)]
            pos += width * count
            if items and lane.done:
                # retired by a reload (or stopping) while the call was out: it sends nothing it did not
                # hold before. The endpoint's current lane sends them, with the current config; with no
                # such lane (removed, or the worker stopping) they are given back unsent
                heir = self.lanes.get(lane.endpoint.name)
                if heir is not None and not heir.done:
                    heir.adopt(items)
                else:
                    lane.release(items, NOT_SENT_RETIRED)
                code, items = "idle", []
            if not lane.serial:
                lane.start(items)  # whoever asked, the lane runs what was claimed for it
                if code == "idle" and wait:
                    lane.hint(wait)
            if not fut.done():
                fut.set_result((code, wait, items))

    # -- one attempt (workers/attempt.py) -----------------------------------------------------------

    async def attempt(self, ep: Endpoint, item: forward.Claimed) -> Result:
        """Send one delivery attempt and classify it; the result still has to be recorded."""
        # a lane a reload left running holds the Endpoint it started with (equal to the new one, not
        # the same object); one retired may finish a delivery to an endpoint no longer configured
        lane = self.lanes.get(ep.name)
        return await self.sender.attempt(ep, item, current=lane is not None and lane.endpoint is ep,
                                         redis_ms=self.redis_ms)


class StepInterrupted(RedisError):
    """The step.lua call was cancelled before Redis answered: whether it ran is unknown."""


class ResultNotRecorded(RedisError):
    """complete.lua raised for this one result (the others of its call were recorded)."""


def _claimed(values: list[Any], held_until: float = math.inf) -> forward.Claimed:
    # in wire.CLAIMED_FIELDS order (tests/test_lua_keys.py checks the two agree)
    nid, attempt, body, ct, source, channel, recv, resend_of, flag, paused_ms = values
    return forward.Claimed(
        nid=nid.decode(), attempt=int(attempt), body=body, content_type=ct.decode(), source=source.decode(),
        channel=channel.decode(), received_ms=int(recv or 0), resend_of=resend_of.decode(), flag=flag.decode(),
        paused_ms=int(paused_ms or 0), held_until=held_until,
    )




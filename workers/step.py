"""The step calls: one script call (step.lua) records every waiting result and claims for every lane.

The lanes of a process share their Redis round trips: results to record and claims to make are
queued, and one call records every waiting result and then claims for every lane that asked. A call
is sent as soon as none is in flight, so an idle worker waits for nothing, and a busy one sends
fewer, larger calls (a redis-py call costs ~55 us of worker CPU whatever it carries).
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
import zlib
from typing import TYPE_CHECKING, Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from relay import constants as k
from relay.store import body as stored_body
from relay.store.scripts import script
from workers import forward, wire
from workers.attempt import NOT_SENT_RETIRED, Result
from workers.lanes import Lane

if TYPE_CHECKING:
    from workers.engine import Engine

logger = structlog.get_logger()

CLAIM_BATCH = 64

Claim = tuple[str, int, list[forward.Claimed]]  # code, wait (ms from now, or blocking seq), items


class Batch:
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
                fut.exception()  # a claim nobody awaits (Stepper.record) must not warn "never retrieved"


class Stepper:
    """Queues results and claims, and sends them one step.lua call at a time."""

    def __init__(self, redis: Redis, engine: Engine) -> None:
        self.engine = engine
        # complete.lua and claim.lua define the functions step.lua calls: one script, one round trip
        self.script = script(wire.STEP)
        self.redis = redis
        self._next: Batch | None = None
        self._flusher: asyncio.Task[None] | None = None
        # per lane (weakly: a retired lane goes with its task), its claim's ARGV and the policy it is for
        self._claims: weakref.WeakKeyDictionary[Lane, tuple[object, tuple[str | int, ...]]] = (
            weakref.WeakKeyDictionary()
        )

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
                # nobody awaits this claim: Stepper._settle_claims hands its items to the lane
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
                await asyncio.sleep(wait * self.engine.rand())
                wait = min(wait * 2, 1.0)

    def not_recorded(self, result: Result, exc: BaseException) -> None:
        logger.error(
            "result_not_recorded",
            endpoint=result.ep.name,
            nid=result.nid,
            error=type(exc).__name__,
            outcome=result.outcome,
        )

    # -- the step.lua call: a small state machine ----------------------------------------------
    # _next: the batch being filled (None: nothing queued); _flusher: the task sending batches one
    # call at a time (None: none running). Invariant: whenever _next is set, a flusher runs or is
    # about to, whatever any step raised.

    def _batch(self) -> Batch:
        if self._next is None:
            self._next = Batch()
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

    async def _run(self, batch: Batch) -> None:
        keys, args = self._encode(batch)
        before = self.engine.now_ms()
        sent = time.monotonic()  # before Redis's TIME: what it claims is held at least a lease from now
        raw = await self._call(batch, keys, args)
        if raw is None:
            return
        # Redis's clock at the call, against ours at its midpoint
        self.engine.skew_ms = int(raw[0]) - (before + self.engine.now_ms()) // 2
        pos = self._settle_results(batch, raw, 1)
        self._settle_claims(batch, raw, pos, sent)

    def _encode(self, batch: Batch) -> tuple[list[str], list[str | int]]:
        keys = wire.STEP.pack_keys(fanout=k.FANOUT, stats=k.STATS)
        args: list[str | int] = wire.STEP.pack_args(results=len(batch.results))
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
            args.extend(self._claim_args(lane))
            keys.extend(wire.claim_keys(lane.endpoint.name))
        return keys, args

    def _claim_args(self, lane: Lane) -> tuple[str | int, ...]:
        """A lane's claim, the same in every call until a reload changes the delivery policy (its lease)."""
        policy = self.engine.policy
        cached = self._claims.get(lane)
        if cached is not None and cached[0] is policy:
            return cached[1]
        ep = lane.endpoint
        by_name: dict[str, str | int] = {
            "ep": ep.name,
            "mode": ep.mode,
            "limit": ep.in_flight_limit,
            "lease_ms": self.engine.lease_ms(ep),
            "batch": CLAIM_BATCH,
            # rate_limit as GCRA's emission interval (0: none); fractions of a ms are kept
            "interval_ms": repr(1000 / ep.rate_limit) if ep.rate_limit else 0,
            "burst": ep.rate_burst,
        }
        args = tuple(by_name[f] for f in wire.CLAIM_FIELDS)
        self._claims[lane] = (policy, args)
        return args

    async def _call(self, batch: Batch, keys: list[str], args: list[str | int]) -> list[Any] | None:
        """The script call; an error fails every future of the batch (their owners retry)."""
        try:
            raw: list[Any] = await self.script(keys=keys, args=args, client=self.redis)
            return raw
        except Exception as exc:
            batch.fail(exc)
            return None
        except BaseException:
            batch.fail(StepInterrupted("the step call was interrupted"))
            raise

    def _settle_results(self, batch: Batch, raw: list[Any], pos: int) -> int:
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

    def _settle_claims(self, batch: Batch, raw: list[Any], pos: int, sent: float) -> None:
        width = len(wire.CLAIMED_FIELDS)
        for lane, fut in batch.claims.items():
            code, wait, count = raw[pos].decode(), int(raw[pos + 1]), int(raw[pos + 2])
            pos += 3
            held_until = sent + self.engine.lease_ms(lane.endpoint) / 1000
            items = [claimed(raw[i : i + width], held_until) for i in range(pos, pos + width * count, width)]
            pos += width * count
            if items and lane.done:
                # retired by a reload (or stopping) while the call was out: it sends nothing it did not
                # hold before. The endpoint's current lane sends them, with the current config; with no
                # such lane (removed, or the worker stopping) they are given back unsent
                heir = self.engine.lanes.get(lane.endpoint.name)
                if heir is not None and not heir.done:
                    heir.adopt(items)
                else:
                    lane.release(items, NOT_SENT_RETIRED)
                code, items = "idle", []
            if not lane.serial:
                lane.start(items)  # whoever asked, the lane runs what was claimed for it
                if code == "blocked":  # per_order: the fan-out of that seq's predecessor wakes it
                    lane.blocked_seq = wait
                if code in ("idle", "throttled") and wait:
                    lane.hint(wait)
            if not fut.done():
                fut.set_result((code, wait, items))


class StepInterrupted(RedisError):
    """The step.lua call was cancelled before Redis answered: whether it ran is unknown."""


class ResultNotRecorded(RedisError):
    """complete.lua raised for this one result (the others of its call were recorded)."""


def claimed(values: list[Any], held_until: float = math.inf) -> forward.Claimed:
    # in wire.CLAIMED_FIELDS order (tests/test_lua_keys.py checks the two agree)
    nid, attempt, body, ct, source, channel, recv, resend_of, flag, paused_ms, unsent, packed = values
    unreadable = ""
    if int(packed):
        try:
            body = stored_body.restore(None, body)
        except zlib.error as exc:
            # bit rot, a hand edit: raised here it failed the step call of every lane sharing it
            body, unreadable = b"", f"the stored body does not decompress ({exc})"
    return forward.Claimed(
        nid=nid.decode(),
        attempt=int(attempt),
        body=body,
        content_type=ct.decode(),
        source=source.decode(),
        channel=channel.decode(),
        received_ms=int(recv or 0),
        resend_of=resend_of.decode(),
        flag=flag.decode(),
        paused_ms=int(paused_ms or 0),
        unsent=int(unsent or 0),
        held_until=held_until,
        unreadable=unreadable,
    )

"""The delivery engine: one lane per endpoint, claiming work from Redis under a lease.

Each worker process runs a lane for every configured endpoint. A lane claims due deliveries with
claim.lua, which enforces the endpoint's in-flight limit across *all* processes (a lease per
delivery in ``relay:ep:{ep}:lease``), sends them, and records each result with complete.lua. A
serial endpoint's queue is ordered by receipt and only its head is ever claimed, so a delivery
waiting to retry holds back the later ones. A lease that expires without a result (a worker killed
mid-delivery) makes the delivery due again: nothing is lost or left ``in_flight``.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_random_exponential

from config.settings import Endpoint, Settings
from relay import constants as k
from relay.lua import register
from relay.metrics import LATENCY_BUCKETS
from workers import forward, routing, schedule

logger = structlog.get_logger()

CLAIM_BATCH = 64
LEASE_MARGIN_S = 5.0
MAX_ANSWER_BYTES = 1 << 20
REDIS_ERRORS = (RedisError, OSError)


def bucket(seconds: float) -> int:
    for i, upper in enumerate(LATENCY_BUCKETS):
        if seconds <= upper:
            return i
    return len(LATENCY_BUCKETS)


@dataclass
class Lane:
    engine: Engine
    endpoint: Endpoint
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    task: asyncio.Task[None] | None = None

    @property
    def serial(self) -> bool:
        return not self.endpoint.concurrent

    async def run(self) -> None:
        engine, ep = self.engine, self.endpoint
        log = logger.bind(endpoint=ep.name)
        backoff = 0.1
        while not engine.stopping:
            try:
                code, wait_until, items = await engine.claim(ep)
                backoff = 0.1
            except REDIS_ERRORS as exc:
                log.warning("claim_failed", error=type(exc).__name__, retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if items:
                if self.serial:
                    try:
                        await engine.deliver(ep, items[0])
                    except Exception:  # a bug must not kill the lane; the lease expiry retries it
                        log.exception("delivery_crashed", nid=items[0].nid)
                else:
                    for item in items:
                        task = asyncio.create_task(engine.deliver(ep, item))
                        self.tasks.add(task)
                        task.add_done_callback(self._done)
                continue
            timeout = engine.poll_interval
            if wait_until:
                timeout = min(timeout, max(0.0, wait_until / 1000 - engine.clock()))
            try:
                await asyncio.wait_for(self.wake.wait(), timeout)
            except TimeoutError:
                pass
            self.wake.clear()

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
        self.policy = settings.delivery
        self.poll_interval = settings.delivery.poll_interval
        self.stopping = False
        self._claim = register(redis, "claim", "workers")
        self._complete = register(redis, "complete", "workers")
        self._route = register(redis, "route", "workers")
        self.lanes = {name: Lane(self, ep) for name, ep in settings.endpoints.items()}

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def start(self) -> None:
        for lane in self.lanes.values():
            lane.task = asyncio.create_task(lane.run(), name=f"lane:{lane.endpoint.name}")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming, let in-flight deliveries finish (up to ``grace`` s), then cancel the rest."""
        self.stopping = True
        for lane in self.lanes.values():
            lane.wake.set()
        lanes = [lane.task for lane in self.lanes.values() if lane.task]
        inflight = [t for lane in self.lanes.values() for t in lane.tasks]
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
        """Route one stored notification to its endpoints. Safe to run any number of times."""
        source, channel, mtype, status, test, targets = await self.redis.hmget(  # type: ignore[misc]
            k.notification(nid), ["source", "channel", "mtype", "status", "test", "targets"]
        )
        if source is None:
            await self.redis.zrem(k.FANOUT, nid)
            return -1
        only = frozenset(targets.decode().split(",")) if targets else None
        routes = routing.route(
            self.settings.endpoints.values(), source=source.decode(), channel=channel.decode(),
            mtype=(mtype or b"").decode(), status=(status or b"").decode(), test=test == b"1", only=only,
        )
        args: list[str | int] = [nid, self.now_ms(), self.retention_ms]
        for route in routes:
            args.extend(route)
        created = int(await self._route(keys=[k.notification(nid), k.FANOUT], args=args))
        for name, mode, _ in routes:
            if mode != "skip":
                self.wake(name)
        return created

    @property
    def retention_ms(self) -> int:
        return int(self.policy.retention_days * 86_400_000)

    # -- claiming and delivering -------------------------------------------------------------

    async def claim(self, ep: Endpoint) -> tuple[str, int, list[forward.Claimed]]:
        lease_ms = int((ep.timeout + LEASE_MARGIN_S) * 1000)
        raw = await self._claim(
            keys=[k.ep_queue(ep.name), k.ep_lease(ep.name), k.FANOUT],
            args=[ep.name, self.now_ms(), 0 if ep.concurrent else 1, ep.in_flight_limit, lease_ms, CLAIM_BATCH],
        )
        code = raw[0].decode()
        items = [
            forward.Claimed(
                nid=raw[i].decode(), attempt=int(raw[i + 1]), body=raw[i + 2], content_type=raw[i + 3].decode(),
                source=raw[i + 4].decode(), channel=raw[i + 5].decode(), received_ms=int(raw[i + 6] or 0),
                resend_of=raw[i + 7].decode(), flag=raw[i + 8].decode(),
            )
            for i in range(2, len(raw), 9)
        ]
        return code, int(raw[1]), items

    async def deliver(self, ep: Endpoint, item: forward.Claimed) -> None:
        log = logger.bind(endpoint=ep.name, nid=item.nid, attempt=item.attempt)
        started_ms = self.now_ms()
        t0 = time.perf_counter()
        body, headers = forward.build(ep, item, int(self.clock()))
        status: int | None = None
        error = message = ""
        snippet = b""
        retry_after: float | None = None
        try:
            async with self.session.post(
                ep.url, data=body, headers=headers, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=ep.timeout),
            ) as resp:
                status = resp.status
                snippet = await _read_answer(resp, self.policy.response_snippet_bytes)
                if status in (429, 503):
                    retry_after = forward.parse_retry_after(resp.headers.get("Retry-After"))
            outcome = forward.classify(status, ep)
            if outcome == "failed":
                message = f"HTTP {status} is not retried (add it to retry_4xx to retry it)"
        except TimeoutError:
            outcome, error, message = "retry", "timeout", f"no complete answer within {ep.timeout:g} s"
        except aiohttp.ClientError as exc:
            outcome, error, message = "retry", _error_class(exc), str(exc)[:300] or type(exc).__name__
        except (ValueError, UnicodeError) as exc:  # e.g. an invalid header value from the endpoint's config
            outcome, error, message = "failed", "request_error", str(exc)[:300]
        duration = time.perf_counter() - t0
        now_ms = self.now_ms()
        next_ms = 0
        if outcome == "retry":
            delay = schedule.retry_delay(item.attempt, item.received_ms, now_ms, ep, self.policy,
                                         retry_after=retry_after, rand=self.rand)
            if delay is None:
                outcome = "failed"
                message = (message + "; " if message else "") + "out of retries"
            else:
                next_ms = now_ms + int(delay * 1000)
        record = {
            "n": item.attempt, "at": started_ms, "ms": round(duration * 1000, 1), "outcome": outcome,
            "status": status, "error": error or None, "message": message or None,
            "response": snippet.decode("utf-8", "replace"), "next": next_ms or None,
            "resend": bool(item.resend_of),
        }
        last = f"HTTP {status}" if status is not None else error
        stats: list[str | float] = [f"{ep.name}|{outcome}", 1, f"{ep.name}|lat|{bucket(duration)}", 1,
                                    f"{ep.name}|lat|sum", round(duration, 6)]
        if outcome == "delivered" and item.received_ms:
            r2d = max(0.0, (now_ms - item.received_ms) / 1000)
            stats += [f"{ep.name}|r2d|{bucket(r2d)}", 1, f"{ep.name}|r2d|sum", round(r2d, 6)]
        args: list[str | int | float] = [
            item.nid, ep.name, item.attempt, outcome, now_ms, next_ms,
            json.dumps(record, separators=(",", ":")), self.retention_ms, last, *stats,
        ]
        keys = [k.delivery(item.nid, ep.name), k.attempts(item.nid, ep.name), k.ep_queue(ep.name),
                k.ep_lease(ep.name), k.ep_minute(ep.name, now_ms // 60_000), k.STATS]
        try:
            # a Redis blip must not lose a result: retry briefly; past that the lease expires and
            # the delivery is simply made again (at least once)
            async for attempt in AsyncRetrying(
                stop=stop_after_delay(ep.timeout), wait=wait_random_exponential(multiplier=0.05, max=1),
                retry=retry_if_exception_type(REDIS_ERRORS), reraise=True,
            ):
                with attempt:
                    fresh = await self._complete(keys=keys, args=args)
        except REDIS_ERRORS as exc:
            log.error("result_not_recorded", error=type(exc).__name__, outcome=outcome)
            return
        if not fresh:
            log.warning("stale_result", outcome=outcome)
        log.info("delivery_attempt", outcome=outcome, status=status, error=error or None,
                 duration_ms=record["ms"], next_ms=next_ms or None)


async def _read_answer(resp: aiohttp.ClientResponse, keep: int) -> bytes:
    """Read the whole answer (it only counts once complete, within the timeout), keeping its start.

    Reading to the end also lets the connection go back to the keep-alive pool.
    """
    kept = bytearray()
    total = 0
    async for chunk in resp.content.iter_any():
        if len(kept) < keep:
            kept += chunk[: keep - len(kept)]
        total += len(chunk)
        if total > MAX_ANSWER_BYTES:
            break  # a huge answer is not worth the time: the status already decided the outcome
    return bytes(kept)


def _error_class(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect_error"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "disconnected"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "bad_response_body"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "bad_response"
    if isinstance(exc, aiohttp.ClientOSError):
        return "connection_reset"
    return type(exc).__name__

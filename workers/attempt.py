"""One delivery attempt: the HTTP request, its answer classified, the retry scheduled, the result built.

What comes out is a ``Result`` still to be recorded (workers/step.py queues it for complete.lua).
The per-endpoint parts of a request (timeout, parsed URL, configured headers) are built once, at start
and on every reload, not once per request.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp
import structlog
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import BytesPayload
from yarl import URL

from config.settings import DeliveryConfig, Endpoint
from relay.constants import LATENCY_BUCKETS
from workers import forward, schedule, wire

logger = structlog.get_logger()

MAX_ANSWER_BYTES = 1 << 20

# a claimed delivery given back unsent: complete.lua makes it due again at once (fenced by its attempt)
DROPPED = "dropped"
NOT_SENT_LEASE, NOT_SENT_RETIRED = "lease_expired", "lane_retired"
NOT_SENT_MESSAGES = {
    NOT_SENT_LEASE: "not sent: its lease could run out before the request ended (the worker was stalled); "
    "claimed again",
    NOT_SENT_RETIRED: "not sent: a reload retired this endpoint's lane before the claim came back",
}


def compact(record: Mapping[str, object]) -> str:
    """An attempt record as stored: JSON without the fields that say nothing (null, false, ""), about 40
    bytes less in each of millions of records; readers take a missing field as null
    (relay/store/detail.py ``attempt_record``)."""
    kept = {name: v for name, v in record.items() if v is not None and v is not False and v != ""}
    return json.dumps(kept, separators=(",", ":"))


def bucket(seconds: float, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> int:
    for i, upper in enumerate(bounds):
        if seconds <= upper:
            return i
    return len(bounds)


@dataclass
class Result:
    """One finished attempt, waiting to be recorded (complete.lua reads it by workers.wire.RESULT_FIELDS)."""

    ep: Endpoint
    nid: str
    attempt: int
    outcome: str  # delivered | retry | failed | dropped (claimed, not sent: see Sender.not_sent)
    delay_ms: int  # retry: how long from now (Redis's clock) until the next attempt
    record: str  # the attempt's JSON record
    last: str  # short status text: "HTTP 500", "timeout"
    lat_bucket: int
    lat_us: int
    recv: int  # the notification's receipt ms (Redis's clock), for receipt-to-delivery
    deadline: float  # monotonic: past it, a result Redis would not take is given up (its lease retries)

    def args(self) -> list[str | int]:
        # in wire.RESULT_FIELDS order (tests/test_lua_keys.py checks the two agree): a list per result
        # rather than a dict looked up by name, since this runs for every delivery
        return [
            self.nid,
            self.ep.name,
            self.attempt,
            self.outcome,
            self.delay_ms,
            self.record,
            self.last,
            self.lat_bucket,
            self.lat_us,
            self.recv,
        ]

    def keys(self) -> list[str]:
        to_state = "retrying" if self.outcome in ("retry", DROPPED) else self.outcome
        return wire.result_keys(self.nid, self.ep.name, to_state)


@dataclass
class Answer:
    """What one HTTP attempt came to, before it is scheduled."""

    outcome: str
    status: int | None = None
    error: str = ""
    message: str = ""
    snippet: bytes = b""
    retry_after: float | None = None


class Sender:
    """Makes attempts with one shared ``aiohttp`` session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        policy: DeliveryConfig,
        endpoints: Mapping[str, Endpoint],
        *,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.session = session
        self.clock = clock
        self.rand = rand
        self.configure(policy, endpoints)

    def configure(self, policy: DeliveryConfig, endpoints: Mapping[str, Endpoint]) -> None:
        """Build the per-endpoint parts once (at start and on a reload) rather than once per request."""
        self.policy = policy
        self._timeouts = {name: aiohttp.ClientTimeout(total=ep.timeout) for name, ep in endpoints.items()}
        self._urls = {name: URL(ep.url) for name, ep in endpoints.items()}
        self._headers = {name: forward.configured_headers(ep) for name, ep in endpoints.items()}

    async def attempt(
        self, ep: Endpoint, item: forward.Claimed, *, current: bool, redis_ms: Callable[[], int]
    ) -> Result:
        """Send one delivery attempt and classify it; the result still has to be recorded.

        ``current``: ``ep`` is the configured endpoint of that name (the parts built for it apply);
        ``redis_ms``: Redis's clock as last learned, which the retry window is judged by.
        """
        started_ms = redis_ms()
        t0 = time.perf_counter()
        answer = await self._send(ep, item, current)
        if answer.outcome == DROPPED:
            return self.not_sent(ep, item, answer.error, started_ms)
        duration = time.perf_counter() - t0
        # only a retry is scheduled (by Redis's clock): a delivered attempt asks no clock again
        delay_ms = self._schedule(ep, item, answer, redis_ms()) if answer.outcome == "retry" else 0
        return self._result(ep, item, answer, started_ms, duration, delay_ms)

    async def _send(self, ep: Endpoint, item: forward.Claimed, current: bool) -> Answer:
        # per endpoint, built once (at start and on a reload); a lane retired by a reload may still
        # finish a delivery to an endpoint no longer configured, hence the fall-backs. A lane a reload
        # left running holds the Endpoint it started with (equal to the new one, not the same object)
        try:
            body, headers = forward.build(ep, item, int(self.clock()), self._headers[ep.name] if current else None)
        except Exception as exc:
            # a bug building this one request (a body the event mapping cannot take, say) fails this
            # delivery, visibly and resendable once fixed; raised, it crashed the lane's attempt and the
            # delivery came back at every lease expiry, holding a serial endpoint up for good
            logger.exception("request_not_built", endpoint=ep.name, nid=item.nid)
            return Answer("failed", error="request_error", message=f"the request could not be built: {exc!r}"[:300])
        timeout = (self._timeouts[ep.name] if current else None) or aiohttp.ClientTimeout(total=ep.timeout)
        url = self._urls[ep.name] if current else URL(ep.url)
        # past its lease another worker may hold this delivery already: a serial endpoint would get two
        # requests at once, a max_in_flight one too many. So the request must be able to end, timeout
        # and all, while the lease surely holds, with half the margin to spare for a loop running late
        send_by = item.held_until - ep.timeout - self.policy.lease_margin / 2
        if time.monotonic() > send_by:
            return Answer(DROPPED, error=NOT_SENT_LEASE)
        guarded = Guarded(body, send_by)
        try:
            async with self.session.post(
                url,
                data=guarded,
                headers=headers,
                allow_redirects=False,
                timeout=timeout,
            ) as resp:
                answer = Answer(forward.classify(resp.status, ep), status=resp.status)
                answer.snippet = await read_answer(resp, self.policy.response_snippet_bytes)
                if resp.status in (429, 503):
                    answer.retry_after = forward.parse_retry_after(resp.headers.get("Retry-After"))
            if answer.outcome == "failed":
                answer.message = f"HTTP {answer.status} is not retried (add it to retry_4xx to retry it)"
            return answer
        except TimeoutError:
            return Answer("retry", error="timeout", message=f"no complete answer within {ep.timeout:g} s")
        except aiohttp.ClientError as exc:
            if guarded.refused:
                return Answer(DROPPED, error=NOT_SENT_LEASE)
            return Answer("retry", error=error_class(exc), message=str(exc)[:300] or type(exc).__name__)
        except (ValueError, UnicodeError) as exc:  # e.g. an invalid header value from the endpoint's config
            return Answer("failed", error="request_error", message=str(exc)[:300])

    def not_sent(self, ep: Endpoint, item: forward.Claimed, why: str, at_ms: int) -> Result:
        """A claimed delivery given back unsent (``why``: NOT_SENT_LEASE or NOT_SENT_RETIRED).

        Recorded like an attempt (its number is spent: complete.lua records each number once) with
        error ``not_sent``, due again at once, and counted in ``relay_delivery_not_sent_total``; a
        serial endpoint's head stays its head, so it is claimed again in order.
        """
        logger.warning("delivery_not_sent", endpoint=ep.name, nid=item.nid, attempt=item.attempt, reason=why)
        record = {
            "n": item.attempt,
            "at": at_ms,
            "ms": 0,
            "outcome": "retry",
            "status": None,
            "error": "not_sent",
            "message": NOT_SENT_MESSAGES[why],
            "response": "",
            "next": None,
            "resend": bool(item.resend_of),
        }
        return Result(
            ep=ep,
            nid=item.nid,
            attempt=item.attempt,
            outcome=DROPPED,
            delay_ms=0,
            record=compact(record),
            last="not sent",
            lat_bucket=0,
            lat_us=0,
            recv=item.received_ms,
            deadline=time.monotonic() + ep.timeout,
        )

    def _schedule(self, ep: Endpoint, item: forward.Claimed, answer: Answer, now_ms: int) -> int:
        """A retry's delay in ms, or 0; out of retries turns the answer into a failure."""
        if answer.outcome != "retry":
            return 0
        # time spent paused by an operator does not count against the retry window, nor a claim given
        # back unsent against the schedule
        delay = schedule.retry_delay(
            item.attempt - item.unsent,
            item.received_ms + item.paused_ms,
            now_ms,
            ep,
            self.policy,
            retry_after=answer.retry_after,
            rand=self.rand,
        )
        if delay is None:
            answer.outcome = "failed"
            answer.message = (answer.message + "; " if answer.message else "") + "out of retries"
            return 0
        return int(delay * 1000)

    def _result(
        self, ep: Endpoint, item: forward.Claimed, answer: Answer, started_ms: int, duration: float, delay_ms: int
    ) -> Result:
        duration_ms = round(duration * 1000, 1)
        # "next" is filled in by complete.lua, from Redis's clock
        record = {
            "n": item.attempt,
            "at": started_ms,
            "ms": duration_ms,
            "outcome": answer.outcome,
            "status": answer.status,
            "error": answer.error or None,
            "message": answer.message or None,
            "response": answer.snippet.decode("utf-8", "replace"),
            "next": None,
            "resend": bool(item.resend_of),
        }
        # a success is recorded in Redis and counted in /metrics; at thousands a second a line each
        # would be noise (and ~3 % of the worker's CPU), so only retries and failures log, and a
        # success makes no logging call at all (even a filtered one builds its arguments)
        outcome = answer.outcome
        if outcome != "delivered":
            (logger.info if outcome == "retry" else logger.warning)(
                "delivery_attempt",
                endpoint=ep.name,
                nid=item.nid,
                attempt=item.attempt,
                outcome=outcome,
                status=answer.status,
                error=answer.error or None,
                duration_ms=duration_ms,
                delay_ms=delay_ms or None,
            )
        return Result(
            ep=ep,
            nid=item.nid,
            attempt=item.attempt,
            outcome=outcome,
            delay_ms=delay_ms,
            record=compact(record),
            last=f"HTTP {answer.status}" if answer.status is not None else answer.error,
            # relay:stats: latency buckets, and sums in integer microseconds (HINCRBY, see complete.lua)
            lat_bucket=bucket(duration),
            lat_us=int(duration * 1_000_000),
            recv=item.received_ms,
            deadline=time.monotonic() + ep.timeout,
        )


class LeaseAtRisk(Exception):
    """Raised instead of writing a request whose lease could run out before it ends."""


class Guarded(BytesPayload):
    """A request body that checks the claim's deadline in the very step that writes it.

    Between the engine's check and the write there are loop iterations (a connection from the pool,
    aiohttp's body-writer task): a worker stopped there wrote the request when it ran again, past
    its lease. aiohttp sends the buffered headers together with the first body bytes, so refusing
    here sends nothing at all; aiohttp then fails the request with a ClientConnectionError.
    """

    def __init__(self, value: bytes, send_by: float) -> None:
        super().__init__(value)
        self.send_by = send_by
        self.refused = False

    def _check(self) -> None:
        if time.monotonic() > self.send_by:
            self.refused = True
            raise LeaseAtRisk("its lease could run out before the request ends")

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        self._check()  # no await between this check and the write below reaching the socket
        await super().write_with_length(writer, content_length)

    async def write(self, writer: AbstractStreamWriter) -> None:
        # the same for an aiohttp that writes a payload without a length
        self._check()
        await super().write(writer)


async def read_answer(resp: aiohttp.ClientResponse, keep: int) -> bytes:
    """Read the whole answer (it only counts once complete, within the timeout), keeping its start.

    Reading to the end also lets the connection go back to the keep-alive pool.
    """
    length = resp.content_length
    if length is not None and length <= keep:
        return await resp.read()  # the usual short answer: one read, no chunk loop
    kept = bytearray()
    total = 0
    async for chunk in resp.content.iter_any():
        if len(kept) < keep:
            kept += chunk[: keep - len(kept)]
        total += len(chunk)
        if total > MAX_ANSWER_BYTES:
            break  # a huge answer is not worth the time: the status already decided the outcome
    return bytes(kept)


def error_class(exc: aiohttp.ClientError) -> str:
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

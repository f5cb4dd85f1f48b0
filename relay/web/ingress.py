"""The public door: verify, store durably, then answer 2Checkout with its read receipt."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from typing import NamedTuple

import structlog
from aiohttp import web
from multidict import CIMultiDict
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_random_exponential

from config import networks
from config.settings import Secret, Source
from relay import constants as k
from relay import events, protocol
from relay.store.connection import REDIS_ERRORS
from relay.store.ingest import Stored, notification_id
from relay.web import appkeys
from relay.web.metrics import IngressMetrics

logger = structlog.get_logger()

FORM_TYPES = frozenset({"application/x-www-form-urlencoded", ""})
# a CIMultiDict, which Response copies as it is; given text= and a plain dict it would also parse
# the content type back out for the charset (1.1 against 2.9 µs a reply)
RECEIPT_HEADERS = CIMultiDict({"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"})


def _reply(status: int, text: str) -> web.Response:
    return web.Response(status=status, body=(text + "\n").encode(), headers=RECEIPT_HEADERS)


async def listener_check(request: web.Request) -> web.Response:
    """GET/HEAD on a listener URL: 2Checkout validates the URL this way and expects 200.

    A URL whose source cannot verify the channel (no secret for it) answers 404, so 2Checkout's URL
    check fails instead of passing for a URL that would refuse every notification."""
    source = _source(request, _live(request))
    channel = request.match_info["channel"]
    if channel == "ins" and not (source.ins_secret_words and source.seller_id is not None):
        raise web.HTTPNotFound(
            text=f"source {source.name!r} has no INS secret word and seller_id: it cannot verify INS\n"
        )
    if channel != "ins" and not source.secret_keys:
        raise web.HTTPNotFound(
            text=f"source {source.name!r} has no IPN/LCN secret key: it cannot verify {channel.upper()}\n"
        )
    return _reply(200, "OK: 2Checkout listener ready")


def _source(request: web.Request, live: appkeys.Live) -> Source:
    name = request.match_info.get("source", "default")
    source = live.settings.sources.get(name)
    if source is None:
        raise web.HTTPNotFound(text=f"unknown source {name!r}\n")
    channel = request.match_info["channel"]
    if channel not in source.channels:
        raise web.HTTPNotFound(text=f"source {name!r} does not accept {channel.upper()} (see its channels)\n")
    return source


def fingerprint(secret: Secret) -> str:
    """Names a key in logs and errors without revealing it."""
    return hashlib.sha256(secret.reveal().encode()).hexdigest()[:8]


class _Refused(Exception):
    """A notification the ingress turns away: answered with status and ``rejected: reason: detail``."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.status, self.reason, self.detail = status, reason, detail


class _Verified(NamedTuple):
    # a NamedTuple: built once per request, and a frozen dataclass's __init__ costs ~1 µs more
    fields: protocol.Fields
    signed: bytes | None  # what 2Checkout signed: checked against the signature, then the identity
    key_index: int  # 0: the current secret verified it, 1: the previous one (a key change-over)
    algo: str


async def receive(request: web.Request) -> web.Response:
    """POST /ipn[/<source>]: check the sender, read and verify the body, store it, answer the receipt."""
    started = time.perf_counter()
    metrics = request.app[appkeys.METRICS]
    channel = request.match_info["channel"]
    live = _live(request)
    source = _source(request, live)
    name = source.name
    metrics.received_for(name, channel).inc()
    try:
        _check_sender(request, source, live)
        body = await _read_body(request, live)
        verified = await _verify_body(request, source, channel, body)
    except _Refused as refused:
        return await _refuse(request, name, channel, refused, started)
    if verified.key_index:
        logger.warning(
            "previous_secret_used",
            source=name,
            channel=channel,
            hint="2Checkout still signs with the previous key; remove it from the config once this stops",
        )
    nid = notification_id(name, channel, body, verified.fields, verified.signed)
    try:
        stored = await _store(request, live, source, channel, body, nid, verified)
    except REDIS_ERRORS as exc:
        metrics.rejected_for(name, channel, "redis_unavailable").inc()
        logger.warning(
            "notification_not_stored",
            source=name,
            channel=channel,
            nid=nid,
            status=503,
            error=type(exc).__name__,
            duration_ms=_ms_since(started),
        )
        return _reply(503, "unavailable: the notification could not be stored; retry later")
    return _accepted(metrics, source, channel, verified, stored, started)


async def _refuse(request: web.Request, name: str, channel: str, refused: _Refused, started: float) -> web.Response:
    request.app[appkeys.METRICS].rejected_for(name, channel, refused.reason).inc()
    # source and channel first in every line, where a bound logger put them (a bind costs ~2 µs)
    logger.info(
        "notification_rejected",
        source=name,
        channel=channel,
        status=refused.status,
        reason=refused.reason,
        detail=refused.detail,
        duration_ms=_ms_since(started),
    )
    try:  # counted for health and alerts (source_rejecting); best effort, like the rejection log
        await request.app[appkeys.STORE].refused(name, channel, refused.reason, refused.detail)
    except REDIS_ERRORS:
        pass
    return _reply(refused.status, f"rejected: {refused.reason}: {refused.detail}")


def _accepted(
    metrics: IngressMetrics,
    source: Source,
    channel: str,
    verified: _Verified,
    stored: Stored,
    started: float,
) -> web.Response:
    """The read receipt, counted and logged."""
    receipt = _receipt(source, channel, verified.fields, verified.algo, verified.key_index)
    elapsed = time.perf_counter() - started
    duplicate = stored.seq == 0
    metrics.accepted_for(source.name, channel, "true" if duplicate else "false").inc()
    metrics.ack_latency_for(channel).observe(elapsed)
    logger.info(
        "notification_accepted",
        source=source.name,
        channel=channel,
        nid=stored.nid,
        outcome="duplicate" if duplicate else "stored",
        seq=stored.seq or None,
        algo=verified.algo,
        duration_ms=round(elapsed * 1000, 2),
    )
    return _reply(200, receipt)


def _live(request: web.Request) -> appkeys.Live:
    # the listener routes live on the app that holds LIVE: skip building request.config_dict
    # (a new ChainMapProxy on every access), which the lookup falls back to otherwise
    live = request.app.get(appkeys.LIVE)
    return live if live is not None else request.config_dict[appkeys.LIVE]


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _check_sender(request: web.Request, source: Source, live: appkeys.Live) -> None:
    """The source's allow_networks, then the form content type, uncompressed."""
    if source.allow_networks:
        trusted: tuple[networks.Network, ...] = live.trusted_proxies
        client = networks.client_address(request.remote, request.headers.get("X-Forwarded-For"), trusted)
        if not networks.allowed(client, source.allow_networks):
            raise _Refused(403, "network_not_allowed", f"{client} is not in this source's allow_networks")
    if request.content_type not in FORM_TYPES:
        raise _Refused(
            415, "unsupported_media_type", f"expected application/x-www-form-urlencoded, got {request.content_type}"
        )
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # 2Checkout does not compress; a compressed body is also a decompression-bomb vector
        raise _Refused(415, "unsupported_content_encoding", f"Content-Encoding {encoding!r} is not accepted")


async def _read_body(request: web.Request, live: appkeys.Live) -> bytes:
    body_timeout = 0.0
    try:
        if request.content.is_eof():
            # the parser has fed the whole body (and its end) into the buffer: read() cannot wait,
            # so the timer (~10 µs to arm and cancel) guards nothing. A body still arriving keeps it.
            return await request.read()
        body_timeout = live.settings.server.body_timeout
        async with asyncio.timeout(body_timeout):
            return await request.read()
    except TimeoutError:
        raise _Refused(408, "body_timeout", f"the body did not arrive within {body_timeout:g} s") from None
    except web.RequestPayloadError as exc:
        raise _Refused(400, "malformed_body", f"the body could not be read: {exc}") from None


async def _verify_body(request: web.Request, source: Source, channel: str, body: bytes) -> _Verified:
    """Parse the body once, verify the strongest signature present, require the channel's fields."""
    try:
        fields = protocol.parse_form(body)
        signed = protocol.signature_source(fields) if channel != "ins" else None
        key_index, algo = _verify(source, channel, fields, signed)
        protocol.require_channel_fields(channel, fields)
    except protocol.ProtocolError as exc:
        await _log_rejection(request, source.name, channel, exc, body)
        raise _Refused(400, exc.reason, exc.detail) from None
    return _Verified(fields, signed, key_index, algo)


async def _store(
    request: web.Request, live: appkeys.Live, source: Source, channel: str, body: bytes, nid: str, verified: _Verified
) -> Stored:
    """The one Redis round trip (ingest.lua), retried for server.redis_timeout seconds."""
    store = request.app[appkeys.STORE]
    facts = protocol.facts(channel, verified.fields)
    facts["type"] = events.event_type(channel, verified.fields)[0]  # stored and indexed: routing, the type filter
    triple = ""
    if channel == "ins" and source.flag_ins_replays:
        fields = verified.fields
        triple = k.ins_triple(source.name, fields["sale_id"][0], fields["invoice_id"][0], facts["mtype"])
    ingest = functools.partial(
        store.ingest,
        nid=nid,
        source=source.name,
        channel=channel,
        body=body,
        content_type=request.headers.get("Content-Type", "application/x-www-form-urlencoded"),
        algo=verified.algo,
        facts=facts,
        extra={"key": "previous"} if verified.key_index else None,
        ins_triple=triple,
    )
    try:
        return await ingest()
    except REDIS_ERRORS:
        # a short in-process retry rides out a Redis blip or failover; past it, 503 makes
        # 2Checkout retry. (Entered only after a failure: the wrapper costs ~25 µs a request.)
        retrying = AsyncRetrying(
            stop=stop_after_delay(live.settings.server.redis_timeout),
            wait=wait_random_exponential(multiplier=0.02, max=0.5),
            retry=retry_if_exception_type(REDIS_ERRORS),
            reraise=True,
        )
        return await retrying(ingest)


def _verify(source: Source, channel: str, fields: protocol.Fields, signed: bytes | None) -> tuple[int, str]:
    try:
        if channel == "ins":
            if not source.ins_secret_words or source.seller_id is None:
                raise protocol.SignatureError("channel_disabled", f"source {source.name!r} has no INS secret word")
            words = source.ins_secret_words
            return protocol.verify_ins(fields, source.seller_id, [w.reveal() for w in words]), "md5"
        if not source.secret_keys:
            raise protocol.SignatureError("channel_disabled", f"source {source.name!r} has no IPN/LCN secret key")
        keys = source.secret_keys
        algo, index = protocol.verify_signed(fields, [s.reveal().encode() for s in keys], source.min_signature, signed)
        return index, algo
    except protocol.SignatureError as exc:
        if exc.reason == "signature_mismatch":
            tried = keys if channel != "ins" else words
            names = ", ".join(
                f"{label} (fingerprint {fingerprint(s)})"
                for label, s in zip(("current", "previous"), tried, strict=False)
            )
            exc.detail = f"{exc.detail}; tried {names}"
        raise


def _receipt(source: Source, channel: str, fields: protocol.Fields, algo: str, key_index: int) -> str:
    if channel == "ins":
        return "OK"
    # answer with the key that verified: during a rotation 2Checkout checks with the one it used
    key = source.secret_keys[key_index].reveal().encode()
    date = protocol.receipt_date()
    if channel == "ipn":
        return protocol.ipn_receipt(fields, key, algo, date)
    return protocol.lcn_receipt(fields, key, algo, date)


async def _log_rejection(
    request: web.Request, source: str, channel: str, exc: protocol.ProtocolError, body: bytes
) -> None:
    # the capped log lets an operator see, say, every IPN failing after a key rotation
    record: dict[str, object] = {
        "at": int(time.time() * 1000),
        "source": source,
        "channel": channel,
        "reason": exc.reason,
        "detail": exc.detail,
        "remote": request.remote or "",
        "bytes": len(body),
    }
    try:
        await request.app[appkeys.STORE].reject(record)
    except REDIS_ERRORS:
        pass  # the rejection is still logged and counted; the log in Redis is best effort

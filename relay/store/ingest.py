"""Writing notifications: the ingress's one Redis round trip, and the rejection log."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from relay import constants as k
from relay import protocol
from relay.store import body as stored_body
from relay.store.scripts import script
from relay.store.wire import INGEST, REFUSAL

logger = structlog.get_logger()
T = TypeVar("T")
R = TypeVar("R")

# how long an ack_after = "fsync" decision is trusted before it is checked again (a cheap probe)
DURABILITY_RECHECK_S = 30.0


class NotDurable(RedisError):
    """The write happened but the chosen durability (fsync / replicas) was not confirmed in time."""


def notification_id(
    source: str, channel: str, body: bytes, fields: protocol.Fields | None = None, signed: bytes | None = None
) -> str:
    """Deterministic from source, channel and body: the same notification posted again to the same URL,
    however re-encoded, is the same notification (see ``protocol.canonical``)."""
    if fields is None:
        try:
            fields = protocol.parse_form(body)
        except protocol.FormError:
            fields = None
    h = hashlib.blake2b(digest_size=12)
    h.update(source.encode())
    h.update(b"\x00")
    h.update(channel.encode())
    h.update(b"\x00")
    h.update(protocol.canonical(channel, fields, signed) if fields is not None else body)
    return f"{channel}_{h.hexdigest()}"


def _fields(
    raw: bytes, content_type: str, source: str, channel: str, algo: str, facts: dict[str, str]
) -> list[str | bytes]:
    """The notification hash's field, value pairs. The body goes to relay:b:{nid} as received, the hash's
    ``braw`` says so, and the fan-out compresses it (relay/store/body.py): compressing here cost the
    ingress about a fifth of its CPU. An empty body is the hash's ``body`` field."""
    fields: list[str | bytes] = ["ct", content_type, "source", source, "channel", channel, "algo", algo]
    fields += [stored_body.RAW, "1"] if raw else [stored_body.PLAIN, b""]
    for key, value in facts.items():
        fields += [key, value]
    return fields


@dataclass(frozen=True)
class Stored:
    nid: str
    seq: int  # 0: a duplicate that was already stored

    @property
    def duplicate(self) -> bool:
        return self.seq == 0


class Interrupted(RedisError):
    """A batched write was cancelled before Redis answered: whether it happened is unknown."""


class Batcher(Generic[T, R]):
    """Auto-pipelining: calls that arrive while a flush is in flight go out together in the next one.

    Under load this turns N concurrent round trips into one; alone, a call goes out at once.
    Every submitted call is answered, whatever ``flush`` raises (even CancelledError), and the drain
    tasks are kept referenced, so none is garbage-collected mid-flight or leaves a caller waiting.
    """

    def __init__(
        self, flush: Callable[[list[T]], Awaitable[list[R]]], max_batch: int = 128, max_in_flight: int = 2
    ) -> None:
        self._flush = flush
        self._max = max_batch
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        # two batches in flight keep the CPU busy parsing the next requests while Redis answers
        self._max_in_flight = max_in_flight
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._spawn()
        return await future

    def _spawn(self) -> None:
        if self._queue and len(self._tasks) < self._max_in_flight:
            task = asyncio.get_running_loop().create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._drained)

    def _drained(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("batcher_drain_crashed", exc_info=task.exception())
        # calls queued behind a drain that ended abnormally still go out
        self._spawn()

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._max], self._queue[self._max :]
            try:
                results = await self._flush([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"flush answered {len(results)} of {len(batch)} calls")
            except BaseException as exc:  # every caller of this batch sees the error (and retries)
                # a cancelled flush is a failed write to its callers, not their own cancellation
                error = exc if isinstance(exc, Exception) else Interrupted("the write was interrupted")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)


class Store:
    def __init__(
        self,
        redis: Redis,
        retention_ms: int,
        *,
        ack_after: str = "write",
        ack_replicas: int = 1,
        ack_timeout: float = 1.0,
    ) -> None:
        self.redis = redis
        self.retention_ms = retention_ms
        self.ack_after = ack_after
        self.ack_replicas = ack_replicas
        self.ack_timeout_ms = int(ack_timeout * 1000)
        self._ingest = script(INGEST)
        self._refusal = script(REFUSAL)
        self._batch: Batcher[tuple[list[str], list[Any]], Any] = Batcher(self._write)
        # how "fsync" is satisfied: WAITAOF (Redis >= 7.2), or nothing to wait for when the server
        # fsyncs every write (appendfsync always). Decided on contact and decided again after any
        # failed write (a reconnect, a failover to another server) and every RECHECK_S, since the
        # server behind the URL can change while the process runs
        self._fsync_via: str | None = None
        self._checked_at = 0.0

    async def check_durability(self) -> str:
        """Decide how ``ack_after`` is honoured on this server; raise NotDurable if it cannot be."""
        if self.ack_after != "fsync":
            return self.ack_after
        now = time.monotonic()
        if self._fsync_via is not None and now - self._checked_at < DURABILITY_RECHECK_S:
            return self._fsync_via
        self._fsync_via = None
        try:
            await self.redis.execute_command("WAITAOF", 0, 0, 0)  # type: ignore[no-untyped-call]
            via = "waitaof"
        except ResponseError:  # an older server (or one with the command renamed away)
            via = await self._appendfsync_always()
        self._fsync_via, self._checked_at = via, now
        return via

    async def _appendfsync_always(self) -> str:
        info = await self.redis.info("server")
        try:
            appendfsync = (await self.redis.config_get("appendfsync")).get("appendfsync")
            aof = (await self.redis.config_get("appendonly")).get("appendonly")
        except ResponseError:
            appendfsync = aof = None  # CONFIG is disabled on some managed servers
        if aof == "yes" and appendfsync == "always":
            return "appendfsync-always"
        raise NotDurable(
            f'ack_after = "fsync" needs Redis >= 7.2 (WAITAOF) or appendonly yes with appendfsync always; '
            f"this Redis {info.get('redis_version')} has appendonly={aof} appendfsync={appendfsync}. "
            "Notifications are refused with 503 until that changes."
        )

    async def ingest(
        self,
        *,
        nid: str,
        source: str,
        channel: str,
        body: bytes,
        content_type: str,
        algo: str,
        facts: dict[str, str],
        extra: dict[str, str] | None = None,
        ins_triple: str = "",
    ) -> Stored:
        ref = facts.get("ref", "")
        # recv is set by ingest.lua from Redis's clock
        fields = _fields(body, content_type, source, channel, algo, facts | (extra or {}))
        keys = INGEST.pack_keys(
            notification=k.notification(nid),
            seq=k.SEQ,
            ix_all=k.IDX_ALL,
            ix_channel=k.idx_channel(channel),
            ix_source=k.idx_source(source),
            ix_ref=k.idx_ref(ref) if ref else "",
            fanout=k.FANOUT,
            ins_triple=ins_triple,
            ix_type=k.idx_type(facts["type"]) if facts.get("type") else "",
            body=k.body(nid),
        )
        args = INGEST.pack_args(
            *fields,
            nid=nid,
            retention_ms=self.retention_ms,
            message_id=facts.get("message_id", ""),
            source=source,
            accepted_ttl_ms=k.SOURCE_ACCEPTED_TTL_MS,
            body=body,
        )
        seq = await self._batch.submit((keys, args))
        return Stored(nid=nid, seq=int(seq))

    async def _write(self, batch: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """One pipeline for every ingest that arrived while the previous one was in flight.

        Each ingest script is still atomic on its own; batching only shares the round trip and
        the client's per-call cost between concurrent requests. The durability wait, when there
        is one, covers the whole batch: it is issued after the last write on the same connection.
        """
        via = await self.check_durability()
        try:
            return await self._write_with(via, batch)
        except RedisError:
            self._fsync_via = None  # after a reconnect the server may be another one: decide again
            raise

    async def _write_with(self, via: str, batch: list[tuple[list[str], list[Any]]]) -> list[Any]:
        try:
            return await self._pipeline(via, batch)
        except NoScriptError:
            # a restarted or failed-over Redis, or SCRIPT FLUSH: load it and send the batch again. Every
            # command of the batch is the same EVALSHA, so none of them ran
            await self.redis.script_load(self._ingest.script)
            return await self._pipeline(via, batch)

    async def _pipeline(self, via: str, batch: list[tuple[list[str], list[Any]]]) -> list[Any]:
        # EVALSHA itself, not the Script object: redis-py sends SCRIPT EXISTS before every pipeline
        # that holds a Script, one more round trip per batch (bench.clients: 62 µs for a batch of one)
        sha = self._ingest.sha
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys, args in batch:
                pipe.evalsha(sha, len(keys), *keys, *args)
            if via == "waitaof":
                pipe.execute_command("WAITAOF", 1, 0, self.ack_timeout_ms)
            elif via == "replica":
                pipe.execute_command("WAIT", self.ack_replicas, self.ack_timeout_ms)
            results: list[Any] = await pipe.execute()
        if via == "waitaof" and int(results[-1][0]) < 1:
            raise NotDurable("the AOF fsync was not confirmed in time")
        if via == "replica" and int(results[-1]) < self.ack_replicas:
            raise NotDurable(f"only {int(results[-1])} of {self.ack_replicas} replicas confirmed in time")
        return results[: len(batch)]

    async def refused(self, source: str, channel: str, reason: str, detail: str) -> None:
        """Count a refusal for the source's health (``source_rejecting``, relay/store/problems.py), on
        Redis's clock."""
        await self._refusal(
            keys=REFUSAL.pack_keys(lastrej=k.source_lastrej(source), ix_source=k.idx_source(source)),
            args=REFUSAL.pack_args(
                source=source,
                reason=reason,
                detail=detail[:500],
                channel=channel,
                minute_ttl_ms=k.SOURCE_REJECTS_TTL_MS,
                lastrej_ttl_ms=k.SOURCE_LASTREJ_TTL_MS,
                recovery_accepted=k.SOURCE_RECOVERY_ACCEPTED,
            ),
            client=self.redis,
        )

    async def reject(self, record: dict[str, object]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lpush(k.REJECTS, json.dumps(record, separators=(",", ":")))
            pipe.ltrim(k.REJECTS, 0, k.REJECTS_CAP - 1)
            await pipe.execute()

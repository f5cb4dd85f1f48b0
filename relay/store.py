"""Writing notifications: the ingress's one Redis round trip, and the rejection log."""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from relay import constants as k
from relay import protocol
from relay.lua import register

logger = structlog.get_logger()

# a fan-out job that waits longer than this is dropped by ARQ; the worker's sweeper re-creates it
# from relay:fanout, so it only bounds how long a dead job key lingers
FANOUT_JOB_EXPIRY_MS = 86_400_000


class NotDurable(RedisError):
    """The write happened but the chosen durability (fsync / replicas) was not confirmed in time."""


def notification_id(source: str, channel: str, body: bytes, fields: protocol.Fields | None = None) -> str:
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
    h.update(protocol.canonical(channel, fields) if fields is not None else body)
    return f"{channel}_{h.hexdigest()}"


def fanout_job(nid: str, now_ms: int) -> bytes:
    """The ARQ job record for ``fanout(nid)``, exactly as ``arq.jobs.serialize_job`` writes it."""
    return pickle.dumps({"t": None, "f": k.FANOUT_FUNCTION, "a": (nid,), "k": {}, "et": now_ms})


@dataclass(frozen=True)
class Stored:
    nid: str
    seq: int  # 0: a duplicate that was already stored

    @property
    def duplicate(self) -> bool:
        return self.seq == 0


class Store:
    def __init__(self, redis: Redis, retention_ms: int, *, ack_after: str = "write", ack_replicas: int = 1,
                 ack_timeout: float = 1.0) -> None:
        self.redis = redis
        self.retention_ms = retention_ms
        self.ack_after = ack_after
        self.ack_replicas = ack_replicas
        self.ack_timeout_ms = int(ack_timeout * 1000)
        self._ingest = register(redis, "ingest")
        # how "fsync" is satisfied, decided on first contact: WAITAOF (Redis >= 7.2), or nothing to
        # wait for when the server fsyncs every write (appendfsync always)
        self._fsync_via: str | None = None

    async def check_durability(self) -> str:
        """Decide how ``ack_after`` is honoured on this server; raise NotDurable if it cannot be."""
        if self.ack_after != "fsync" or self._fsync_via is not None:
            return self._fsync_via or self.ack_after
        info = await self.redis.info("server")
        version = tuple(int(x) for x in str(info.get("redis_version", "0")).split(".")[:2])
        if version >= (7, 2):
            self._fsync_via = "waitaof"
            return self._fsync_via
        try:
            appendfsync = (await self.redis.config_get("appendfsync")).get("appendfsync")
            aof = (await self.redis.config_get("appendonly")).get("appendonly")
        except ResponseError:
            appendfsync = aof = None  # CONFIG is disabled on some managed servers
        if aof == "yes" and appendfsync == "always":
            self._fsync_via = "appendfsync-always"
            return self._fsync_via
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
        now_ms: int,
        extra: dict[str, str] | None = None,
        ins_triple: str = "",
    ) -> Stored:
        ref = facts.get("ref", "")
        fields: list[str | bytes] = ["body", body, "ct", content_type, "source", source, "channel", channel,
                                     "recv", str(now_ms), "algo", algo]
        for key, value in (facts | (extra or {})).items():
            fields += [key, value]
        job_id = k.fanout_job_id(nid)
        keys = [k.notification(nid), k.SEQ, k.IDX_ALL, k.idx_channel(channel), k.idx_source(source),
                k.idx_ref(ref) if ref else "", k.FANOUT, k.ARQ_JOB_PREFIX + job_id, k.QUEUE_NAME, ins_triple]
        args = [nid, now_ms, self.retention_ms, fanout_job(nid, now_ms), FANOUT_JOB_EXPIRY_MS, job_id,
                facts.get("message_id", ""), *fields]
        via = await self.check_durability()
        if via in ("write", "appendfsync-always"):
            return Stored(nid=nid, seq=int(await self._ingest(keys=keys, args=args)))
        # the wait rides in the same pipeline: still one round trip. It also covers a duplicate,
        # whose first copy may not have been durable yet when it was acknowledged... or not at all
        async with self.redis.pipeline(transaction=False) as pipe:
            await self._ingest(keys=keys, args=args, client=pipe)
            if via == "waitaof":
                pipe.execute_command("WAITAOF", 1, 0, self.ack_timeout_ms)
            else:
                pipe.execute_command("WAIT", self.ack_replicas, self.ack_timeout_ms)
            seq, ack = await pipe.execute()
        if via == "waitaof" and int(ack[0]) < 1:
            raise NotDurable("the AOF fsync was not confirmed in time")
        if via == "replica" and int(ack) < self.ack_replicas:
            raise NotDurable(f"only {int(ack)} of {self.ack_replicas} replicas confirmed in time")
        return Stored(nid=nid, seq=int(seq))

    async def reject(self, record: dict[str, object]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lpush(k.REJECTS, json.dumps(record, separators=(",", ":")))
            pipe.ltrim(k.REJECTS, 0, k.REJECTS_CAP - 1)
            await pipe.execute()

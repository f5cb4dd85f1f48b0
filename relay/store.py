"""Writing notifications: the ingress's one Redis round trip, and the rejection log."""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass

from redis.asyncio import Redis

from relay import constants as k
from relay.lua import register

# a fan-out job that waits longer than this is dropped by ARQ; the worker's sweeper re-creates it
# from relay:fanout, so it only bounds how long a dead job key lingers
FANOUT_JOB_EXPIRY_MS = 86_400_000


def notification_id(source: str, channel: str, body: bytes) -> str:
    """Deterministic: the same body posted again to the same URL is the same notification."""
    h = hashlib.blake2b(digest_size=12)
    h.update(source.encode())
    h.update(b"\x00")
    h.update(channel.encode())
    h.update(b"\x00")
    h.update(body)
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
    def __init__(self, redis: Redis, retention_ms: int) -> None:
        self.redis = redis
        self.retention_ms = retention_ms
        self._ingest = register(redis, "ingest")

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
    ) -> Stored:
        ref = facts.get("ref", "")
        fields: list[str | bytes] = ["body", body, "ct", content_type, "source", source, "channel", channel,
                                     "recv", str(now_ms), "algo", algo]
        for key, value in (facts | (extra or {})).items():
            fields += [key, value]
        job_id = k.fanout_job_id(nid)
        seq = await self._ingest(
            keys=[k.notification(nid), k.SEQ, k.IDX_ALL, k.idx_channel(channel), k.idx_source(source),
                  k.idx_ref(ref) if ref else "", k.FANOUT, k.ARQ_JOB_PREFIX + job_id, k.QUEUE_NAME],
            args=[nid, now_ms, self.retention_ms, fanout_job(nid, now_ms), FANOUT_JOB_EXPIRY_MS, job_id, *fields],
        )
        return Stored(nid=nid, seq=int(seq))

    async def reject(self, record: dict[str, object]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lpush(k.REJECTS, json.dumps(record, separators=(",", ":")))
            pipe.ltrim(k.REJECTS, 0, k.REJECTS_CAP - 1)
            await pipe.execute()

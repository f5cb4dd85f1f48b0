"""The relay's health, read from Redis: per-endpoint backlog and failure rates, workers, Redis itself.

``health_report`` is shared by ``relay health`` and ``GET /api/health``; ``minute_counts`` also feeds
the failing-endpoint alerts (workers/alerts.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from config.settings import Settings
from relay import constants as k
from relay.store.connection import REDIS_ERRORS

WORKER_ALIVE_MS = 30_000
COUNT_STATES = ("pending", "in_flight", "retrying", "failed", "delivered", "skipped")
HOUR_MIN = 60
DAY_MIN = 1440


@dataclass(frozen=True)
class Counts:
    """Attempt outcomes in a window of per-minute hashes: ``fail`` includes retries, ``gaveup`` is final."""

    ok: int = 0
    fail: int = 0
    gaveup: int = 0

    @property
    def attempts(self) -> int:
        return self.ok + self.fail

    @property
    def failure_rate(self) -> float | None:
        return self.fail / self.attempts if self.attempts else None

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.ok + other.ok, self.fail + other.fail, self.gaveup + other.gaveup)

    def as_dict(self) -> dict[str, Any]:
        rate = self.failure_rate
        return {"ok": self.ok, "fail": self.fail, "gaveup": self.gaveup,
                "failure_rate": None if rate is None else round(rate, 4)}


def sum_counts(minutes: Iterable[Sequence[bytes | None]]) -> Counts:
    total = Counts()
    for ok, fail, gaveup in minutes:
        total += Counts(int(ok or 0), int(fail or 0), int(gaveup or 0))
    return total


def queue_minutes(pipe: Any, endpoints: Iterable[str], now_ms: int, minutes: int) -> None:
    """Queue one HMGET per endpoint and minute, newest minute first."""
    now_min = now_ms // 60_000
    for ep in endpoints:
        for m in range(minutes):
            pipe.hmget(k.ep_minute(ep, now_min - m), ["ok", "fail", "gaveup"])


async def minute_counts(redis: Redis, endpoints: Sequence[str], now_ms: int,
                        minutes: int) -> dict[str, Counts]:
    """Attempt outcomes per endpoint over the last ``minutes`` minutes (the current one included)."""
    async with redis.pipeline(transaction=False) as pipe:
        queue_minutes(pipe, endpoints, now_ms, minutes)
        rows = await pipe.execute()
    return {ep: sum_counts(rows[i * minutes:(i + 1) * minutes]) for i, ep in enumerate(endpoints)}


def oldest_age_s(now_ms: int, *heads: Sequence[tuple[bytes, float]]) -> float | None:
    """Seconds since the lowest score among the first items of sorted-set ZRANGE 0 0 WITHSCORES results."""
    scores = [head[0][1] for head in heads if head]
    return round(max(0.0, (now_ms - min(scores)) / 1000), 3) if scores else None


def _ms(raw: bytes | None) -> int | None:
    return int(float(raw)) if raw else None


def _persistence(info: dict[str, Any], save: Any) -> str:
    aof = str(info.get("aof_enabled", 0)) == "1"
    if isinstance(save, Exception):  # CONFIG is often disabled on managed Redis
        rdb: bool | None = None
    else:
        rdb = bool(save.get("save")) if isinstance(save, dict) else None
    modes = [name for name, on in (("aof", aof), ("rdb", rdb)) if on]
    if modes:
        return "+".join(modes)
    return "unknown" if rdb is None else "none"


async def health_report(redis: Redis, settings: Settings, now_ms: int,
                        *, max_pending_age: float | None = None) -> dict[str, Any]:
    """Everything an operator asks first, with a verdict: ``status`` healthy|unhealthy and ``reasons``."""
    limit = max_pending_age if max_pending_age is not None else settings.health.max_pending_age
    endpoints = list(settings.endpoints)
    try:
        rows = await _read(redis, endpoints, now_ms)
    except REDIS_ERRORS as exc:
        error = f"{type(exc).__name__}: {exc}"
        return {
            "status": "unhealthy", "reasons": [f"redis unreachable ({error})"], "warnings": [],
            "checked_at": now_ms, "max_pending_age_s": limit,
            "redis": {"reachable": False, "error": error}, "queue": None, "workers": None, "endpoints": {},
        }
    report = _assemble(rows, endpoints, now_ms)
    report["max_pending_age_s"] = limit
    _verdict(report, limit)
    return report


async def _read(redis: Redis, endpoints: list[str], now_ms: int) -> list[Any]:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.info("persistence")
        pipe.info("memory")
        pipe.config_get("save")
        pipe.zcard(k.QUEUE_NAME)
        pipe.zcard(k.FANOUT)
        pipe.zrange(k.QUEUE_NAME, 0, 0, withscores=True)
        pipe.zrange(k.WORKERS, 0, -1, withscores=True)
        for ep in endpoints:
            for state in COUNT_STATES:
                pipe.zcard(k.ep_state(ep, state))
            pipe.zrange(k.ep_state(ep, "pending"), 0, 0, withscores=True)
            pipe.zrange(k.ep_state(ep, "retrying"), 0, 0, withscores=True)
            pipe.hmget(k.STATS, [f"{ep}|last_ok", f"{ep}|last_fail"])
        queue_minutes(pipe, endpoints, now_ms, DAY_MIN)
        rows: list[Any] = await pipe.execute(raise_on_error=False)
    for i, row in enumerate(rows):
        if isinstance(row, Exception) and i != 2:  # only CONFIG GET (index 2) may be refused
            raise row
    return rows


def _assemble(rows: list[Any], endpoints: list[str], now_ms: int) -> dict[str, Any]:
    persistence, memory, save, arq_depth, fanout_depth, queue_head, workers = rows[:7]
    per_ep = len(COUNT_STATES) + 3
    minute_rows = rows[7 + per_ep * len(endpoints):]
    report: dict[str, Any] = {
        "checked_at": now_ms,
        "redis": {
            "reachable": True,
            "used_memory": int(memory.get("used_memory", 0)),
            "used_memory_human": str(memory.get("used_memory_human", "")),
            "persistence": _persistence(persistence, save),
        },
        "queue": {"arq": int(arq_depth), "fanout": int(fanout_depth),
                  "depth": int(arq_depth) + int(fanout_depth), "oldest_age_s": oldest_age_s(now_ms, queue_head)},
        "workers": _workers(workers, now_ms),
        "endpoints": {},
    }
    for i, ep in enumerate(endpoints):
        row = rows[7 + i * per_ep: 7 + (i + 1) * per_ep]
        counts = dict(zip(COUNT_STATES, (int(n) for n in row[:len(COUNT_STATES)]), strict=True))
        pending_head, retrying_head, (last_ok, last_fail) = row[len(COUNT_STATES):]
        minutes = minute_rows[i * DAY_MIN:(i + 1) * DAY_MIN]
        report["endpoints"][ep] = {
            **counts,
            "last_hour": sum_counts(minutes[:HOUR_MIN]).as_dict(),
            "last_day": sum_counts(minutes).as_dict(),
            "oldest_pending_age_s": oldest_age_s(now_ms, pending_head, retrying_head),
            "last_ok": _ms(last_ok),
            "last_fail": _ms(last_fail),
        }
    return report


def _workers(rows: list[tuple[bytes, float]], now_ms: int) -> dict[str, Any]:
    listed = [
        {"name": name.decode(), "last_seen": int(score), "age_s": round((now_ms - score) / 1000, 1),
         "alive": now_ms - score <= WORKER_ALIVE_MS}
        for name, score in sorted(rows, key=lambda r: -r[1])
    ]
    return {"alive": sum(1 for w in listed if w["alive"]), "list": listed}


def _verdict(report: dict[str, Any], limit: float) -> None:
    reasons: list[str] = []
    warnings: list[str] = []
    workers = report["workers"]
    if not workers["alive"]:
        seen = workers["list"][0] if workers["list"] else None
        last = f"; last seen: {seen['name']} {seen['age_s']:g} s ago" if seen else ""
        reasons.append(f"no live worker (no heartbeat in the last {WORKER_ALIVE_MS // 1000} s{last})")
    for ep, row in report["endpoints"].items():
        age = row["oldest_pending_age_s"]
        if age is not None and age > limit:
            reasons.append(f"endpoint {ep}: a delivery has waited {age:.0f} s (limit {limit:g} s)")
    age = report["queue"]["oldest_age_s"]
    if age is not None and age > limit:
        reasons.append(f"queue: a fan-out job has waited {age:.0f} s (limit {limit:g} s)")
    if report["redis"]["persistence"] == "none":
        warnings.append("Redis persistence is off: a Redis restart loses every stored notification")
    report["status"] = "unhealthy" if reasons else "healthy"
    report["reasons"] = reasons
    report["warnings"] = warnings

"""The relay's one evaluation of health: ``healthy``, ``degraded`` or ``unhealthy``, with its problems.

``health_report`` is what ``relay health``, ``GET /api/health``, the dashboard and the alert job
(workers/alerts.py) all read, so they never disagree. It reads summaries only: per endpoint, the
state indexes ``relay:ep:{ep}:st:{state}`` (scored by each delivery's last change) counted with
ZCOUNT over the window; per source, the per-minute counters of refused and accepted notifications
(kept as they come in: never a walk of the source index) and a bounded look at its newest entries.
Two round trips, whatever the amount of data. The problems it finds in those figures are
relay/store/problems.py's.

Failure is counted per delivery: an endpoint's failing share over its window is the deliveries whose
latest attempt failed (``retrying`` or ``failed``, changed in the window) over the deliveries
attempted in the window (those plus ``delivered`` and ``resolved``). Every status, problem kind and
threshold is defined in docs/operations.md.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis

from config.settings import Endpoint, Settings
from relay import constants as k
from relay.store import reconcile, throttle
from relay.store.connection import REDIS_ERRORS
from relay.store.problems import HOUR_MS, WORKER_ALIVE_MS, percent, verdict
from relay.store.resolve import resolve
from relay.store.scripts import script
from relay.store.wire import EP_FIELDS, HEALTH, HEALTH_EP_ARGS, HEALTH_SRC_ARGS, HOURLY, SRC_FIELDS
from relay.timefmt import iso_seconds

__all__ = ["STATUS_EXIT", "WORKER_ALIVE_MS", "health_report", "hourly", "percent"]
COUNT_STATES = ("pending", "in_flight", "retrying", "failed", "delivered", "skipped", k.RESOLVED)
STATUS_EXIT = {"healthy": 0, "degraded": 1, "unhealthy": 2}


def oldest_age_s(now_ms: int, *heads: Sequence[tuple[bytes, float]]) -> float | None:
    """Seconds since the lowest score among the first items of sorted-set ZRANGE 0 0 WITHSCORES results."""
    scores = [head[0][1] for head in heads if head]
    return round(max(0.0, (now_ms - min(scores)) / 1000), 3) if scores else None


def _ms(raw: bytes | str | None) -> int | None:
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


def _full(memory: dict[str, Any]) -> bool:
    """Redis refuses every write: at ``maxmemory`` with ``noeviction`` (what docs/production.md asks
    for), counted as Redis counts it (without the replication and AOF buffers)."""
    limit = int(memory.get("maxmemory", 0) or 0)
    used = int(memory.get("used_memory", 0)) - int(memory.get("mem_not_counted_for_evict", 0) or 0)
    return limit > 0 and str(memory.get("maxmemory_policy", "")) == "noeviction" and used > limit


def thresholds(settings: Settings, ep: Endpoint) -> tuple[float, int, float]:
    """An endpoint's (threshold_percent, min_deliveries, window_hours): its own, else [alerts]."""
    cfg = settings.alerts
    return (
        cfg.threshold_percent if ep.alert_threshold_percent is None else ep.alert_threshold_percent,
        cfg.min_deliveries if ep.alert_min_deliveries is None else ep.alert_min_deliveries,
        cfg.window_hours if ep.alert_window_hours is None else ep.alert_window_hours,
    )


def host(url: str) -> str:
    return urlsplit(url).netloc.rpartition("@")[2]


def _share(failing: int, attempted: int) -> float | None:
    return round(failing / attempted, 4) if attempted else None


async def health_report(
    redis: Redis, settings: Settings, now_ms: int, *, max_pending_age: float | None = None
) -> dict[str, Any]:
    """The evaluation: ``status``, ``problems`` (most severe first) and the figures behind them."""
    limit = max_pending_age if max_pending_age is not None else settings.health.max_pending_age
    try:
        report = await _read(redis, settings, now_ms)
        resent = [name for name, row in report["endpoints"].items() if row.pop("resent")]
        # failures whose resend may have been delivered since: resolve them, then count again
        if resent and await resolve(redis, resent, settings.delivery.retention_ms):
            report = await _read(redis, settings, now_ms)
            for row in report["endpoints"].values():
                row.pop("resent")
    except REDIS_ERRORS as exc:
        error = f"{type(exc).__name__}: {exc}"
        problem = {
            "kind": "redis_unreachable",
            "since": iso_seconds(now_ms),
            "error": error,
            "message": f"Redis unreachable ({error}): nothing can be stored or delivered",
        }
        return {
            "status": "unhealthy",
            "problems": [problem],
            "reasons": [problem["message"]],
            "warnings": [],
            "checked_at": now_ms,
            "checked_at_iso": iso_seconds(now_ms),
            "max_pending_age_s": limit,
            "redis": {"reachable": False, "error": error},
            "queue": None,
            "workers": None,
            "endpoints": {},
            "sources": {},
            "reconcile": {},
            "notes": [],
        }
    report["max_pending_age_s"] = limit
    verdict(report, settings, limit)
    return report


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _read(redis: Redis, settings: Settings, now_ms: int) -> dict[str, Any]:
    """Every figure of health in one pipelined round trip, decoded into the report.

    Long on purpose: the reads are queued and their answers taken back by position, so both halves
    stay side by side in one function, where a reordering on one side shows on the other.
    """
    endpoints = list(settings.endpoints.values())
    sources = list(settings.sources.values())
    cfg = settings.alerts
    src_minutes = max(1, round(cfg.source_window_minutes))
    args: list[str | int] = HEALTH.pack_args(
        now_ms=now_ms, endpoints=len(endpoints), sources=len(sources), source_window_minutes=src_minutes
    )
    for ep in endpoints:
        window_ms = int(thresholds(settings, ep)[2] * HOUR_MS)
        by_name: dict[str, str | int] = {"name": ep.name, "window_ms": window_ms, "serial": 0 if ep.concurrent else 1}
        args.extend(by_name[f] for f in HEALTH_EP_ARGS)
    for src in sources:
        silence_ms = round((src.expect_within_hours or 0) * HOUR_MS)
        by_src: dict[str, str | int] = {"name": src.name, "silence_ms": silence_ms}
        args.extend(by_src[f] for f in HEALTH_SRC_ARGS)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.info("persistence")
        pipe.info("memory")
        pipe.config_get("save")
        pipe.zcard(k.QUEUE_NAME)
        pipe.zcard(k.FANOUT)
        # the oldest notification not yet routed (never ARQ's queue head: the sweeper's cron jobs wait there)
        pipe.zrange(k.FANOUT, 0, 0)
        pipe.zrange(k.WORKERS, 0, -1, withscores=True)
        await script(HEALTH)(keys=HEALTH.pack_keys(ix_all=k.IDX_ALL, stats=k.STATS), args=args, client=pipe)
        # operator control (relay/store/control.py, relay/store/reload.py): pauses and config hashes
        pipe.hgetall(k.PAUSED)
        pipe.hgetall(k.PROCS)
        for ep in endpoints:
            pipe.zcard(k.ep_state(ep.name, "paused"))
            pipe.zcard(k.ep_state(ep.name, "cancelled"))
        # reconciliation with 2Checkout's order list (relay/store/reconcile.py): its last result per source
        reconciled = reconcile.reconciled_sources(settings)
        for name in reconciled:
            pipe.get(k.reconcile_state(name))
        # rate_limit (workers/lua/rate.lua): held back now, and the rate sent at
        for ep in endpoints:
            pipe.hmget(k.ep_rate(ep.name), list(throttle.FIELDS))
        rows: list[Any] = await pipe.execute(raise_on_error=False)
    for i, row in enumerate(rows):
        if isinstance(row, Exception) and i != 2:  # only CONFIG GET (index 2) may be refused
            raise row
    persistence, memory, save, _arq_jobs, fanout_depth, fanout_first, workers, figures, paused, procs = rows[:10]
    # relay:fanout is scored by seq, in order of receipt: its head's receipt time is the oldest wait
    fanout_recv: bytes | None = (
        await redis.hget(k.notification(fanout_first[0].decode()), "recv")  # type: ignore[misc]
        if fanout_first
        else None
    )
    queue_head = [(fanout_first[0], float(fanout_recv))] if fanout_recv else []
    held = rows[10 : 10 + 2 * len(endpoints)]
    rated = len(rows) - len(endpoints)  # the rate rows come last
    report: dict[str, Any] = {
        "checked_at": now_ms,
        "checked_at_iso": iso_seconds(now_ms),
        "redis": {
            "reachable": True,
            "used_memory": int(memory.get("used_memory", 0)),
            "used_memory_human": str(memory.get("used_memory_human", "")),
            "persistence": _persistence(persistence, save),
            "full": _full(memory),
        },
        # what waits, in the operator's words: notifications not yet routed, and deliveries not yet
        # sent (filled in below); never ARQ's own queue, which also holds the sweeper's cron jobs
        "queue": {
            "fanout": int(fanout_depth),
            "deliveries": 0,
            "depth": int(fanout_depth),
            "oldest_age_s": oldest_age_s(now_ms, queue_head),
        },
        "workers": _workers(workers, now_ms),
        "endpoints": {},
        "sources": {},
        "config": _config(procs, now_ms),
        "reconcile": {
            src: reconcile.load(raw) for src, raw in zip(reconciled, rows[10 + 2 * len(endpoints) : rated], strict=True)
        },
    }
    for i, (ep, row) in enumerate(zip(endpoints, figures[: len(endpoints)], strict=True)):
        named = dict(zip(EP_FIELDS, (_text(v) for v in row), strict=True))
        report["endpoints"][ep.name] = {
            **_endpoint_row(settings, ep, named, now_ms),
            "paused_deliveries": int(held[2 * i]),
            "cancelled": int(held[2 * i + 1]),
            **_pause(paused.get(ep.name.encode()), now_ms),
            **throttle.row(ep, rows[rated + i], now_ms),
        }
    waiting = sum(e["pending"] + e["retrying"] + e["paused_deliveries"] for e in report["endpoints"].values())
    report["queue"]["deliveries"] = waiting
    report["queue"]["depth"] += waiting
    for src, row in zip(sources, figures[len(endpoints) :], strict=True):
        named = dict(zip(SRC_FIELDS, (_text(v) for v in row), strict=True))
        report["sources"][src.name] = _source_row(cfg, src_minutes, named, src.expect_within_hours, now_ms)
    return report


def _pause(raw: bytes | None, now_ms: int) -> dict[str, Any]:
    """An endpoint's pause (relay:paused): since when, by whom, how long (relay/store/control.py)."""
    if raw is None:
        return {"paused": False, "paused_since": None, "paused_by": None, "paused_age_s": None}
    try:
        doc = json.loads(raw)
        since = int(doc["at"])
    except (ValueError, KeyError, TypeError):
        doc, since = {}, now_ms
    return {
        "paused": True,
        "paused_since": since,
        "paused_by": doc.get("by"),
        "paused_age_s": round(max(0, now_ms - since) / 1000, 1),
    }


def _config(raw: dict[bytes, bytes], now_ms: int) -> dict[str, Any]:
    """The config hash each live process reports (relay/store/reload.py); ``agree`` is false if they differ."""
    hashes: dict[str, list[str]] = {}
    for name, value in raw.items():
        try:
            doc = json.loads(value)
            if now_ms - int(doc["seen"]) > k.PROC_ALIVE_MS:
                continue
            hashes.setdefault(str(doc["hash"]), []).append(name.decode())
        except (ValueError, KeyError, TypeError):
            continue
    return {"agree": len(hashes) <= 1, "hashes": {h: sorted(names) for h, names in hashes.items()}}


def _age(now_ms: int, score: str) -> float | None:
    return round(max(0.0, (now_ms - float(score)) / 1000), 3) if score else None


def _windows(row: dict[str, str]) -> list[dict[str, Any]]:
    """The endpoint's window (w1), the last hour (w2) and the last day (w3): failing over attempted."""
    windows: list[dict[str, Any]] = []
    for w in (1, 2, 3):
        retrying, failed, delivered, resolved = (
            int(row[f"w{w}_{s}"]) for s in ("retrying", "failed", "delivered", "resolved")
        )
        failing = retrying + failed
        attempted = failing + delivered + resolved
        windows.append(
            {
                "failing": failing,
                "retrying": retrying,
                "failed": failed,
                "delivered": delivered,
                "resolved": resolved,
                "attempted": attempted,
                "share": _share(failing, attempted),
            }
        )
    return windows


def _endpoint_row(settings: Settings, ep: Endpoint, row: dict[str, str], now_ms: int) -> dict[str, Any]:
    """One endpoint's figures from health.lua's row (EP_FIELDS) and its verdict.

    Failing when (docs/operations.md, "When an endpoint is failing"): a serial endpoint's head has
    failed an attempt (everything behind it is held back); or a delivery in the window gave up and no
    delivered resend resolved it; or more than threshold_percent of at least min_deliveries
    deliveries in the window are failing. min_deliveries damps only that last share."""
    windows = _windows(row)
    threshold, min_deliveries, window_hours = thresholds(settings, ep)
    window = windows[0]
    share = window["share"]
    blocked = bool(row["head_nid"])
    over = share is not None and 100 * share > threshold and window["attempted"] >= min_deliveries
    causes = [
        cause
        for cause, on in (("head_retrying", blocked), ("given_up", window["failed"] > 0), ("threshold", over))
        if on
    ]
    since = (_ms(row["open_since"]) or _ms(row["first_failing"])) if causes else None
    return {
        **{state: int(row[f"n_{state}"]) for state in COUNT_STATES},
        "url_host": host(ep.url),
        "serial": not ep.concurrent,
        "window": {**window, "hours": window_hours, "threshold_percent": threshold, "min_deliveries": min_deliveries},
        "last_hour": windows[1],
        "last_day": windows[2],
        "failing": bool(causes),
        "causes": causes,
        "failing_since": since,
        # a blocked serial head is the error that matters: nothing behind it moves
        "last_error": (row["head_last"] if blocked else row["last_error"]) or None,
        "last_error_at": _ms(row["head_at"] if blocked else row["last_error_at"]),
        "held_back": int(row["held_back"]) if blocked else 0,
        "oldest_pending_age_s": _age(now_ms, row["oldest_recv"]),  # since receipt
        "oldest_new_age_s": _age(now_ms, row["pending_at"]),
        # per_order: the oldest new delivery held behind an older one of its order that failed an attempt
        "order_held": {"age_s": _age(now_ms, row["order_held_at"]), "last_error": row["order_head_last"] or None}
        if row["order_held_at"]
        else None,
        "last_ok": _ms(row["last_ok"]),
        "last_fail": _ms(row["last_fail"]),
        "resent": int(row["resent"]),  # failed deliveries resent here and not yet resolved (popped)
    }


def _source_row(cfg: Any, minutes: int, row: dict[str, str], expect_hours: float | None, now_ms: int) -> dict[str, Any]:
    """One source's figures from health.lua (SRC_FIELDS): refusals and stored notifications in the
    window, the latest refusal (at, incident start, reason, detail, channel), notifications stored
    after it (-1: none), the start of the incident the alerts opened ('' if none), and for a source
    with ``expect_within_hours``, its latest notification and since when it is watched."""
    refused, accepted = int(row["refused"]), int(row["accepted"])
    after = int(row["after"])
    accepted_since_last = after if after >= 0 else None
    share = _share(refused, refused + accepted)
    over = share is not None and 100 * share > cfg.source_threshold_percent and refused >= cfg.source_min_rejections
    # once raised, only accepted notifications end it: refusals ageing out of the window (2Checkout's
    # retries thinning out, a quiet night) are not a recovery. Bounded by the latest refusal's record,
    # which expires after 2Checkout's 48 h of retries.
    held = bool(row["opened"]) and bool(row["last_at"])
    rejecting = (over or held) and (accepted_since_last or 0) < k.SOURCE_RECOVERY_ACCEPTED
    last_received = _ms(row["last_received"])
    silent = False
    if expect_hours:
        # never received: counted from when the relay first ran with the setting (relay:src:{src}:watched)
        counted_from = last_received or _ms(row["watched"]) or now_ms
        silent = now_ms - counted_from > expect_hours * HOUR_MS
    return {
        "window_minutes": minutes,
        "refused": refused,
        "accepted": accepted,
        "requests": refused + accepted,
        "share": share,
        "last_refused_at": _ms(row["last_at"]),
        "since": _ms(row["first"]),
        "reason": row["reason"] or None,
        "detail": row["detail"] or None,
        "channel": row["channel"] or None,
        "accepted_since_last": accepted_since_last,
        "rejecting": rejecting,
        "expect_within_hours": expect_hours,
        "last_received_at": last_received,
        "silent": silent,
        "watched_since": _ms(row["watched"]),
    }


async def hourly(redis: Redis, endpoints: Sequence[str], now_ms: int) -> dict[str, list[dict[str, int]]]:
    """Per endpoint, the 24 clock hours up to now: deliveries that ended delivered or resolved (``ok``)
    or failing (``fail``: retrying or failed) in each, by last change (relay/store/lua/hourly.lua)."""
    first = (now_ms // HOUR_MS - 23) * HOUR_MS
    rows = await script(HOURLY)(
        args=HOURLY.pack_args(*endpoints, first_ms=first, hour_ms=HOUR_MS, hours=24), client=redis
    )
    return {
        ep: [{"start": first + h * HOUR_MS, "ok": int(row[2 * h]), "fail": int(row[2 * h + 1])} for h in range(24)]
        for ep, row in zip(endpoints, rows, strict=True)
    }


def _workers(rows: list[tuple[bytes, float]], now_ms: int) -> dict[str, Any]:
    listed = [
        {
            "name": name.decode(),
            "last_seen": int(score),
            "age_s": round((now_ms - score) / 1000, 1),
            "alive": now_ms - score <= WORKER_ALIVE_MS,
        }
        for name, score in sorted(rows, key=lambda r: -r[1])
    ]
    return {"alive": sum(1 for w in listed if w["alive"]), "list": listed}

"""The relay's one evaluation of health: ``healthy``, ``degraded`` or ``unhealthy``, with its problems.

``health_report`` is what ``relay health``, ``GET /api/health``, the dashboard and the alert job
(workers/alerts.py) all read, so they never disagree. It reads summaries only: per endpoint, the
state indexes ``relay:ep:{ep}:st:{state}`` (scored by each delivery's last change) counted with
ZCOUNT over the window; per source, a few per-minute refusal counters and the source index. Two
round trips, whatever the amount of data.

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
from relay.store import reconcile
from relay.store.connection import REDIS_ERRORS
from relay.store.resolve import resolve
from relay.store.scripts import shared

WORKER_ALIVE_MS = 30_000
COUNT_STATES = ("pending", "in_flight", "retrying", "failed", "delivered", "skipped", k.RESOLVED)
HOUR_MS = 3_600_000
STATUS_EXIT = {"healthy": 0, "degraded": 1, "unhealthy": 2}
PROBLEM_KINDS = ("endpoint_failing", "source_rejecting", "no_worker", "backlog_too_old", "redis_unreachable",
                 "notifications_missing", "reconcile_failing")


def iso(ms: int | float | None) -> str | None:
    from datetime import UTC, datetime

    if ms is None:
        return None
    return datetime.fromtimestamp(int(ms) / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


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


def thresholds(settings: Settings, ep: Endpoint) -> tuple[float, int, float]:
    """An endpoint's (threshold_percent, min_deliveries, window_hours): its own, else [alerts]."""
    cfg = settings.alerts
    return (cfg.threshold_percent if ep.alert_threshold_percent is None else ep.alert_threshold_percent,
            cfg.min_deliveries if ep.alert_min_deliveries is None else ep.alert_min_deliveries,
            cfg.window_hours if ep.alert_window_hours is None else ep.alert_window_hours)


def host(url: str) -> str:
    return urlsplit(url).netloc.rpartition("@")[2]


def _share(failing: int, attempted: int) -> float | None:
    return round(failing / attempted, 4) if attempted else None


def percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


async def health_report(redis: Redis, settings: Settings, now_ms: int,
                        *, max_pending_age: float | None = None) -> dict[str, Any]:
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
        problem = {"kind": "redis_unreachable", "since": iso(now_ms), "error": error,
                   "message": f"Redis unreachable ({error}): nothing can be stored or delivered"}
        return {
            "status": "unhealthy", "problems": [problem], "reasons": [problem["message"]], "warnings": [],
            "checked_at": now_ms, "checked_at_iso": iso(now_ms), "max_pending_age_s": limit,
            "redis": {"reachable": False, "error": error}, "queue": None, "workers": None,
            "endpoints": {}, "sources": {}, "reconcile": {},
        }
    report["max_pending_age_s"] = limit
    _verdict(report, settings, limit)
    return report


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _read(redis: Redis, settings: Settings, now_ms: int) -> dict[str, Any]:
    endpoints = list(settings.endpoints.values())
    sources = list(settings.sources)
    cfg = settings.alerts
    src_minutes = max(1, round(cfg.source_window_minutes))
    args: list[str | int] = [now_ms, len(endpoints)]
    for ep in endpoints:
        args += [ep.name, int(thresholds(settings, ep)[2] * HOUR_MS)]
    args += [len(sources), src_minutes, *sources]
    script = shared(redis, "health")
    async with redis.pipeline(transaction=False) as pipe:
        pipe.info("persistence")
        pipe.info("memory")
        pipe.config_get("save")
        pipe.zcard(k.QUEUE_NAME)
        pipe.zcard(k.FANOUT)
        pipe.zrange(k.QUEUE_NAME, 0, 0, withscores=True)
        pipe.zrange(k.WORKERS, 0, -1, withscores=True)
        await script(keys=[], args=args, client=pipe)
        # operator control (relay/store/control.py, relay/store/reload.py): pauses and config hashes
        pipe.hgetall(k.PAUSED)
        pipe.hgetall(k.PROCS)
        for ep in endpoints:
            pipe.zcard(k.ep_state(ep.name, "paused"))
            pipe.zcard(k.ep_state(ep.name, "cancelled"))
        # reconciliation with 2Checkout's order list (relay/store/reconcile.py): its last result per source
        reconciled = reconcile.reconciled_sources(settings)
        for src in reconciled:
            pipe.get(k.reconcile_state(src))
        rows: list[Any] = await pipe.execute(raise_on_error=False)
    for i, row in enumerate(rows):
        if isinstance(row, Exception) and i != 2:  # only CONFIG GET (index 2) may be refused
            raise row
    persistence, memory, save, _arq_jobs, fanout_depth, queue_head, workers, figures, paused, procs = rows[:10]
    held = rows[10:10 + 2 * len(endpoints)]
    report: dict[str, Any] = {
        "checked_at": now_ms,
        "checked_at_iso": iso(now_ms),
        "redis": {
            "reachable": True,
            "used_memory": int(memory.get("used_memory", 0)),
            "used_memory_human": str(memory.get("used_memory_human", "")),
            "persistence": _persistence(persistence, save),
        },
        # what waits, in the operator's words: notifications not yet routed, and deliveries not yet
        # sent (filled in below); never ARQ's own queue, which also holds the sweeper's cron jobs
        "queue": {"fanout": int(fanout_depth), "deliveries": 0, "depth": int(fanout_depth),
                  "oldest_age_s": oldest_age_s(now_ms, queue_head)},
        "workers": _workers(workers, now_ms),
        "endpoints": {},
        "sources": {},
        "config": _config(procs, now_ms),
        "reconcile": {src: reconcile.load(raw) for src, raw in zip(reconciled, rows[10 + 2 * len(endpoints):],
                                                                   strict=True)},
    }
    for i, (ep, row) in enumerate(zip(endpoints, figures[:len(endpoints)], strict=True)):
        report["endpoints"][ep.name] = {
            **_endpoint_row(settings, ep, [_text(v) for v in row], now_ms),
            "paused_deliveries": int(held[2 * i]), "cancelled": int(held[2 * i + 1]),
            **_pause(paused.get(ep.name.encode()), now_ms),
        }
    waiting = sum(e["pending"] + e["retrying"] + e["paused_deliveries"] for e in report["endpoints"].values())
    report["queue"]["deliveries"] = waiting
    report["queue"]["depth"] += waiting
    for src, row in zip(sources, figures[len(endpoints):], strict=True):
        report["sources"][src] = _source_row(cfg, src_minutes, [_text(v) for v in row])
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
    return {"paused": True, "paused_since": since, "paused_by": doc.get("by"),
            "paused_age_s": round(max(0, now_ms - since) / 1000, 1)}


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


def _endpoint_row(settings: Settings, ep: Endpoint, row: list[str], now_ms: int) -> dict[str, Any]:
    """One endpoint's figures from health.lua's row: 7 state counts, the pending and retrying heads'
    scores, 3 windows x (retrying, failed, delivered, resolved), the oldest failing score in the window,
    the latest failing delivery's last result and time, the open incident's start, last ok, last fail."""
    n = len(COUNT_STATES)
    counts = dict(zip(COUNT_STATES, (int(x) for x in row[:n]), strict=True))
    pending_head, retrying_head = row[n], row[n + 1]
    windows: list[dict[str, Any]] = []
    for w in range(3):
        retrying, failed, delivered, resolved = (int(x) for x in row[n + 2 + 4 * w: n + 6 + 4 * w])
        failing = retrying + failed
        attempted = failing + delivered + resolved
        windows.append({"failing": failing, "retrying": retrying, "failed": failed, "delivered": delivered,
                        "resolved": resolved, "attempted": attempted, "share": _share(failing, attempted)})
    first_failing, last_error, last_error_at, open_since, last_ok, last_fail = row[n + 14:n + 20]
    threshold, min_deliveries, window_hours = thresholds(settings, ep)
    window = windows[0]
    share = window["share"]
    is_failing = share is not None and 100 * share > threshold and window["attempted"] >= min_deliveries
    since = (_ms(open_since) or _ms(first_failing)) if is_failing else None
    ages = [a for a in (_age(now_ms, pending_head), _age(now_ms, retrying_head)) if a is not None]
    return {
        **counts,
        "url_host": host(ep.url),
        "window": {**window, "hours": window_hours, "threshold_percent": threshold, "min_deliveries": min_deliveries},
        "last_hour": windows[1],
        "last_day": windows[2],
        "failing": is_failing,
        "failing_since": since,
        "last_error": last_error or None,
        "last_error_at": _ms(last_error_at),
        "oldest_pending_age_s": max(ages) if ages else None,
        "oldest_new_age_s": _age(now_ms, pending_head),
        "last_ok": _ms(last_ok),
        "last_fail": _ms(last_fail),
        "resent": int(row[n + 20]),  # failed deliveries resent here and not yet resolved (popped)
    }


def _source_row(cfg: Any, minutes: int, row: list[str]) -> dict[str, Any]:
    """One source's figures from health.lua: refusals and stored notifications in the window, the latest
    refusal (at, incident start, reason, detail, channel), notifications stored after it (-1: none) and
    the start of the incident the alerts opened ('' if none)."""
    refused, accepted = int(row[0]), int(row[1])
    at, first, reason, detail, channel, after, opened = row[2:9]
    accepted_since_last = int(after) if int(after) >= 0 else None
    share = _share(refused, refused + accepted)
    over = (share is not None and 100 * share > cfg.source_threshold_percent
            and refused >= cfg.source_min_rejections)
    # once raised, only accepted notifications end it: refusals ageing out of the window (2Checkout's
    # retries thinning out, a quiet night) are not a recovery. Bounded by the latest refusal's record,
    # which expires after 2Checkout's 48 h of retries.
    held = bool(opened) and bool(at)
    rejecting = (over or held) and (accepted_since_last or 0) < k.SOURCE_RECOVERY_ACCEPTED
    return {
        "window_minutes": minutes, "refused": refused, "accepted": accepted, "requests": refused + accepted,
        "share": share, "last_refused_at": _ms(at), "since": _ms(first), "reason": reason or None,
        "detail": detail or None, "channel": channel or None, "accepted_since_last": accepted_since_last,
        "rejecting": rejecting,
    }


async def hourly(redis: Redis, endpoints: Sequence[str], now_ms: int) -> dict[str, list[dict[str, int]]]:
    """Per endpoint, the 24 clock hours up to now: deliveries that ended delivered or resolved (``ok``)
    or failing (``fail``: retrying or failed) in each, by last change (relay/store/lua/hourly.lua)."""
    first = (now_ms // HOUR_MS - 23) * HOUR_MS
    rows = await shared(redis, "hourly")(keys=[], args=[first, HOUR_MS, 24, *endpoints], client=redis)
    return {ep: [{"start": first + h * HOUR_MS, "ok": int(row[2 * h]), "fail": int(row[2 * h + 1])}
                 for h in range(24)]
            for ep, row in zip(endpoints, rows, strict=True)}


def _workers(rows: list[tuple[bytes, float]], now_ms: int) -> dict[str, Any]:
    listed = [
        {"name": name.decode(), "last_seen": int(score), "age_s": round((now_ms - score) / 1000, 1),
         "alive": now_ms - score <= WORKER_ALIVE_MS}
        for name, score in sorted(rows, key=lambda r: -r[1])
    ]
    return {"alive": sum(1 for w in listed if w["alive"]), "list": listed}


def endpoint_message(name: str, row: dict[str, Any]) -> str:
    w = row["window"]
    error = f"; last error {row['last_error']}" if row["last_error"] else ""
    return (f"endpoint {name} ({row['url_host']}) failing: {w['failing']} of {w['attempted']} deliveries "
            f"({percent(w['share'])}) failed in the last {w['hours']:g} h (threshold {w['threshold_percent']:g}%); "
            f"{w['retrying']} retrying, {w['failed']} given up{error}")


def source_message(name: str, row: dict[str, Any]) -> str:
    return (f"source {name} refusing notifications: {row['refused']} of {row['requests']} requests "
            f"({percent(row['share'])}) refused in the last {row['window_minutes']:g} min; "
            # an incident outlives its window until notifications are accepted again: say how far that is
            f"{row['accepted_since_last'] or 0} accepted since the last refusal at {iso(row['last_refused_at'])} "
            f"({k.SOURCE_RECOVERY_ACCEPTED} in a row end it); last reason "
            f"{row['reason']}: {row['detail']}. 2Checkout retries a refused notification for 48 h: "
            f"fix the cause in time and they arrive")


def _verdict(report: dict[str, Any], settings: Settings, limit: float) -> None:
    problems: list[dict[str, Any]] = []
    workers = report["workers"]
    if not workers["alive"]:
        seen = workers["list"][0] if workers["list"] else None
        last = f"; last seen: {seen['name']} {seen['age_s']:g} s ago" if seen else ""
        problems.append({
            "kind": "no_worker", "since": iso(seen["last_seen"]) if seen else None,
            "last_worker": seen["name"] if seen else None,
            "message": f"no live worker (no heartbeat in the last {WORKER_ALIVE_MS // 1000} s{last}): "
                       "nothing is delivered; start relay worker"})
    now = report["checked_at"]
    for name, row in report["endpoints"].items():
        age = row["oldest_new_age_s"]
        if age is not None and age > limit:
            problems.append({
                "kind": "backlog_too_old", "endpoint": name, "since": iso(now - age * 1000),
                "oldest_age_s": age, "limit_s": limit,
                "message": f"endpoint {name}: a delivery has waited {age:.0f} s to be attempted (limit {limit:g} s)"})
    age = report["queue"]["oldest_age_s"]
    if age is not None and age > limit:
        problems.append({
            "kind": "backlog_too_old", "queue": "arq", "since": iso(now - age * 1000),
            "oldest_age_s": age, "limit_s": limit,
            "message": f"queue: a fan-out job has waited {age:.0f} s (limit {limit:g} s)"})
    pause_limit_h = settings.health.max_pause_hours
    for name, row in report["endpoints"].items():
        # a paused endpoint is held on purpose: not failing, its alert quiet; only a long pause is a problem
        if row["paused"]:
            if row["paused_age_s"] > pause_limit_h * 3600:
                problems.append({
                    "kind": "endpoint_paused", "endpoint": name, "since": iso(row["paused_since"]),
                    "paused_by": row["paused_by"], "paused_age_s": row["paused_age_s"],
                    "limit_hours": pause_limit_h,
                    "message": f"endpoint {name} has been paused for {row['paused_age_s'] / 3600:.1f} h by "
                               f"{row['paused_by']} (limit {pause_limit_h:g} h): relay endpoints resume {name}"})
            continue
        if row["failing"]:
            w = row["window"]
            problems.append({
                "kind": "endpoint_failing", "endpoint": name, "url_host": row["url_host"],
                "since": iso(row["failing_since"]), "failing": w["failing"], "attempted": w["attempted"],
                "share": w["share"], "retrying": w["retrying"], "failed": w["failed"],
                "window_hours": w["hours"], "threshold_percent": w["threshold_percent"],
                "min_deliveries": w["min_deliveries"], "last_error": row["last_error"],
                "last_error_at": iso(row["last_error_at"]), "oldest_waiting_s": row["oldest_pending_age_s"],
                "message": endpoint_message(name, row)})
    cfg = settings.alerts
    for name, row in report["sources"].items():
        if row["rejecting"]:
            problems.append({
                "kind": "source_rejecting", "source": name, "since": iso(row["since"]),
                "refused": row["refused"], "requests": row["requests"], "share": row["share"],
                "window_minutes": row["window_minutes"], "threshold_percent": cfg.source_threshold_percent,
                "min_rejections": cfg.source_min_rejections, "reason": row["reason"], "detail": row["detail"],
                "channel": row["channel"], "last_refused_at": iso(row["last_refused_at"]),
                "accepted_since_last": row["accepted_since_last"] or 0,
                "message": source_message(name, row)})
    problems += reconcile.problems(report["reconcile"])
    warnings: list[str] = []
    if not report["config"]["agree"]:
        running = "; ".join(f"{h}: {', '.join(names)}" for h, names in report["config"]["hashes"].items())
        warnings.append(f"processes run different configs (config hash: processes): {running}; "
                        "run relay reload, or restart the odd one out")
    if report["redis"]["persistence"] == "none":
        warnings.append("Redis persistence is off: a Redis restart loses every stored notification")
    severe = {"no_worker", "backlog_too_old", "redis_unreachable"}
    if any(p["kind"] in severe for p in problems):
        status = "unhealthy"
    elif problems:
        status = "degraded"
    else:
        status = "healthy"
    report["status"] = status
    report["problems"] = problems
    report["reasons"] = [p["message"] for p in problems]
    report["warnings"] = warnings

"""The problems health finds in the figures relay/store/stats.py read, their messages, and the status.

Every kind, its subject, figures and ``since`` are documented in docs/operations.md ("Problem
kinds"). ``verdict`` also adds ``notes``: facts worth a line that change no status (refusals below
the alert threshold).
"""

from __future__ import annotations

from typing import Any

from config.settings import Settings
from relay import constants as k
from relay.store import reconcile
from relay.timefmt import iso_seconds

HOUR_MS = 3_600_000
WORKER_ALIVE_MS = 30_000
SEVERE = frozenset({"no_worker", "backlog_too_old", "redis_unreachable"})


def percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


def endpoint_message(name: str, row: dict[str, Any]) -> str:
    w = row["window"]
    blocked = ""
    if "head_retrying" in row["causes"]:
        blocked = (
            f"; serial: its head delivery is retrying, holding back {row['held_back']} "
            f"{'notification' if row['held_back'] == 1 else 'notifications'} behind it"
        )
    error = f"; last error {row['last_error']}" if row["last_error"] else ""
    return (
        f"endpoint {name} ({row['url_host']}) failing: {w['failing']} of {w['attempted']} deliveries "
        f"({percent(w['share'])}) failed in the last {w['hours']:g} h (threshold {w['threshold_percent']:g}%); "
        f"{w['retrying']} retrying, {w['failed']} given up{blocked}{error}"
    )


def source_message(name: str, row: dict[str, Any]) -> str:
    return (
        f"source {name} refusing notifications: {row['refused']} of {row['requests']} requests "
        f"({percent(row['share'])}) refused in the last {row['window_minutes']:g} min; "
        # an incident outlives its window until notifications are accepted again: say how far that is
        f"{row['accepted_since_last'] or 0} accepted since the last refusal at "
        f"{iso_seconds(row['last_refused_at'])} "
        f"({k.SOURCE_RECOVERY_ACCEPTED} in a row end it); last reason "
        f"{row['reason']}: {row['detail']}. 2Checkout retries a refused notification for 48 h: "
        f"fix the cause in time and they arrive"
    )


def silent_message(name: str, row: dict[str, Any]) -> str:
    last = (
        f"the last one arrived at {iso_seconds(row['last_received_at'])}"
        if row["last_received_at"]
        else f"none since the relay started watching it at {iso_seconds(row['watched_since'])}"
    )
    return (
        f"source {name} is silent: no notification accepted in {row['expect_within_hours']:g} h "
        f"(expect_within_hours); {last}. Check the shop's sales, and the IPN/LCN/INS URLs and "
        "the secret key in the 2Checkout control panel"
    )


def refusals_note(name: str, row: dict[str, Any]) -> str:
    return (
        f"source {name}: {row['refused']} of {row['requests']} requests refused in the last "
        f"{row['window_minutes']:g} min (below the alert threshold); last {row['reason']} at "
        f"{iso_seconds(row['last_refused_at'])}"
    )


def verdict(report: dict[str, Any], settings: Settings, limit: float) -> None:
    """Set the report's ``status``, ``problems`` (most severe first), ``reasons``, ``warnings`` and ``notes``."""
    notes: list[dict[str, Any]] = []
    problems = [
        *_redis_and_workers(report, notes),
        *_backlogs(report, limit, notes),
        *_endpoints(report, settings),
        *_sources(report, settings, notes),
        *reconcile.problems(report["reconcile"]),
    ]
    warnings: list[str] = []
    if not report["config"]["agree"]:
        running = "; ".join(f"{h}: {', '.join(names)}" for h, names in report["config"]["hashes"].items())
        warnings.append(
            f"processes run different configs (config hash: processes): {running}; "
            "run relay reload, or restart the odd one out"
        )
    if report["redis"]["persistence"] == "none":
        warnings.append("Redis persistence is off: a Redis restart loses every stored notification")
    if any(p["kind"] in SEVERE for p in problems):
        status = "unhealthy"
    elif problems:
        status = "degraded"
    else:
        status = "healthy"
    report["status"] = status
    report["problems"] = problems
    report["reasons"] = [p["message"] for p in problems]
    report["warnings"] = warnings
    report["notes"] = notes


def _redis_and_workers(report: dict[str, Any], notes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    problems: list[dict[str, Any]] = []
    redis = report["redis"]
    if redis.get("full"):  # it answers, but stores nothing: as unreachable for the ingress and the workers
        error = f"Redis is full: {redis['used_memory_human']} used, at maxmemory with maxmemory-policy noeviction"
        problems.append(
            {
                "kind": "redis_unreachable",
                "since": iso_seconds(report["checked_at"]),
                "error": error,
                "message": f"{error}: every write is refused, so nothing can be stored or delivered "
                "(notifications are answered 503); raise maxmemory or free memory",
            }
        )
    workers = report["workers"]
    if not workers["alive"] and redis.get("full"):
        # a heartbeat is a write, which a full Redis refuses: running workers fall silent with it, so a
        # missing heartbeat says nothing of them, and "start relay worker" would be wrong advice (seen
        # under a fault run: every full Redis showed no_worker beside it while two workers ran)
        notes.append(
            {
                "kind": "workers_unknown",
                "message": "no worker heartbeat: Redis refuses the workers' heartbeats (full) as every "
                "other write, so whether any worker runs is unknown until it takes writes again",
            }
        )
    elif not workers["alive"]:
        seen = workers["list"][0] if workers["list"] else None
        last = f"; last seen: {seen['name']} {seen['age_s']:g} s ago" if seen else ""
        problems.append(
            {
                "kind": "no_worker",
                "since": iso_seconds(seen["last_seen"]) if seen else None,
                "last_worker": seen["name"] if seen else None,
                "message": f"no live worker (no heartbeat in the last {WORKER_ALIVE_MS // 1000} s{last}): "
                "nothing is delivered; start relay worker",
            }
        )
    return problems


def _endpoint_backlog(
    name: str, row: dict[str, Any], limit: float, now: int, notes: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """One endpoint's ``backlog_too_old``, or None; a throttled endpoint's wait goes to ``notes``."""
    age = row["oldest_new_age_s"]
    behind = ""
    if "head_retrying" in row["causes"]:
        behind = f", behind its head delivery retrying ({row['last_error']})"
    if row.get("paused") and row["pending"] + row["retrying"]:
        behind, age = _unfinished_pause(name, row, age)
    held = row.get("order_held")
    if row.get("throttled"):
        # held back by its rate_limit, as configured: no alert (issue 24), but said
        notes.append(
            {
                "kind": "endpoint_throttled",
                "endpoint": name,
                "rate_limit": row["rate_limit"],
                "rate": row["rate"],
                "oldest_age_s": age,
                "message": f"endpoint {name}: deliveries wait for its rate_limit ({row['rate_limit']:g}/s; "
                f"sent at {row['rate']:g}/s now)" + (f"; the oldest has waited {age:.0f} s" if age is not None else ""),
            }
        )
        # but a per_order delivery behind a failing delivery of its own order waits for that one,
        # not for the rate: its wait is a backlog (before, the note alone said "wait for its
        # rate_limit" and health stayed healthy while one order was blocked for as long as its
        # head retried; without a rate_limit the same wait was backlog_too_old)
        age = held["age_s"] if held else None
    if held and age is not None and held["age_s"] >= age:  # the oldest waiting is the one held
        behind = f", behind an older delivery of its order retrying ({held['last_error']})"
    if age is not None and age > limit:
        message = f"endpoint {name}: a delivery has waited {age:.0f} s to be attempted (limit {limit:g} s){behind}"
        return _too_old({"endpoint": name}, age, limit, now, message)
    return None


def _too_old(subject: dict[str, str], age: float, limit: float, now: int, message: str) -> dict[str, Any]:
    """A ``backlog_too_old`` problem of ``subject`` (an endpoint, or the fan-out queue)."""
    return {
        "kind": "backlog_too_old",
        **subject,
        "since": iso_seconds(now - age * 1000),
        "oldest_age_s": age,
        "limit_s": limit,
        "message": message,
    }


def _unfinished_pause(name: str, row: dict[str, Any], age: float | None) -> tuple[str, float]:
    """A paused endpoint's backlog message, and its age, while work is left pending or retrying.

    A finished pause leaves nothing pending or retrying (new and finished work parks as paused): a
    pause or resume cut short (the CLI killed, Redis lost between its pages) did, and a paused endpoint
    sends none of it; said as a retrying head before, which pointed at the endpoint."""
    left = row["pending"] + row["retrying"]
    behind = (
        f": {name} is paused, and its pause or resume did not finish ({left} deliveries left pending or "
        f"retrying, which a paused endpoint never sends): run relay endpoints pause {name} again, or resume it"
    )
    if age is None:
        # only retrying work left (an endpoint is paused because it fails): no pending age to go by,
        # and it has been stuck since the pause at the latest, its receipt at the earliest
        age = min(a for a in (row["paused_age_s"], row["oldest_pending_age_s"]) if a is not None)
    return behind, age


def _backlogs(report: dict[str, Any], limit: float, notes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Work waiting longer than ``limit`` s, per endpoint and in the fan-out queue; a throttled endpoint's
    wait is a note (its rate_limit holds it back as configured), not a problem, unless it is a per_order
    delivery held behind a failing delivery of its own order."""
    problems: list[dict[str, Any]] = []
    now = report["checked_at"]
    for name, row in report["endpoints"].items():
        problem = _endpoint_backlog(name, row, limit, now, notes)
        if problem is not None:
            problems.append(problem)
    age = report["queue"]["oldest_age_s"]
    if age is not None and age > limit:
        message = f"fan-out: a notification has waited {age:.0f} s to be routed to its endpoints (limit {limit:g} s)"
        problems.append(_too_old({"queue": "fanout"}, age, limit, now, message))
    return problems


def _endpoints(report: dict[str, Any], settings: Settings) -> list[dict[str, Any]]:
    problems: list[dict[str, Any]] = []
    pause_limit_h = settings.health.max_pause_hours
    for name, row in report["endpoints"].items():
        # a paused endpoint is held on purpose: not failing, its alert quiet; only a long pause is a problem
        if row["paused"]:
            if row["paused_age_s"] > pause_limit_h * 3600:
                problems.append(
                    {
                        "kind": "endpoint_paused",
                        "endpoint": name,
                        "since": iso_seconds(row["paused_since"]),
                        "paused_by": row["paused_by"],
                        "paused_age_s": row["paused_age_s"],
                        "limit_hours": pause_limit_h,
                        "message": f"endpoint {name} has been paused for {row['paused_age_s'] / 3600:.1f} h by "
                        f"{row['paused_by']} (limit {pause_limit_h:g} h): relay endpoints resume {name}",
                    }
                )
            continue
        if row["failing"]:
            w = row["window"]
            problems.append(
                {
                    "kind": "endpoint_failing",
                    "endpoint": name,
                    "url_host": row["url_host"],
                    "since": iso_seconds(row["failing_since"]),
                    "causes": row["causes"],
                    "serial": row["serial"],
                    "failing": w["failing"],
                    "attempted": w["attempted"],
                    "share": w["share"],
                    "retrying": w["retrying"],
                    "failed": w["failed"],
                    "held_back": row["held_back"],
                    "window_hours": w["hours"],
                    "threshold_percent": w["threshold_percent"],
                    "min_deliveries": w["min_deliveries"],
                    "last_error": row["last_error"],
                    "last_error_at": iso_seconds(row["last_error_at"]),
                    "oldest_waiting_s": row["oldest_pending_age_s"],
                    "message": endpoint_message(name, row),
                }
            )
    return problems


def _sources(report: dict[str, Any], settings: Settings, notes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Refusing and silent sources; refusals below the threshold are a note, not a problem."""
    problems: list[dict[str, Any]] = []
    for name, row in report["sources"].items():
        if row["rejecting"]:
            problems.append(_source_rejecting(name, row, settings))
        elif row["refused"]:
            notes.append(_source_refusals(name, row))
        if row["silent"]:
            problems.append(_source_silent(name, row))
    return problems


def _source_rejecting(name: str, row: dict[str, Any], settings: Settings) -> dict[str, Any]:
    cfg = settings.alerts
    return {
        "kind": "source_rejecting",
        "source": name,
        "since": iso_seconds(row["since"]),
        "refused": row["refused"],
        "requests": row["requests"],
        "share": row["share"],
        "window_minutes": row["window_minutes"],
        "threshold_percent": cfg.source_threshold_percent,
        "min_rejections": cfg.source_min_rejections,
        "reason": row["reason"],
        "detail": row["detail"],
        "channel": row["channel"],
        "last_refused_at": iso_seconds(row["last_refused_at"]),
        "accepted_since_last": row["accepted_since_last"] or 0,
        "message": source_message(name, row),
    }


def _source_refusals(name: str, row: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "source_refusals",
        "source": name,
        "refused": row["refused"],
        "requests": row["requests"],
        "window_minutes": row["window_minutes"],
        "reason": row["reason"],
        "last_refused_at": iso_seconds(row["last_refused_at"]),
        "message": refusals_note(name, row),
    }


def _source_silent(name: str, row: dict[str, Any]) -> dict[str, Any]:
    start = row["last_received_at"] or row["watched_since"]
    return {
        "kind": "source_silent",
        "source": name,
        "since": iso_seconds(start + row["expect_within_hours"] * HOUR_MS) if start else None,
        "last_at": iso_seconds(row["last_received_at"]),
        "expect_within_hours": row["expect_within_hours"],
        "message": silent_message(name, row),
    }

"""Which alerts and recovery messages are due, from the one evaluation of health.

What is wrong comes from relay/store/stats.py:health_report, so an alert never says what ``relay
health`` does not. Each problem has a subject (``ep:{ep}``, ``src:{src}``, ``silent:{src}``,
``backlog:ep:{ep}``, ``backlog:queue``, ``worker``) and two keys, so any number of processes
agree, and both expire: ``relay:alert:{subject}`` (the ms of the last alert, expiring after
``frequency_hours``, deleted when the problem is gone) rate-limits the repeats of one incident, and
``relay:alert:{subject}:open`` (the ms the incident began) marks an alert that still owes a
recovery message; it is refreshed while the problem lasts.

A paused endpoint is neither failing nor recovered: while it is paused its subjects are left as
they are (their open incident kept), so pausing announces nothing and resuming continues the
incident with the same ``since``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError

from config.settings import Settings
from relay import constants as k
from relay.alerting import texts
from relay.alerting.send import Notice
from relay.store.reconcile import reconciled_sources
from relay.store.stats import health_report
from relay.timefmt import iso_seconds

# the kinds the workers' alert job sends; no_worker is the ingress's (relay/alerting/watch.py)
WORKER_KINDS = (
    "endpoint_failing",
    "endpoint_paused",
    "source_rejecting",
    "source_silent",
    "backlog_too_old",
    "notifications_missing",
    "reconcile_failing",
)
INGRESS_KINDS = ("no_worker",)
NO_WORKER_SUBJECT = "worker"  # relay:alert:worker, relay:alert:worker:open


@dataclass(frozen=True)
class Subject:
    key: str  # relay:alert:{key}
    field: str | None  # the payload field naming it
    name: str
    endpoint: str | None = None  # the endpoint it belongs to (left alone while that one is paused)


@dataclass(frozen=True)
class Kind:
    recovered: str
    subject: Callable[[dict[str, Any]], Subject]
    subjects: Callable[[Settings], Iterable[Subject]]  # every subject that may owe a recovery
    text: Callable[[dict[str, Any], Settings, dict[str, Any]], str]
    title: Callable[[dict[str, Any]], str]
    recovery: Callable[[dict[str, Any], Subject], tuple[str, str, dict[str, Any]]]  # what, detail, figures
    recovered_title: Callable[[Subject], str] | None = None  # the recovery's email subject; "{what} recovered"


def _ep(name: str) -> Subject:
    return Subject(f"ep:{name}", "endpoint", name, name)


def _backlog(p: dict[str, Any]) -> Subject:
    if p.get("endpoint"):
        return Subject(f"backlog:ep:{p['endpoint']}", "endpoint", p["endpoint"], p["endpoint"])
    return Subject("backlog:queue", "queue", "fanout")  # the key unchanged: an open incident carries over


def _endpoint_recovery(report: dict[str, Any], s: Subject) -> tuple[str, str, dict[str, Any]]:
    row = report["endpoints"][s.name]
    w = row["window"]
    detail = (
        f"{w['failing']} of {w['attempted']} deliveries failing in the last {w['hours']:g} h "
        f"(threshold {w['threshold_percent']:g}%); {row['failed']} failed deliveries unresolved."
    )
    return (
        f"endpoint {s.name}",
        detail,
        {"failing": w["failing"], "attempted": w["attempted"], "share": w["share"], "unresolved_failed": row["failed"]},
    )


def _source_recovery(report: dict[str, Any], s: Subject) -> tuple[str, str, dict[str, Any]]:
    row = report["sources"][s.name]
    return (
        f"source {s.name}",
        f"{row['accepted_since_last'] or 0} notifications accepted since the last refusal.",
        {
            "problem": "source_rejecting",
            "refused": row["refused"],
            "requests": row["requests"],
            "accepted_since_last": row["accepted_since_last"] or 0,
        },
    )


def _silent_recovery(report: dict[str, Any], s: Subject) -> tuple[str, str, dict[str, Any]]:
    row = report["sources"][s.name]
    at = iso_seconds(row["last_received_at"])
    return (
        f"source {s.name}",
        f"A notification was accepted at {at}." if at else "It is no longer watched.",
        {"problem": "source_silent", "last_at": at},
    )


def _worker_recovery(report: dict[str, Any], s: Subject) -> tuple[str, str, dict[str, Any]]:
    alive = report["workers"]["alive"]
    return "the workers", f"{alive} alive.", {"alive": alive}


def _backlog_recovery(report: dict[str, Any], s: Subject) -> tuple[str, str, dict[str, Any]]:
    return (
        f"the backlog of endpoint {s.name}" if s.field == "endpoint" else "the fan-out queue",
        "Nothing waits longer than [health] max_pending_age.",
        {},
    )


def _missing_recovery(report: dict[str, Any], s: Subject) -> tuple[str, str, dict[str, Any]]:
    return f"source {s.name}", "Every order in 2Checkout's list now has its IPN.", {"count": 0}


def _reconcile_recovery(report: dict[str, Any], s: Subject) -> tuple[str, str, dict[str, Any]]:
    return (
        f"reconciliation of source {s.name}",
        "2Checkout's order API answered the last pass.",
        {"problem": "reconcile_failing"},
    )


def _resumed(report: dict[str, Any], s: Subject) -> tuple[str, str, dict[str, Any]]:
    row = report["endpoints"].get(s.name)
    state = "It is paused again, within max_pause_hours." if row and row["paused"] else "It was resumed."
    return f"endpoint {s.name}", state, {"problem": "endpoint_paused"}


def _all_failing(report: dict[str, Any], settings: Settings) -> int:
    failing = sum(1 for p in report["problems"] if p["kind"] == "endpoint_failing")
    return failing if failing >= len(settings.endpoints) else 0


KINDS: dict[str, Kind] = {
    "endpoint_failing": Kind(
        "endpoint_recovered",
        lambda p: _ep(p["endpoint"]),
        lambda st: [_ep(n) for n in st.endpoints],
        lambda p, st, report: texts.failing_text(p, st, _all_failing(report, st)),
        texts.failing_title,
        lambda report, s: _endpoint_recovery(report, s),
    ),
    "source_rejecting": Kind(
        "source_recovered",
        lambda p: Subject(f"src:{p['source']}", "source", p["source"]),
        lambda st: [Subject(f"src:{n}", "source", n) for n in st.sources],
        lambda p, st, _: texts.rejecting_text(p, st),
        lambda p: f"source {p['source']} is refusing notifications ({p['reason']})",
        _source_recovery,
    ),
    "source_silent": Kind(
        "source_recovered",
        lambda p: Subject(f"silent:{p['source']}", "source", p["source"]),
        lambda st: [Subject(f"silent:{n}", "source", n) for n in st.sources],
        lambda p, st, _: texts.silent_text(p, st),
        lambda p: f"source {p['source']} is silent ({p['expect_within_hours']:g} h without a notification)",
        _silent_recovery,
    ),
    "backlog_too_old": Kind(
        "backlog_recovered",
        _backlog,
        lambda st: [*(_backlog({"endpoint": n}) for n in st.endpoints), _backlog({})],
        lambda p, st, _: texts.backlog_text(p, st),
        lambda p: f"work waits too long ({p.get('endpoint') or 'fan-out queue'}, {p['oldest_age_s']:.0f} s)",
        _backlog_recovery,
    ),
    "no_worker": Kind(
        "worker_recovered",
        lambda p: Subject(NO_WORKER_SUBJECT, None, ""),
        lambda st: [Subject(NO_WORKER_SUBJECT, None, "")],
        lambda p, st, _: texts.no_worker_text(p, st),
        lambda p: "no worker is alive",
        _worker_recovery,
    ),
    # reconciliation with 2Checkout's order list (relay/store/reconcile.py)
    "notifications_missing": Kind(
        "notifications_recovered",
        lambda p: Subject(f"rec:{p['source']}", "source", p["source"]),
        lambda st: [Subject(f"rec:{n}", "source", n) for n in reconciled_sources(st)],
        lambda p, st, _: texts.missing_text(p, st),
        lambda p: f"source {p['source']}: {p['count']} order(s) without their IPN",
        _missing_recovery,
        lambda s: f"source {s.name}: every listed order has its IPN again",
    ),
}
KINDS["reconcile_failing"] = Kind(
    "reconcile_recovered",
    lambda p: Subject(f"recfail:{p['source']}", "source", p["source"]),
    lambda st: [Subject(f"recfail:{n}", "source", n) for n in reconciled_sources(st)],
    lambda p, st, _: texts.reconcile_failing_text(p, st),
    lambda p: f"source {p['source']}: 2Checkout's order API cannot be read ({p['http_status'] or p['error']})",
    _reconcile_recovery,
    lambda s: f"source {s.name}: 2Checkout's order API is read again",
)
# a pause is its own subject, never held back by the pause itself (endpoint=None): the operator is told
# an endpoint has been paused past [health] max_pause_hours, and again when it is resumed
KINDS["endpoint_paused"] = Kind(
    "endpoint_resumed",
    lambda p: Subject(f"paused:{p['endpoint']}", "endpoint", p["endpoint"]),
    lambda st: [Subject(f"paused:{n}", "endpoint", n) for n in st.endpoints],
    lambda p, st, _: texts.paused_text(p, st),
    lambda p: f"endpoint {p['endpoint']} has been paused for {p['paused_age_s'] / 3600:.1f} h",
    _resumed,
    lambda s: f"endpoint {s.name} is no longer paused too long",
)
# figures a problem carries that the payload names otherwise (or that only the health text needs)
_NOT_FIGURES = ("kind", "message", "since", "endpoint", "source", "queue")


def since_ms(value: str | None) -> int | None:
    if not value:
        return None
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


async def evaluate(redis: Redis, settings: Settings, now_ms: int, kinds: Iterable[str] = WORKER_KINDS) -> list[Notice]:
    """Decide which alerts and recovery messages of ``kinds`` are due now, and record that they were sent.

    Long on purpose: the alerts and the recoveries are two passes over one health report, and the
    set of subjects still open links them; apart, that set would have to travel between them.
    """
    kinds = tuple(kinds)
    report = await health_report(redis, settings, now_ms)
    if not report["redis"]["reachable"]:
        return []
    await mark_watched(redis, settings)
    every_ms = max(1, round(settings.alerts.frequency_hours * 3_600_000))
    paused = {name for name, row in report["endpoints"].items() if row["paused"]}
    notices: list[Notice] = []
    open_now: set[str] = set()
    for p in report["problems"]:
        if p["kind"] not in kinds:
            continue
        kind = KINDS[p["kind"]]
        subject = kind.subject(p)
        open_now.add(subject.key)
        claimed = await _claim(redis, subject.key, now_ms, every_ms, since_ms(p["since"]) or now_ms)
        if claimed is not None:
            since = claimed  # the incident's start as its first alert recorded it: the same in every repeat
            figures = {key: v for key, v in p.items() if key not in _NOT_FIGURES}
            notices.append(
                Notice(
                    p["kind"],
                    subject.name,
                    since,
                    now_ms,
                    kind.text({**p, "since": iso_seconds(since)}, settings, report),
                    figures,
                    subject.field,
                    kind.title(p),
                )
            )
        else:
            await redis.pexpire(k.alert_open(subject.key), k.ALERT_OPEN_TTL_MS)
    # no problem now: a subject whose incident is open owes its recovery, unless its endpoint is paused
    quiet = [(name, s) for name in kinds for s in KINDS[name].subjects(settings) if s.key not in open_now]
    held = [s for _, s in quiet if s.endpoint in paused]
    if held:  # pausing ends nothing: the open incident is kept for the resume
        async with redis.pipeline(transaction=False) as pipe:
            for s in held:
                pipe.pexpire(k.alert_open(s.key), k.ALERT_OPEN_TTL_MS)
            await pipe.execute()
    quiet = [(name, s) for name, s in quiet if s.endpoint not in paused]
    opened = await redis.mget([k.alert_open(s.key) for _, s in quiet]) if quiet else []
    for (name, s), value in zip(quiet, opened, strict=True):
        if value is None:
            continue
        # the rate limit ends with the problem (frequency_hours spaces repeats while it lasts), so the
        # subject's next incident alerts at once; one MULTI, so both go together, and only one
        # process finds the open key to send the recovery
        async with redis.pipeline(transaction=True) as pipe:
            pipe.getdel(k.alert_open(s.key))
            pipe.delete(k.alert(s.key))
            got, _ = await pipe.execute()
        if got is None:
            continue
        start = int(got)
        kind = KINDS[name]
        what, detail, figures = kind.recovery(report, s)
        figures["duration_s"] = (now_ms - start) // 1000
        title = kind.recovered_title(s) if kind.recovered_title else f"{what} recovered"
        notices.append(
            Notice(
                kind.recovered,
                s.name,
                start,
                now_ms,
                texts.recovered_text(what, start, now_ms, detail),
                figures,
                s.field,
                title,
            )
        )
    return notices


async def mark_watched(redis: Redis, settings: Settings) -> None:
    """Record when the relay first ran with a source's ``expect_within_hours`` (source_silent counts
    from it while nothing was ever received), and keep the record while it runs so."""
    watched = [src.name for src in settings.sources.values() if src.expect_within_hours]
    if not watched:
        return
    now = await redis.time()
    at = int(now[0]) * 1000 + int(now[1]) // 1000
    async with redis.pipeline(transaction=False) as pipe:
        for name in watched:
            pipe.set(k.source_watched(name), at, nx=True, px=k.SOURCE_WATCHED_TTL_MS)
            pipe.pexpire(k.source_watched(name), k.SOURCE_WATCHED_TTL_MS)
        await pipe.execute()


async def _claim(redis: Redis, subject: str, now_ms: int, every_ms: int, since_ms: int) -> int | None:
    """Record an alert at ``now_ms`` unless one was recorded less than ``every_ms`` before; the
    incident's start if it is recorded (then the alert is due), else None.

    The age is judged by the job's clock, not by the key's TTL (which only removes it afterwards),
    so the rate limit follows the same clock as the failure window. The open key keeps the incident's
    start from the first alert on, and a repeat reports it, so a repeated alert and the recovery say
    the same "since" even where the problem's own since moves (no worker known: the time of the
    check; a backlog: its oldest item now).
    """
    key = k.alert(subject)
    async with redis.pipeline(transaction=True) as pipe:
        try:
            await pipe.watch(key)
            last = await pipe.get(key)
            if last is not None and now_ms - int(last) < every_ms:
                return None
            pipe.multi()  # type: ignore[no-untyped-call]  # unannotated in redis-py
            pipe.set(key, now_ms, px=every_ms)
            pipe.set(k.alert_open(subject), since_ms, px=k.ALERT_OPEN_TTL_MS, nx=True)
            pipe.pexpire(k.alert_open(subject), k.ALERT_OPEN_TTL_MS)
            pipe.get(k.alert_open(subject))
            *_, opened = await pipe.execute()
        except WatchError:  # another checker recorded it first
            return None
    return int(opened)

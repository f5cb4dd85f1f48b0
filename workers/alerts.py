"""Alerts: one per failing endpoint and per refusing source, and a recovery message for each.

What is failing comes from the one evaluation of health (relay/store/stats.py:health_report), so an
alert never says what ``relay health`` does not. Per subject (``ep:{ep}`` or ``src:{src}``) two keys
hold the state, so any number of workers agree, and both expire: ``relay:alert:{subject}`` (the ms of
the last alert, expiring after ``frequency_hours``, deleted when the problem is gone) rate-limits
the repeats of one incident, and
``relay:alert:{subject}:open`` (the ms the incident began) marks an alert that still owes a recovery
message; it is refreshed while the problem lasts.
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Literal

import aiohttp
import structlog
from redis.asyncio import Redis
from redis.exceptions import WatchError

from config.settings import Settings
from relay import constants as k
from relay.store.reconcile import order_link, reconciled_sources
from relay.store.stats import health_report, iso
from workers.engine import Engine

logger = structlog.get_logger()

SEND_TIMEOUT_S = 10.0
Kind = Literal["endpoint_failing", "endpoint_recovered", "source_rejecting", "source_recovered",
               "notifications_missing", "notifications_recovered"]


def duration(ms: int) -> str:
    s = max(0, ms // 1000)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60} min"
    if s >= 60:
        return f"{s // 60} min"
    return f"{s} s"


@dataclass(frozen=True)
class Notice:
    kind: Kind
    subject: str  # the endpoint or source name
    since_ms: int | None
    now_ms: int
    text: str
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def is_endpoint(self) -> bool:
        return self.kind.startswith("endpoint")

    @property
    def subject_line(self) -> str:
        what = f"endpoint {self.subject}" if self.is_endpoint else f"source {self.subject}"
        if self.kind == "endpoint_failing":
            f = self.figures
            return f"[relay] {what} is failing ({f.get('failing')} of {f.get('attempted')} deliveries)"
        if self.kind == "source_rejecting":
            return f"[relay] {what} is refusing notifications ({self.figures.get('reason')})"
        if self.kind == "notifications_missing":
            return f"[relay] {what}: {self.figures.get('count')} order(s) without their IPN"
        if self.kind == "notifications_recovered":
            return f"[relay] {what}: every listed order has its IPN again"
        return f"[relay] {what} recovered"

    def payload(self) -> dict[str, Any]:
        """The webhook JSON: Slack-compatible ``text`` and the same facts as fields."""
        return {"text": self.text, "kind": self.kind,
                ("endpoint" if self.is_endpoint else "source"): self.subject,
                "since": iso(self.since_ms), "at": iso(self.now_ms), "host": socket.gethostname(),
                **self.figures}


def _where(settings: Settings, subject: str, is_endpoint: bool) -> str:
    admin = settings.file.admin
    link = f"http://{admin.host}:{admin.port or settings.server.port}/dashboard"
    if is_endpoint:
        return (f"See: relay notifications list --endpoint {subject} --state failed, or {link}; "
                f"once it is fixed: relay resend --endpoint {subject} --state failed")
    return f"See: relay health, or {link}"


def failing_text(p: dict[str, Any], settings: Settings, all_failing: int) -> str:
    share = 100 * (p["share"] or 0)
    oldest = p["oldest_waiting_s"]
    lines = [
        f"relay on {socket.gethostname()}: endpoint {p['endpoint']} ({p['url_host']}) is failing "
        f"since {p['since']}.",
        f"{p['failing']} of {p['attempted']} deliveries ({share:.1f}%) failed in the last {p['window_hours']:g} h "
        f"(threshold {p['threshold_percent']:g}%): {p['retrying']} retrying, {p['failed']} given up.",
        f"Last error: {p['last_error'] or 'none recorded'} at {p['last_error_at'] or '-'}. "
        f"Oldest waiting delivery: {'-' if oldest is None else duration(int(oldest * 1000))}.",
    ]
    if all_failing > 1:
        lines.append(f"All {all_failing} endpoints are failing: the cause may be on the relay's side "
                     "(its network, DNS or proxy).")
    lines.append(_where(settings, p["endpoint"], True))
    return "\n".join(lines)


def rejecting_text(p: dict[str, Any], settings: Settings) -> str:
    share = 100 * (p["share"] or 0)
    return "\n".join([
        f"relay on {socket.gethostname()}: source {p['source']} is refusing 2Checkout notifications "
        f"since {p['since']}.",
        f"{p['refused']} of {p['requests']} requests ({share:.1f}%) refused in the last "
        f"{p['window_minutes']:g} min; last reason {p['reason']} ({p['channel']}): {p['detail']}.",
        "2Checkout retries a refused notification for 48 h and then drops it: fix the cause (e.g. the "
        "secret key in the config and in the 2Checkout panel) in time and they all arrive.",
        _where(settings, p["source"], False),
    ])


def recovered_text(kind: Kind, subject: str, since_ms: int | None, now_ms: int, detail: str) -> str:
    what = f"endpoint {subject}" if kind == "endpoint_recovered" else f"source {subject}"
    lasted = f" after {duration(now_ms - since_ms)} (since {iso(since_ms)})" if since_ms else ""
    return f"relay on {socket.gethostname()}: {what} recovered{lasted}. {detail}"


async def evaluate(redis: Redis, settings: Settings, now_ms: int) -> list[Notice]:
    """Decide which alerts and recovery messages are due now, and record that they were sent."""
    report = await health_report(redis, settings, now_ms)
    if not report["redis"]["reachable"]:
        return []
    every_ms = max(1, round(settings.alerts.frequency_hours * 3_600_000))
    problems = {(p["kind"], p.get("endpoint") or p.get("source")): p for p in report["problems"]
                if p["kind"] in ("endpoint_failing", "source_rejecting")}
    all_failing = sum(1 for kind, _ in problems if kind == "endpoint_failing")
    if all_failing < len(settings.endpoints):
        all_failing = 0
    notices: list[Notice] = []
    subjects = [("endpoint", name) for name in settings.endpoints] + [("source", name) for name in settings.sources]
    for what, name in subjects:
        subject = f"{'ep' if what == 'endpoint' else 'src'}:{name}"
        problem = problems.get(("endpoint_failing" if what == "endpoint" else "source_rejecting", name))
        if problem is not None:
            since = _since_ms(problem["since"]) or now_ms
            if await _claim(redis, subject, now_ms, every_ms, since):
                text = (failing_text(problem, settings, all_failing) if what == "endpoint"
                        else rejecting_text(problem, settings))
                figures = {key: v for key, v in problem.items() if key not in ("kind", "message", "since",
                                                                             "endpoint", "source")}
                notices.append(Notice(problem["kind"], name, since, now_ms, text, figures))
            else:
                await redis.pexpire(k.alert_open(subject), k.ALERT_OPEN_TTL_MS)
            continue
        # no problem now: the rate limit ends with the problem (frequency_hours spaces repeats while
        # it lasts), so the subject's next incident alerts at once; one MULTI, so both go together
        async with redis.pipeline(transaction=True) as pipe:
            pipe.getdel(k.alert_open(subject))
            pipe.delete(k.alert(subject))
            opened, _ = await pipe.execute()
        if opened is None:
            continue
        since_ms = int(opened)
        if what == "endpoint":
            row = report["endpoints"][name]
            w = row["window"]
            detail = (f"{w['failing']} of {w['attempted']} deliveries failing in the last {w['hours']:g} h "
                      f"(threshold {w['threshold_percent']:g}%); {row['failed']} failed deliveries unresolved.")
            kind: Kind = "endpoint_recovered"
            figures = {"failing": w["failing"], "attempted": w["attempted"], "share": w["share"],
                       "unresolved_failed": row["failed"]}
        else:
            row = report["sources"][name]
            detail = (f"{row['accepted_since_last'] or 0} notifications accepted since the last refusal.")
            kind = "source_recovered"
            figures = {"refused": row["refused"], "requests": row["requests"],
                       "accepted_since_last": row["accepted_since_last"] or 0}
        figures["duration_s"] = (now_ms - since_ms) // 1000
        notices.append(Notice(kind, name, since_ms, now_ms, recovered_text(kind, name, since_ms, now_ms, detail),
                              figures))
    return notices + await _missing_notices(redis, settings, report, now_ms, every_ms)


# -- reconciliation: orders in 2Checkout's list without their IPN (relay/store/reconcile.py) ---------------

def missing_text(p: dict[str, Any], settings: Settings) -> str:
    lines = [f"relay on {socket.gethostname()}: source {p['source']}: {p['count']} order(s) in 2Checkout's order "
             f"list have no IPN in the status they reached (since {p['since']}):"]
    lines += [f"  {r['reference']} {r['status']} (listed so since {r['first_seen']}): {order_link(r['reference'])}"
              for r in p["references"]]
    if p["count"] > len(p["references"]):
        lines.append(f"  … and {p['count'] - len(p['references'])} more: relay reconcile lists them all")
    lines.append("Reissue each notification from the order's page in the 2Checkout control panel; it then "
                 "reaches your endpoints as any IPN and clears itself. Until then your systems do not know of it.")
    lines.append(_where(settings, p["source"], False))
    return "\n".join(lines)


async def _missing_notices(redis: Redis, settings: Settings, report: dict[str, Any], now_ms: int,
                           every_ms: int) -> list[Notice]:
    """``notifications_missing`` per reconciled source, and ``notifications_recovered`` once none is."""
    problems = {p["source"]: p for p in report["problems"] if p["kind"] == "notifications_missing"}
    notices: list[Notice] = []
    for name in reconciled_sources(settings):
        subject, problem = f"rec:{name}", problems.get(name)
        if problem is not None:
            since = _since_ms(problem["since"]) or now_ms
            if await _claim(redis, subject, now_ms, every_ms, since):
                figures = {"count": problem["count"], "references": problem["references"]}
                notices.append(Notice("notifications_missing", name, since, now_ms, missing_text(problem, settings),
                                      figures))
            else:
                await redis.pexpire(k.alert_open(subject), k.ALERT_OPEN_TTL_MS)
            continue
        async with redis.pipeline(transaction=True) as pipe:
            pipe.getdel(k.alert_open(subject))
            pipe.delete(k.alert(subject))
            opened, _ = await pipe.execute()
        if opened is None:
            continue
        since_ms = int(opened)
        text = recovered_text("notifications_recovered", name, since_ms, now_ms,
                              "Every order in 2Checkout's list now has its IPN.")
        notices.append(Notice("notifications_recovered", name, since_ms, now_ms, text,
                              {"count": 0, "duration_s": (now_ms - since_ms) // 1000}))
    return notices


def _since_ms(value: str | None) -> int | None:
    from datetime import datetime

    if not value:
        return None
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


async def _claim(redis: Redis, subject: str, now_ms: int, every_ms: int, since_ms: int) -> bool:
    """Record an alert at ``now_ms`` unless one was recorded less than ``every_ms`` before.

    The age is judged by the job's clock, not by the key's TTL (which only removes it afterwards),
    so the rate limit follows the same clock as the failure window. The open key keeps the incident's
    start from the first alert on, so a repeated alert and the recovery report the same "since".
    """
    key = k.alert(subject)
    async with redis.pipeline(transaction=True) as pipe:
        try:
            await pipe.watch(key)
            last = await pipe.get(key)
            if last is not None and now_ms - int(last) < every_ms:
                return False
            pipe.multi()  # type: ignore[no-untyped-call]  # unannotated in redis-py
            pipe.set(key, now_ms, px=every_ms)
            pipe.set(k.alert_open(subject), since_ms, px=k.ALERT_OPEN_TTL_MS, nx=True)
            pipe.pexpire(k.alert_open(subject), k.ALERT_OPEN_TTL_MS)
            await pipe.execute()
        except WatchError:  # another checker recorded it first
            return False
    return True


async def notify(notices: list[Notice], settings: Settings, session: aiohttp.ClientSession) -> None:
    """Log every notice, then send it to the webhook and by email when those are configured."""
    for notice in notices:
        logger.warning(notice.kind, subject=notice.subject, since=iso(notice.since_ms), **{
            key: v for key, v in notice.figures.items() if isinstance(v, (int, float, str)) or v is None})
        await _post_webhook(notice, settings, session)
        await _send_email(notice, settings)


async def _post_webhook(notice: Notice, settings: Settings, session: aiohttp.ClientSession) -> None:
    url = settings.alert_secrets.webhook_url
    if url is None:
        return
    try:
        async with session.post(url.reveal(), json=notice.payload(),
                                timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT_S)) as resp:
            if resp.status >= 300:
                logger.error("alert_webhook_failed", subject=notice.subject, status=resp.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        logger.error("alert_webhook_failed", subject=notice.subject, error=type(exc).__name__)


async def _send_email(notice: Notice, settings: Settings) -> None:
    if settings.alerts.smtp_host is None:
        return
    try:
        await asyncio.to_thread(_smtp_send, settings, notice)
    except (smtplib.SMTPException, OSError) as exc:
        logger.error("alert_email_failed", subject=notice.subject, error=type(exc).__name__, detail=str(exc)[:200])


def _smtp_send(settings: Settings, notice: Notice) -> None:
    cfg, secrets = settings.alerts, settings.alert_secrets
    assert cfg.smtp_host is not None and cfg.smtp_from is not None
    msg = EmailMessage()
    msg["From"] = cfg.smtp_from
    msg["To"] = ", ".join(cfg.smtp_to)
    msg["Subject"] = notice.subject_line
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="relay.local")
    msg.set_content(notice.text + "\n")
    with smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=SEND_TIMEOUT_S) as smtp:
        if cfg.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
        if secrets.smtp_username is not None:
            password = secrets.smtp_password.reveal() if secrets.smtp_password else ""
            smtp.login(secrets.smtp_username.reveal(), password)
        smtp.send_message(msg)


async def check_alerts(ctx: dict[str, Any]) -> dict[str, int]:
    """Every minute: alert on failing endpoints and refusing sources, and on their recovery."""
    engine: Engine = ctx["engine"]
    settings: Settings = ctx["settings"]
    notices = await evaluate(ctx["relay_redis"], settings, engine.redis_ms())  # the clock health's ages are on
    await notify(notices, settings, ctx["session"])
    return {kind: sum(1 for n in notices if n.kind == kind)
            for kind in ("endpoint_failing", "endpoint_recovered", "source_rejecting", "source_recovered",
                         "notifications_missing", "notifications_recovered")}

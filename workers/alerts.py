"""Failing-endpoint alerts: a cron job compares each endpoint's recent attempt failure rate to a threshold.

Rates come from the per-minute counters complete.lua writes (``relay:ep:{ep}:m:{minute}``). Per
subject (an endpoint, or ``_overall`` for all of them) two keys hold the state, so any number of
workers agree: ``relay:alert:{subject}`` (the ms of the last alert, expiring after ``frequency_hours``)
rate-limits the alert, and ``relay:alert:{subject}:open`` marks an alert that still owes a recovery
message.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Literal

import aiohttp
import structlog
from redis.asyncio import Redis
from redis.exceptions import WatchError

from config.settings import Settings
from relay import constants as k
from relay.store.stats import Counts, minute_counts
from workers.engine import Engine

logger = structlog.get_logger()

OVERALL = "_overall"  # endpoint names start with [a-z0-9], so this never collides with one
SEND_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Notice:
    kind: Literal["failing", "recovered"]
    subject: str
    counts: Counts
    window_hours: float
    threshold_percent: float

    @property
    def label(self) -> str:
        return "all endpoints" if self.subject == OVERALL else f"endpoint {self.subject}"

    @property
    def _is(self) -> str:
        return "are" if self.subject == OVERALL else "is"

    @property
    def percent(self) -> float:
        return 100 * (self.counts.failure_rate or 0.0)

    @property
    def subject_line(self) -> str:
        if self.kind == "failing":
            return f"[relay] {self.label} {self._is} failing ({self.percent:.1f}% of attempts failed)"
        return f"[relay] {self.label} recovered ({self.percent:.1f}% of attempts failed)"

    @property
    def text(self) -> str:
        c = self.counts
        rate = (f"{c.fail} of {c.attempts} delivery attempts ({self.percent:.1f}%) failed in the last "
                f"{self.window_hours:g} h (threshold {self.threshold_percent:g}%)")
        if self.kind == "failing":
            gaveup = f"; {c.gaveup} deliveries given up" if c.gaveup else ""
            return f"relay: {self.label} {self._is} failing: {rate}{gaveup}."
        return f"relay: {self.label} recovered: {rate}."


async def evaluate(redis: Redis, settings: Settings, now_ms: int) -> list[Notice]:
    """Decide which alerts and recovery messages are due now, and record that they were sent."""
    cfg = settings.alerts
    endpoints = list(settings.endpoints)
    counts = await minute_counts(redis, endpoints, now_ms, max(1, round(cfg.window_hours * 60)))
    subjects = dict(counts)
    if len(endpoints) > 1:
        subjects[OVERALL] = sum(counts.values(), Counts())
    notices: list[Notice] = []
    for subject, c in subjects.items():
        rate = c.failure_rate
        if rate is None:
            continue  # no attempt in the window: no evidence either way
        failing = 100 * rate > cfg.threshold_percent
        if failing and c.attempts >= cfg.min_deliveries:
            if await _claim(redis, subject, now_ms, max(1, round(cfg.frequency_hours * 3_600_000))):
                notices.append(Notice("failing", subject, c, cfg.window_hours, cfg.threshold_percent))
        elif not failing and await redis.getdel(k.alert_open(subject)) is not None:
            notices.append(Notice("recovered", subject, c, cfg.window_hours, cfg.threshold_percent))
    return notices


async def _claim(redis: Redis, subject: str, now_ms: int, every_ms: int) -> bool:
    """Record an alert at ``now_ms`` unless one was recorded less than ``every_ms`` before.

    The age is judged by the job's clock, not by the key's TTL (which only removes it afterwards),
    so the rate limit follows the same clock as the failure window.
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
            pipe.set(k.alert_open(subject), now_ms)
            await pipe.execute()
        except WatchError:  # another checker recorded it first
            return False
    return True


async def notify(notices: list[Notice], settings: Settings, session: aiohttp.ClientSession) -> None:
    """Log every notice, then send it to the webhook and by email when those are configured."""
    for notice in notices:
        event = "endpoint_failing" if notice.kind == "failing" else "endpoint_recovered"
        logger.warning(event, subject=notice.subject, attempts=notice.counts.attempts, failed=notice.counts.fail,
                       gaveup=notice.counts.gaveup, failure_percent=round(notice.percent, 1),
                       window_hours=notice.window_hours, threshold_percent=notice.threshold_percent)
        await _post_webhook(notice, settings, session)
        await _send_email(notice, settings)


async def _post_webhook(notice: Notice, settings: Settings, session: aiohttp.ClientSession) -> None:
    url = settings.alert_secrets.webhook_url
    if url is None:
        return
    try:
        async with session.post(url.reveal(), json={"text": notice.text},
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
    """Every minute: alert on endpoints failing above the threshold, and on their recovery."""
    engine: Engine = ctx["engine"]
    settings: Settings = ctx["settings"]
    notices = await evaluate(ctx["relay_redis"], settings, engine.now_ms())
    await notify(notices, settings, ctx["session"])
    return {kind: sum(1 for n in notices if n.kind == kind) for kind in ("failing", "recovered")}

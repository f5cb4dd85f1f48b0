"""One alert or recovery message (``Notice``), and sending it: the log, a chat webhook, email."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import aiohttp
import structlog

from config.settings import Settings
from relay.timefmt import iso_seconds

logger = structlog.get_logger()

SEND_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Notice:
    kind: str  # an alert kind: a problem kind, or its recovery (docs/operations.md, "Alerts")
    subject: str  # the endpoint or source name, "fanout" for the fan-out's backlog, "" for the relay as a whole
    since_ms: int | None
    now_ms: int
    text: str
    figures: dict[str, Any] = field(default_factory=dict)
    # the payload field naming the subject: "endpoint", "source", "queue" or None
    subject_field: str | None = None
    title: str = ""  # the email subject

    @property
    def is_endpoint(self) -> bool:
        return self.subject_field == "endpoint"

    @property
    def subject_line(self) -> str:
        return f"[relay] {self.title}"

    def payload(self) -> dict[str, Any]:
        """The webhook JSON: Slack-compatible ``text`` and the same facts as fields."""
        named = {self.subject_field: self.subject} if self.subject_field else {}
        return {
            "text": self.text,
            "kind": self.kind,
            **named,
            "since": iso_seconds(self.since_ms),
            "at": iso_seconds(self.now_ms),
            "host": socket.gethostname(),
            **self.figures,
        }


async def notify(notices: list[Notice], settings: Settings, session: aiohttp.ClientSession) -> None:
    """Log every notice, then send it to the webhook and by email when those are configured."""
    for notice in notices:
        logger.warning(
            notice.kind,
            subject=notice.subject,
            since=iso_seconds(notice.since_ms),
            **{key: v for key, v in notice.figures.items() if isinstance(v, (int, float, str)) or v is None},
        )
        await _post_webhook(notice, settings, session)
        await _send_email(notice, settings)


async def _post_webhook(notice: Notice, settings: Settings, session: aiohttp.ClientSession) -> None:
    url = settings.alert_secrets.webhook_url
    if url is None:
        return
    try:
        async with session.post(
            url.reveal(), json=notice.payload(), timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT_S)
        ) as resp:
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

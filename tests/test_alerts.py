"""Failing-endpoint alerts: a real SMTP server (aiosmtpd), a real webhook sink, a controlled clock."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from redis.asyncio import Redis
from structlog.testing import capture_logs

from config.settings import ConfigError, Settings, load_settings
from relay import constants as k
from relay.store.connection import clock_ms
from tests.support import TEST_ENV, Sink, free_port, write_config
from workers import alerts, jobs
from workers.settings import WorkerSettings

HOUR = 3_600_000
NOW = int(time.time() * 1000)
EPS = [{"name": "a", "url": "http://127.0.0.1:9/hook"}, {"name": "b", "url": "http://127.0.0.1:9/other"}]


@dataclass
class Inbox:
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[Envelope] = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        msg = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        return "250 OK"

    def authenticate(
        self, server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.logins.append((auth_data.login, auth_data.password))
        ok = (auth_data.login, auth_data.password) == (b"relay", b"s3cret")
        return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=port, authenticator=inbox.authenticate, auth_require_tls=False
    )
    controller.start()
    yield inbox, port
    controller.stop()


@pytest.fixture(autouse=True)
def uncached_logs() -> Iterator[None]:
    # capture_logs cannot see a logger that a configured (caching) structlog already bound
    saved = structlog.get_config()
    structlog.reset_defaults()
    yield
    structlog.configure(**saved)


def alert_config(tmp_path: Path, port: int, **alerts_kw: Any) -> Path:
    alerts_kw.setdefault("smtp_port", port)
    cfg = {
        "threshold_percent": 25,
        "window_hours": 4,
        "frequency_hours": 4,
        "min_deliveries": 10,
        "webhook_url_env": "ALERT_WEBHOOK_URL",
        "smtp_host": "127.0.0.1",
        "smtp_from": "relay@example.com",
        "smtp_to": ["ops@example.com", "dev@example.com"],
        "smtp_starttls": False,
        "smtp_username_env": "SMTP_USER",
        "smtp_password_env": "SMTP_PASS",
        **alerts_kw,
    }
    extra = "[alerts]\n" + "".join(f"{key} = {json.dumps(v)}\n" for key, v in cfg.items())
    return write_config(tmp_path / "relay.toml", endpoints=EPS, extra=extra)


@pytest.fixture
async def setup(
    tmp_path: Path, redis_server: Any, smtp: tuple[Inbox, int], sink: Callable[..., Any]
) -> AsyncIterator[Callable[..., Any]]:
    """Settings wired to the SMTP server and a webhook sink, and a client session for the webhook."""
    session = aiohttp.ClientSession()

    async def make(
        webhook: Sink | None = None, env: dict[str, str] | None = None, **alerts_kw: Any
    ) -> tuple[Settings, Sink, aiohttp.ClientSession]:
        hook = webhook or await sink([200])
        path = alert_config(tmp_path, smtp[1], **alerts_kw)
        environ = {
            **TEST_ENV,
            "REDIS_URL": redis_server.url,
            "ALERT_WEBHOOK_URL": hook.url,
            "SMTP_USER": "relay",
            "SMTP_PASS": "s3cret",
            **(env or {}),
        }
        return load_settings(path, environ), hook, session

    yield make
    await session.close()


_n = iter(range(10**9))


async def add(
    redis: Redis, ep: str, at_ms: int, ok: int = 0, fail: int = 0, retrying: int = 0, last: str = "HTTP 503"
) -> None:
    """Deliveries of ``ep`` whose latest attempt, at ``at_ms``, delivered / gave up / will be retried."""
    for state, n in (("delivered", ok), ("failed", fail), ("retrying", retrying)):
        if n:
            nids = [f"n{next(_n)}" for _ in range(n)]
            await redis.zadd(k.ep_state(ep, state), dict.fromkeys(nids, at_ms))
            if state != "delivered":
                await redis.hset(k.delivery(nids[-1], ep), mapping={"last": last, "updated": at_ms})
            for nid in nids:  # received when they last changed
                await redis.hset(k.notification(nid), "recv", at_ms)
                await redis.zadd(k.IDX_ALL, {nid: at_ms})


async def run(redis: Redis, settings: Settings, session: aiohttp.ClientSession, now_ms: int) -> list[alerts.Notice]:
    notices = await alerts.evaluate(redis, settings, now_ms)
    await alerts.notify(notices, settings, session)
    return notices


def texts(hook: Sink) -> list[str]:
    return [json.loads(r.body)["text"] for r in hook.received]


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, UTC).isoformat().replace("+00:00", "Z")


async def test_alert_once_per_frequency_then_recovery(
    redis: Redis, setup: Callable[..., Any], smtp: tuple[Inbox, int]
) -> None:
    settings, hook, session = await setup()
    inbox = smtp[0]
    host = socket.gethostname()
    start = NOW - 10 * 60_000
    await add(redis, "a", start, ok=6, retrying=4)
    await add(redis, "b", start, ok=20)

    with capture_logs() as logs:
        notices = await run(redis, settings, session, NOW)
    assert [(n.kind, n.subject) for n in notices] == [("endpoint_failing", "a")]  # only a: no "all endpoints"
    text = "\n".join(
        [
            f"relay on {host}: endpoint a (127.0.0.1:9) is failing since {iso(start)}.",
            "4 of 10 deliveries (40.0%) failed in the last 4 h (threshold 25%): 4 retrying, 0 given up.",
            f"Last error: HTTP 503 at {iso(start)}. Oldest waiting delivery: 10 min since receipt.",
            # still retrying: a resend of failed ones would find nothing, relay retry sends them now
            "Deliveries are retrying: once a is fixed, send them now with relay retry --endpoint a, "
            "or Retry now at http://127.0.0.1:8080/dashboard/endpoints/a/retry.",
        ]
    )
    assert texts(hook) == [text]
    payload = json.loads(hook.received[0].body)
    assert {
        key: payload[key]
        for key in (
            "kind",
            "endpoint",
            "since",
            "failing",
            "attempted",
            "share",
            "host",
            "url_host",
            "last_error",
            "threshold_percent",
        )
    } == {
        "kind": "endpoint_failing",
        "endpoint": "a",
        "since": iso(start),
        "failing": 4,
        "attempted": 10,
        "share": 0.4,
        "host": host,
        "url_host": "127.0.0.1:9",
        "last_error": "HTTP 503",
        "threshold_percent": 25,
    }
    assert hook.received[0].headers["Content-Type"] == "application/json"
    assert len(inbox.messages) == 1
    msg = inbox.messages[0]
    assert msg["Subject"] == "[relay] endpoint a is failing (4 of 10 deliveries, HTTP 503)"
    assert msg["From"] == "relay@example.com"
    assert inbox.envelopes[0].rcpt_tos == ["ops@example.com", "dev@example.com"]
    assert msg.get_content().replace("\r\n", "\n").strip() == text
    assert inbox.logins == [(b"relay", b"s3cret")]
    (event,) = [e for e in logs if e["event"] == "endpoint_failing"]
    assert (event["subject"], event["failing"], event["attempted"]) == ("a", 4, 10)
    # both alert keys are bounded
    assert 0 < await redis.pttl(k.alert("ep:a")) <= 4 * HOUR
    assert 0 < await redis.pttl(k.alert_open("ep:a")) <= k.ALERT_OPEN_TTL_MS

    # still failing a minute later, and until frequency_hours have passed: no repeat
    assert await run(redis, settings, session, NOW + 60_000) == []
    await add(redis, "a", NOW + 4 * HOUR - 2 * 60_000, retrying=20)
    await add(redis, "b", NOW + 4 * HOUR - 2 * 60_000, ok=100)
    assert await run(redis, settings, session, NOW + 4 * HOUR - 60_000) == []
    assert len(hook.received) == 1 and len(inbox.messages) == 1

    # past frequency_hours and still failing: a reminder, with the same "since"
    notices = await run(redis, settings, session, NOW + 4 * HOUR + 60_000)
    assert [(n.kind, n.subject) for n in notices] == [("endpoint_failing", "a")]
    assert json.loads(hook.received[1].body)["since"] == iso(start)
    assert len(hook.received) == 2 and len(inbox.messages) == 2

    # the share falls below the threshold: one recovery message with the incident's length, then quiet
    await add(redis, "a", NOW + 4 * HOUR + 90_000, ok=100)
    with capture_logs() as logs:
        notices = await run(redis, settings, session, NOW + 4 * HOUR + 2 * 60_000)
    assert [(n.kind, n.subject) for n in notices] == [("endpoint_recovered", "a")]
    assert texts(hook)[-1] == (
        f"relay on {host}: endpoint a recovered after 4 h 12 min (since {iso(start)}). "
        "20 of 120 deliveries failing in the last 4 h (threshold 25%); 0 failed deliveries "
        "unresolved."
    )
    recovered = json.loads(hook.received[-1].body)
    assert (recovered["kind"], recovered["endpoint"], recovered["duration_s"]) == (
        "endpoint_recovered",
        "a",
        (4 * HOUR + 12 * 60_000) // 1000,
    )
    assert inbox.messages[-1]["Subject"] == "[relay] endpoint a recovered"
    assert [e["event"] for e in logs] == ["endpoint_recovered"]
    assert await run(redis, settings, session, NOW + 4 * HOUR + 3 * 60_000) == []
    assert len(hook.received) == 3


async def test_a_new_incident_after_a_recovery_alerts_at_once(redis: Redis, setup: Callable[..., Any]) -> None:
    """frequency_hours limits repeats *while a problem lasts*: once its recovery was sent, the next
    incident of the same endpoint is news and alerts at once (and owes its own recovery)."""
    settings, hook, session = await setup()
    await add(redis, "a", NOW - 60_000, ok=6, retrying=4)
    await add(redis, "b", NOW - 60_000, ok=20)
    assert [n.kind for n in await run(redis, settings, session, NOW)] == ["endpoint_failing"]
    await add(redis, "a", NOW + 30_000, ok=30)  # 4 of 40: recovered
    assert [n.kind for n in await run(redis, settings, session, NOW + 60_000)] == ["endpoint_recovered"]
    await add(redis, "a", NOW + 90_000, retrying=30)  # 34 of 70, an hour before frequency_hours pass
    notices = await run(redis, settings, session, NOW + 2 * 60_000)
    assert [(n.kind, n.subject) for n in notices] == [("endpoint_failing", "a")]
    assert [json.loads(r.body)["kind"] for r in hook.received] == [
        "endpoint_failing",
        "endpoint_recovered",
        "endpoint_failing",
    ]
    assert await redis.get(k.alert_open("ep:a")) is not None  # its recovery message is owed again


async def test_a_refusing_source_does_not_recover_by_falling_quiet(redis: Redis, setup: Callable[..., Any]) -> None:
    """Only accepted notifications end a source_rejecting incident: when 2Checkout's retries thin out
    and the refusals age out of the 15 min window, the key is still wrong and nothing recovered."""
    from relay.store.ingest import Store
    from relay.store.stats import health_report

    settings, hook, session = await setup()
    store = Store(redis, settings.delivery.retention_ms)
    for _ in range(10):  # stamped on Redis's clock, as the ingress stamps them
        await store.refused("default", "ipn", "signature_mismatch", "tried current (fingerprint 3f9a02c1)")
    now = await clock_ms(redis)
    assert [n.kind for n in await run(redis, settings, session, now)] == ["source_rejecting"]
    later = now + 20 * 60_000  # the refusals are out of the window; none accepted since
    assert await run(redis, settings, session, later) == []
    await redis.zadd(k.WORKERS, {"w:1": later})  # a live worker: only the source is wrong
    report = await health_report(redis, settings, later)
    assert report["status"] == "degraded" and [p["kind"] for p in report["problems"]] == ["source_rejecting"]
    # the line says why a source with no refusal in the window is still refusing
    last_at = int(await redis.hget(k.source_lastrej("default"), "at"))
    assert now - 5_000 <= last_at <= now  # the last refusal's time, on Redis's clock
    line = (
        "0 of 0 requests (-) refused in the last 15 min; 0 accepted since the last refusal at "
        f"{iso(last_at)} (5 in a row end it); last reason signature_mismatch"
    )
    assert line in report["problems"][0]["message"]
    assert [json.loads(r.body)["kind"] for r in hook.received] == ["source_rejecting"]
    # the opposite: 5 notifications stored after the last refusal (as ingest indexes them) end it
    await redis.zadd(k.idx_source("default"), {f"ipn_{i:024x}": later + i for i in range(5)})
    notices = await run(redis, settings, session, later + 60_000)
    assert [(n.kind, n.figures["accepted_since_last"]) for n in notices] == [("source_recovered", 5)]


async def test_min_deliveries_and_threshold_boundaries(redis: Redis, setup: Callable[..., Any]) -> None:
    settings, hook, session = await setup()
    await add(redis, "a", NOW, retrying=9)
    assert await run(redis, settings, session, NOW) == []  # 9 retrying: fewer than min_deliveries
    await add(redis, "a", NOW, ok=27)
    assert await run(redis, settings, session, NOW) == []  # 9 of 36 is exactly 25%: not more
    await add(redis, "a", NOW, retrying=1)
    notices = await run(redis, settings, session, NOW)
    assert [(n.kind, n.subject) for n in notices] == [("endpoint_failing", "a")]
    assert "10 of 37 deliveries (27.0%)" in texts(hook)[0]
    assert "All 2 endpoints" not in texts(hook)[0]


async def test_all_endpoints_failing_is_said_only_when_every_one_is(redis: Redis, setup: Callable[..., Any]) -> None:
    settings, hook, session = await setup()
    await add(redis, "a", NOW, fail=10)
    await add(redis, "b", NOW, fail=10)
    notices = await run(redis, settings, session, NOW)
    assert [(n.kind, n.subject) for n in notices] == [("endpoint_failing", "a"), ("endpoint_failing", "b")]
    assert all("All 2 endpoints are failing" in t for t in texts(hook))


async def test_per_endpoint_threshold_override(
    redis: Redis, setup: Callable[..., Any], tmp_path: Path, smtp: tuple[Inbox, int], redis_server: Any
) -> None:
    settings, hook, session = await setup()
    path = alert_config(tmp_path, smtp[1])
    text = path.read_text().replace('name = "a"', 'name = "a"\nalert_threshold_percent = 50')
    path.write_text(text)
    strict = load_settings(
        path,
        {
            **TEST_ENV,
            "REDIS_URL": redis_server.url,
            "ALERT_WEBHOOK_URL": hook.url,
            "SMTP_USER": "relay",
            "SMTP_PASS": "s3cret",
        },
    )
    await add(redis, "a", NOW, retrying=4, ok=6)
    assert await run(redis, strict, session, NOW) == []  # 40 % is under a's own 50 %
    notices = await run(redis, settings, session, NOW)  # and over the [alerts] 25 %
    assert [(n.kind, n.subject) for n in notices] == [("endpoint_failing", "a")]


async def test_failures_outside_the_window_do_not_count(redis: Redis, setup: Callable[..., Any]) -> None:
    settings, hook, session = await setup(window_hours=1)
    await add(redis, "a", NOW - 61 * 60_000, fail=50)
    await add(redis, "a", NOW - 59 * 60_000, ok=10)
    assert await run(redis, settings, session, NOW) == []
    assert hook.received == []


async def test_broken_channels_are_logged_and_do_not_stop_the_job(
    redis: Redis, setup: Callable[..., Any], sink: Callable[..., Any]
) -> None:
    broken_hook = await sink([500])
    settings, _, session = await setup(webhook=broken_hook, smtp_port=free_port())
    await add(redis, "a", NOW, fail=10)
    with capture_logs() as logs:
        notices = await run(redis, settings, session, NOW)
    assert [n.subject for n in notices] == ["a"]
    events = {e["event"]: e for e in logs}
    assert events["alert_webhook_failed"]["status"] == 500
    assert events["alert_email_failed"]["error"] == "ConnectionRefusedError"
    assert "endpoint_failing" in events


async def test_starttls_is_required_when_configured(
    redis: Redis, setup: Callable[..., Any], smtp: tuple[Inbox, int]
) -> None:
    settings, _, session = await setup(smtp_starttls=True)
    await add(redis, "a", NOW, fail=10)
    with capture_logs() as logs:
        await run(redis, settings, session, NOW)
    failed = [e for e in logs if e["event"] == "alert_email_failed"]
    assert failed and failed[0]["error"] == "SMTPNotSupportedError"
    assert smtp[0].messages == [] and smtp[0].logins == []  # no credentials over a plain connection


async def test_cron_job_uses_the_worker_clock(redis: Redis, setup: Callable[..., Any]) -> None:
    settings, hook, _ = await setup()
    await add(redis, "b", NOW + 2 * HOUR, fail=12)
    ctx: dict[str, Any] = {"settings": settings, "engine_options": {"clock": lambda: (NOW + 2 * HOUR) / 1000}}
    await jobs.startup(ctx)
    try:
        assert await alerts.check_alerts(ctx) == {
            "endpoint_failing": 1,
            "endpoint_recovered": 0,
            "source_rejecting": 0,
            "source_recovered": 0,
            "source_silent": 0,
            "backlog_too_old": 0,
            "notifications_missing": 0,
            "backlog_recovered": 0,
            "notifications_recovered": 0,
            "endpoint_paused": 0,
            "endpoint_resumed": 0,
            "reconcile_failing": 0,
            "reconcile_recovered": 0,
        }
    finally:
        await jobs.shutdown(ctx)
    assert len(hook.received) == 1
    crons = {c.name: c for c in WorkerSettings.cron_jobs}
    assert crons["cron:check_alerts"].unique is True


def test_alerts_config_is_validated(tmp_path: Path) -> None:
    path = write_config(tmp_path / "relay.toml", extra="[alerts]\nwindow_hours = 25\n")
    with pytest.raises(ConfigError, match="alerts.window_hours = 25: must be less than or equal to 24"):
        load_settings(path, TEST_ENV)
    path = write_config(tmp_path / "relay.toml", extra='[alerts]\nsmtp_host = "127.0.0.1"\n')
    with pytest.raises(ConfigError, match="smtp_host needs smtp_from and smtp_to"):
        load_settings(path, TEST_ENV)

    path = write_config(tmp_path / "relay.toml", extra='[alerts]\nwebhook_url_env = "HOOK"\n')
    with pytest.raises(ConfigError, match="alerts.webhook_url_env = 'HOOK': environment variable HOOK is not set"):
        load_settings(path, TEST_ENV)
    with pytest.raises(ConfigError, match="is not an http"):
        load_settings(path, {**TEST_ENV, "HOOK": "not a url"})
    settings = load_settings(path, TEST_ENV, require_secrets=False)
    assert settings.alert_secrets.webhook_url is None
    assert (settings.alerts.threshold_percent, settings.alerts.min_deliveries) == (25, 10)


async def test_backlog_too_old_alerts_and_recovers(redis: Redis, setup: Callable[..., Any]) -> None:
    settings, hook, session = await setup()
    await redis.zadd(k.WORKERS, {"w:1": NOW})
    await redis.zadd(k.ep_state("b", "pending"), {"p1": NOW - 400_000})
    notices = await run(redis, settings, session, NOW)
    assert [(n.kind, n.subject) for n in notices] == [("backlog_too_old", "b")]
    payload = json.loads(hook.received[0].body)
    assert (payload["endpoint"], payload["oldest_age_s"], payload["limit_s"]) == ("b", 400.0, 300)
    assert "endpoint b: a delivery has waited 400 s to be attempted (limit 300 s)" in payload["text"]
    assert await run(redis, settings, session, NOW + 60_000) == []  # once per frequency_hours
    await redis.zrem(k.ep_state("b", "pending"), "p1")
    notices = await run(redis, settings, session, NOW + 120_000)
    assert [(n.kind, n.subject, n.figures["duration_s"]) for n in notices] == [("backlog_recovered", "b", 520)]


async def test_a_paused_endpoint_keeps_its_incident_and_resuming_continues_it(
    redis: Redis, setup: Callable[..., Any]
) -> None:
    settings, hook, session = await setup()
    start = NOW - 60_000
    await add(redis, "a", start, retrying=10)
    assert [n.kind for n in await run(redis, settings, session, NOW)] == ["endpoint_failing"]
    # paused: its retrying deliveries wait as paused, so nothing is failing, and nothing is announced
    await redis.hset(k.PAUSED, "a", json.dumps({"at": NOW + 1_000, "by": "cli (ops@host)"}))
    moved = await redis.zrange(k.ep_state("a", "retrying"), 0, -1, withscores=True)
    await redis.zrem(k.ep_state("a", "retrying"), *[nid for nid, _ in moved])
    await redis.zadd(k.ep_state("a", "paused"), dict(moved))
    assert await run(redis, settings, session, NOW + 60_000) == []
    assert await redis.get(k.alert_open("ep:a")) is not None
    # resumed and still failing: the same incident, its since unchanged, no new alert yet
    await redis.hdel(k.PAUSED, "a")
    await redis.zrem(k.ep_state("a", "paused"), *[nid for nid, _ in moved])
    await redis.zadd(k.ep_state("a", "retrying"), dict(moved))
    assert await run(redis, settings, session, NOW + 120_000) == []
    await add(redis, "a", NOW + 130_000, ok=100)  # recovered for real: the recovery spans the pause
    (notice,) = await run(redis, settings, session, NOW + 180_000)
    assert (notice.kind, notice.since_ms) == ("endpoint_recovered", start // 1000 * 1000)
    assert [json.loads(r.body)["kind"] for r in hook.received] == ["endpoint_failing", "endpoint_recovered"]


def test_the_host_record_of_a_redis_outage(tmp_path: Path) -> None:
    """Once per frequency per host (a locked file shared by the host's processes); the recovery is owed
    only when the alert was sent; a directory that is not this user's own is not trusted."""
    from relay.alerting.watch import HostMark

    first, second = HostMark("redis://x:1/0"), HostMark("redis://x:1/0")  # two processes, one host
    for mark in (first, second):
        mark.path = tmp_path / "own" / first.path.name
    assert first.claim(1000.0, 990.0, 3600) == 990.0
    assert second.claim(1010.0, 1005.0, 3600) is None  # sent by the other process already
    assert second.claim(1000.0 + 3600, 1005.0, 3600) == 990.0  # a reminder, same outage start
    assert second.end() == 990.0 and first.end() is None  # one recovery message

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)  # writable by others: not trusted, so the record is the process's own
    mark = HostMark("redis://x:1/0")
    mark.path = shared / mark.path.name
    with capture_logs() as logs:
        assert mark.claim(1000.0, 990.0, 3600) == 990.0
        assert mark.claim(1010.0, 990.0, 3600) is None
    assert not mark.path.exists() and logs[0]["event"] == "alert_host_record_unavailable"
    assert mark.end() == 990.0


async def test_an_endpoint_paused_too_long_alerts_and_its_resume_is_announced(
    redis: Redis, setup: Callable[..., Any]
) -> None:
    # before, endpoint_paused was a health problem only: a pause forgotten for days alerted nobody
    settings, hook, session = await setup()
    await redis.zadd(k.WORKERS, {"w:1": NOW})
    assert settings.health.max_pause_hours == 24
    await redis.hset(k.PAUSED, "a", json.dumps({"at": NOW - 23 * HOUR, "by": "cli (ops@host)"}))
    assert await run(redis, settings, session, NOW) == []  # paused within the limit: nothing to say
    later = NOW + 2 * HOUR
    await redis.zadd(k.WORKERS, {"w:1": later})
    (notice,) = await run(redis, settings, session, later)
    assert (notice.kind, notice.subject) == ("endpoint_paused", "a")
    assert notice.subject_line == "[relay] endpoint a has been paused for 25.0 h"
    assert "relay endpoints resume a" in notice.text and "by cli (ops@host)" in notice.text
    assert await run(redis, settings, session, later + 60_000) == []  # once per frequency_hours
    await redis.hdel(k.PAUSED, "a")
    (notice,) = await run(redis, settings, session, later + 120_000)
    assert (notice.kind, notice.subject) == ("endpoint_resumed", "a") and "It was resumed." in notice.text
    assert [json.loads(r.body)["kind"] for r in hook.received] == ["endpoint_paused", "endpoint_resumed"]

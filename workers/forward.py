"""Building the forwarded request and classifying the endpoint's answer."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
from dataclasses import dataclass
from urllib.parse import parse_qsl

from config.settings import Endpoint
from relay import __version__, events, protocol
from relay import constants as k

USER_AGENT = f"2checkout-relay/{__version__}"
RETRY_STATUSES = frozenset({408, 425, 429})


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__
class Claimed:
    """One delivery handed to this worker by claim.lua (read-only by convention)."""

    nid: str
    attempt: int
    body: bytes
    content_type: str
    source: str
    channel: str
    received_ms: int
    resend_of: str
    flag: str = ""
    paused_ms: int = 0
    # claims of it given back unsent (workers/attempt.py not_sent): their numbers are spent, but they
    # were no attempt at the endpoint, so the retry schedule does not count them
    unsent: int = 0
    # local monotonic time until which its lease is surely held: the claim's call left this process
    # before Redis started the lease, so the lease lasts at least this long (workers/attempt.py)
    held_until: float = math.inf
    # why ``body`` is not the notification's (its stored body did not decompress): build() raises it,
    # so this one delivery fails, visibly, and no other of its claim or step call with it
    unreadable: str = ""


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks v1 signature: base64 HMAC-SHA256 of ``id.timestamp.body`` with the decoded key."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def as_json(item: Claimed) -> bytes:
    """``format = "json"``: the parsed fields, arrays (``NAME[]`` or repeated keys) as lists."""
    fields: dict[str, str | list[str]] = {}
    for key, value in parse_qsl(item.body.decode("utf-8"), keep_blank_values=True):
        if key.endswith("[]"):
            existing = fields.setdefault(key[:-2], [])
            if isinstance(existing, list):
                existing.append(value)
        elif key in fields:
            prev = fields[key]
            fields[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            fields[key] = value
    doc = {
        "id": item.nid,
        "channel": item.channel,
        "source": item.source,
        "received_at": item.received_ms,
        "resend_of": item.resend_of or None,
        "fields": fields,
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def as_event(item: Claimed) -> bytes:
    """``format = "event"``: the typed event document (relay/events/, relay/schema/event.json)."""
    # the ingress stored only bodies this parser accepted, so it accepts them again here
    fields = protocol.parse_form(item.body)
    return events.encode(
        events.build(
            nid=item.nid,
            source=item.source,
            channel=item.channel,
            received_ms=item.received_ms,
            fields=fields,
            resend_of=item.resend_of,
        )
    )


def configured_headers(endpoint: Endpoint) -> dict[str, str]:
    """The endpoint's own ``headers``, revealed: the same for every attempt, so built once per endpoint."""
    return {name: value.reveal() for name, value in endpoint.headers.items()}


def build(
    endpoint: Endpoint, item: Claimed, now_s: int, configured: dict[str, str] | None = None
) -> tuple[bytes, dict[str, str]]:
    """The body and headers for one attempt: the original bytes, or JSON (``json``, ``event``), signed as sent.

    ``configured``: ``configured_headers(endpoint)``, when the caller keeps it per endpoint."""
    # a resend is a notification of its own (X~r1), so it has a webhook-id of its own: a receiver that
    # drops duplicates by webhook-id, as Standard Webhooks advises, must process a resend (it is sent
    # because something was lost), while every retry of the resend keeps the resend's id
    if item.unreadable:
        raise ValueError(item.unreadable)
    wid = k.webhook_id(item.nid, endpoint.name)
    if endpoint.format == "json":
        body, ctype = as_json(item), "application/json"
    elif endpoint.format == "event":
        body, ctype = as_event(item), "application/json"
    else:
        body, ctype = item.body, item.content_type or "application/x-www-form-urlencoded"
    headers = {
        "Content-Type": ctype,
        "User-Agent": USER_AGENT,
        "webhook-id": wid,
        "webhook-timestamp": str(now_s),
        "Relay-Notification-Id": item.nid,
        "Relay-Channel": item.channel,
        "Relay-Source": item.source,
        "Relay-Attempt": str(item.attempt),
        "Relay-Resend": "true" if item.resend_of else "false",
    }
    if item.resend_of:
        headers["Relay-Resend-Of"] = item.resend_of
    if item.flag:
        headers["Relay-Flags"] = item.flag
    if endpoint.signing_secret is not None:
        headers["webhook-signature"] = sign(endpoint.signing_secret.reveal(), wid, now_s, body)
    # the endpoint's own headers last: they may override the defaults above (a User-Agent, say)
    headers.update(configured_headers(endpoint) if configured is None else configured)
    return body, headers


def classify(status: int, endpoint: Endpoint) -> str:
    """'delivered', 'retry' or 'failed' for an HTTP status."""
    if 200 <= status < 300:
        return "delivered"
    if status >= 500 or status in RETRY_STATUSES or status in endpoint.retry_4xx:
        return "retry"
    return "failed"


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from datetime import UTC, datetime
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())

"""One notification in full, as the admin API, ``relay notifications show`` and the dashboard show it.

A delivery is said in the product's words, never as its Redis hash: the fields below and nothing
else (the hash's bookkeeping, ``rec:<n>``, ``lease``, ``mode``, ``seq``, ``paused_from``, stays
inside), every time as ISO 8601 UTC, and who cancelled it or paused its endpoint. The OpenAPI
document (``relay/admin/openapi.py``) lists the same fields, and ``tests/test_api_schema.py`` checks
that an answer never carries one it does not.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis

from relay import constants as k
from relay import protocol
from relay.store import body as stored_body
from relay.store.queries import NotFound, check_id, load_rows
from relay.timefmt import iso_millis

# field: what it is (the OpenAPI document's descriptions are these)
DELIVERY_FIELDS: dict[str, str] = {
    "state": "pending, in_flight, retrying, paused, delivered, failed, skipped or cancelled",
    "attempts": "attempts made so far",
    "last": "the last attempt's result: HTTP <status>, or an error such as timeout or connect_error",
    "reason": "why it was skipped (an endpoint filter), or null",
    "created_at": "when the fan-out routed it to the endpoint",
    "updated_at": "its last change",
    "next_at": "when the next attempt is due (retrying only)",
    "delivered_at": "when an attempt succeeded",
    "cancelled_at": "when it was cancelled",
    "cancelled_by": "who cancelled it: cli (user@host), api (address), dashboard (address), or endpoint removed",
    "paused_since": "paused: since when its endpoint is paused",
    "paused_by": "paused: who paused its endpoint",
    "resolved_by": "failed: the resend whose delivery resolved it",
    "resolved_at": "when that resend was delivered",
    "attempt_log": "every attempt, oldest first",
}
ATTEMPT_FIELDS: dict[str, str] = {
    "n": "the attempt's number, 1 first",
    "at": "when it started",
    "ms": "how long it took, in milliseconds",
    "outcome": "delivered, retry or failed",
    "status": "the HTTP status, or null",
    "error": "timeout, connect_error, … or null",
    "message": "what went wrong, in words, or null",
    "response": "the start of the endpoint's answer (at most 512 bytes)",
    "next": "retry: when the next attempt is due",
    "resend": "whether this delivery is a resend's",
}
# what a field left out of a compact record was (the rest were null)
_ATTEMPT_DEFAULTS: dict[str, Any] = {"response": "", "resend": False}
_TIMES = {
    "created_at": "created",
    "updated_at": "updated",
    "delivered_at": "delivered_at",
    "cancelled_at": "cancelled_at",
    "resolved_at": "resolved_at",
}
_TEXTS = ("last", "reason", "cancelled_by", "resolved_by")


def delivery_record(d: Mapping[str, str], attempts: list[bytes], pause: Mapping[str, Any] | None) -> dict[str, Any]:
    """The documented delivery record from its Redis hash, its attempt list and its endpoint's pause."""
    state = d.get("state", "")
    out: dict[str, Any] = {"state": state, "attempts": int(d["attempts"]) if d.get("attempts", "").isdigit() else 0}
    for name in _TEXTS:
        out[name] = d.get(name) or None
    for name, stored in _TIMES.items():
        out[name] = iso_millis(d.get(stored))
    out["next_at"] = iso_millis(d.get("next")) if state == "retrying" else None
    paused = state == "paused" and pause is not None
    out["paused_since"] = iso_millis(pause.get("at")) if paused and pause else None
    out["paused_by"] = (str(pause.get("by") or "") or None) if paused and pause else None
    out["attempt_log"] = [_attempt(a) for a in attempts]
    return {name: out[name] for name in DELIVERY_FIELDS}


def attempt_record(raw: bytes) -> dict[str, Any]:
    """One stored attempt record with every field of ATTEMPT_FIELDS, as stored (times in ms): workers
    leave out the null, false and empty ones (workers/attempt.py ``compact``), older ones wrote them all."""
    try:
        record = json.loads(raw)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        record = {"message": "unreadable attempt record: " + raw.decode("utf-8", "replace")[:200]}
    return {name: record.get(name, _ATTEMPT_DEFAULTS.get(name)) for name in ATTEMPT_FIELDS}


def _attempt(raw: bytes) -> dict[str, Any]:
    out = attempt_record(raw)
    for name in ("at", "next"):
        out[name] = iso_millis(out[name]) if isinstance(out[name], int) else None
    out["resend"] = bool(out["resend"])
    return out


def _pauses(raw: Mapping[bytes, bytes]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, value in raw.items():
        try:
            doc = json.loads(value)
        except ValueError:
            doc = None
        out[name.decode()] = doc if isinstance(doc, dict) else {}
    return out


def _body(plain: bytes | None, packed: bytes | None, own: bytes | None, raw: bytes | None) -> tuple[bytes, str | None]:
    """The original body (relay/store/body.py's shapes), or b"" and why it cannot be shown: its own key
    (relay:b) can be parted from the notification (an evicting maxmemory-policy, a hand edit, bit rot),
    and an empty body would look like what was received."""
    if plain is None and not packed and own is None:
        return b"", "the stored body is gone (evicted or deleted apart from its notification)"
    try:
        return stored_body.stored(plain, packed, own, raw), None
    except zlib.error as exc:
        return b"", f"the stored body does not decompress ({exc})"


async def detail(redis: Redis, nid: str) -> dict[str, Any]:
    """Everything stored about one notification; raises NotFound.

    Long on purpose: the document is one flat literal of its documented fields (docs/api.md), read
    best in one piece beside the two reads it is built from.
    """
    check_id(nid)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(k.notification(nid))
        pipe.get(k.body(nid))
        raw, packed = await pipe.execute()
    if not raw:
        raise NotFound(f"no notification {nid!r} (never received, or removed after the retention period)")
    n = {key.decode(): value for key, value in raw.items()}
    body, body_error = _body(
        n.pop(stored_body.PLAIN, None), n.pop(stored_body.PACKED, None), packed, n.pop(stored_body.RAW, None)
    )
    f = {key: value.decode("utf-8", "replace") for key, value in n.items()}
    eps = [ep for ep in f.get("eps", "").split(",") if ep]
    async with redis.pipeline(transaction=False) as pipe:
        for ep in eps:
            pipe.hgetall(k.delivery(nid, ep))
            pipe.lrange(k.attempts(nid, ep), 0, -1)
        pipe.hgetall(k.PAUSED)
        pipe.zrange(k.resends(nid), 0, -1, withscores=True)
        results = await pipe.execute()
    pauses = _pauses(results[-2])
    deliveries: dict[str, dict[str, Any]] = {}
    for i, ep in enumerate(eps):
        hash_, attempts = results[2 * i], results[2 * i + 1]
        d = {key.decode(): value.decode("utf-8", "replace") for key, value in hash_.items()}
        deliveries[ep] = delivery_record(d, attempts, pauses.get(ep))
    resends = await load_rows(redis, [(m.decode(), int(s)) for m, s in results[-1]])
    fields: dict[str, list[str]] | None = None
    parse_error = body_error
    if body_error is None:
        try:
            fields = protocol.parse_form(body)
        except protocol.ProtocolError as exc:
            parse_error = exc.detail
    doc: dict[str, Any] = {
        "id": nid,
        "channel": f.get("channel", ""),
        "source": f.get("source", ""),
        "received_at": iso_millis(f.get("recv")),
        "seq": int(f["seq"]) if f.get("seq", "").isdigit() else None,
        "ref": f.get("ref", ""),
        "status": f.get("status", ""),
        "mtype": f.get("mtype", ""),
        "type": f.get("type", ""),
        "message_id": f.get("message_id", ""),
        "license": f.get("license", ""),
        "email": f.get("email", ""),
        "test": f.get("test") == "1",
        "algo": f.get("algo", ""),
        "content_type": f.get("ct", ""),
        "resend_of": f.get("resend_of") or None,
        "targets": f["targets"].split(",") if f.get("targets") else None,
        "routed": "eps" in f,
        "fields": fields,
        "body": body.decode("utf-8", "replace"),
        "deliveries": deliveries,
        "resends": [row.summary() for row in resends],
    }
    if parse_error is not None:
        doc["body_error"] = parse_error
    return doc

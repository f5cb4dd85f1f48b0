"""Reconciliation's Redis side: which listed orders lack their IPN, the last result, whose turn it is.

A pass (workers/reconcile.py) lists a source's orders from 2Checkout's API and hands them here:
``compare`` keeps, per order, the status it was listed in and when the relay first saw it so
(``relay:rec:{src}:seen``, replaced by each pass, so nothing outlives the lookback window), reads the
``ORDERSTATUS`` of every IPN stored for that RefNo (from any source), and says which orders are
**missing**: listed in a status for ``grace_minutes`` with no IPN carrying that status or a later
one. ``save`` writes the result (``relay:rec:{src}:state``); a failed pass keeps the last known list
and records the error beside it. Health (relay/store/stats.py), the admin API, the dashboard, the
alerts and ``relay reconcile`` read that one document.

One pass runs at a time across all workers: ``relay:rec:{src}:turn`` holds ``run:{who}`` with a
lease while a pass runs, then ``idle`` until the next is due; both expire on Redis's clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from redis.asyncio import Redis
from redis.exceptions import WatchError

from config.settings import Settings
from relay import constants as k
from relay.timefmt import iso_seconds

# The statuses compared, by stage of an order's life. The API's order Status has its own vocabulary
# (2Checkout, "Order flow in 2Checkout API": PENDING, AUTHRECEIVED, COMPLETE, REVERSED, REFUND,
# CANCELED), which the IPN's ORDERSTATUS shares except for the authorized stage: an order the API lists
# as AUTHRECEIVED (amount blocked, not yet collected: awaiting shipment or delivery confirmation) is
# announced by an IPN PAYMENT_AUTHORIZED (IPN triggers page). The finer IPN statuses of one stage
# (PURCHASE_PENDING, PENDING_APPROVAL; PAYMENT_RECEIVED, PENDING_ORDER_APPROVAL) tell the merchant the
# same news, so any IPN of an order's stage covers it. A listed status outside these is not compared.
PENDING = ("PENDING", "PURCHASE_PENDING", "PENDING_APPROVAL")
AUTHORIZED = ("AUTHRECEIVED", "PAYMENT_AUTHORIZED", "PAYMENT_RECEIVED", "PENDING_ORDER_APPROVAL")
ENDED = ("CANCELED", "INVALID")
REVERSED = ("REFUND", "REVERSED")
IPN_STATUSES = frozenset((*PENDING, *AUTHORIZED, "COMPLETE", *ENDED, *REVERSED))
# what covers each status: an IPN of the same stage, or of a later one of the order's life (a later
# status's IPN proves the earlier news reached the relay's side too: it is contained in the later one)
_LATER: dict[str, frozenset[str]] = {
    **{s: frozenset((*PENDING, *AUTHORIZED, "COMPLETE", *ENDED, *REVERSED)) for s in PENDING},
    **{s: frozenset((*AUTHORIZED, "COMPLETE", *ENDED, *REVERSED)) for s in AUTHORIZED},
    "COMPLETE": frozenset(REVERSED),
    # the API has no INVALID: an order an IPN called INVALID (the plugins cancel it) is listed CANCELED
    **{s: frozenset(ENDED) for s in ENDED},
}

# the stored list of missing orders is capped (the count is not): a broken setup can miss thousands
MISSING_CAP = 1000
# the first references a health problem names
PROBLEM_REFERENCES = 10
# every ZRANGE / HMGET batch of one pipeline
CHUNK = 500
# a running pass's lease: workers/reconcile.py stops a pass before it ends
LEASE_MS = 300_000


def covered(status: str, ipn_statuses: Iterable[str]) -> bool:
    """Whether an IPN in one of ``ipn_statuses`` tells the merchant about an order now in ``status``."""
    later = _LATER.get(status, frozenset())
    return any(s == status or s in later for s in ipn_statuses)


@dataclass(frozen=True)
class Order:
    reference: str
    status: str


def reconciled_sources(settings: Settings) -> list[str]:
    return [name for name, src in settings.sources.items() if src.reconcile is not None]


# -- whose turn --------------------------------------------------------------------------------------


async def take_turn(redis: Redis, src: str, who: str, *, now: bool = False, lease_ms: int = LEASE_MS) -> bool:
    """Start a pass if none runs and the next is due; ``now`` (``relay reconcile``) skips the wait for
    the next one, never a running pass."""
    key = k.reconcile_turn(src)
    if not now:
        return bool(await redis.set(key, f"run:{who}", nx=True, px=lease_ms))
    async with redis.pipeline(transaction=True) as pipe:
        try:
            await pipe.watch(key)
            current = await pipe.get(key)
            if current is not None and current.startswith(b"run:"):
                return False
            pipe.multi()  # type: ignore[no-untyped-call]  # unannotated in redis-py
            pipe.set(key, f"run:{who}", px=lease_ms)
            await pipe.execute()
        except WatchError:
            return False
    return True


async def end_turn(redis: Redis, src: str, who: str, interval_ms: int) -> None:
    """The next pass is due ``interval_ms`` from now (Redis's clock); only the pass's own lease is ended."""
    key = k.reconcile_turn(src)
    async with redis.pipeline(transaction=True) as pipe:
        try:
            await pipe.watch(key)
            if await pipe.get(key) != f"run:{who}".encode():
                return  # our lease ran out and another pass took the turn: leave it to that one
            pipe.multi()  # type: ignore[no-untyped-call]  # unannotated in redis-py
            pipe.set(key, "idle", px=interval_ms)
            await pipe.execute()
        except WatchError:
            return


# -- one comparison ----------------------------------------------------------------------------------


async def compare(
    redis: Redis, src: str, orders: Sequence[Order], now_ms: int, grace_ms: int, lookback_ms: int
) -> list[dict[str, Any]]:
    """Record when each listed order was first seen in its status; return the missing ones, oldest first."""
    listed: dict[str, str] = {}
    for o in orders:
        # a refund is listed as an order of its own under the original's RefNo: keep the latest status
        # of the order's life, whose IPN covers the earlier ones
        if o.status in IPN_STATUSES and (o.reference not in listed or covered(listed[o.reference], {o.status})):
            listed[o.reference] = o.status
    seen_key = k.reconcile_seen(src)
    previous: dict[bytes, bytes] = await redis.hgetall(seen_key)  # type: ignore[misc]
    seen: dict[str, tuple[str, int]] = {}
    for ref, status in listed.items():
        status_then, _, first = previous.get(ref.encode(), b"").decode().partition(" ")
        seen[ref] = (status, int(first) if status_then == status and first.isdigit() else now_ms)
    statuses = await _ipn_statuses(redis, list(seen))
    missing = [
        {"reference": ref, "status": status, "first_seen": first}
        for ref, (status, first) in seen.items()
        if now_ms - first >= grace_ms and not covered(status, statuses.get(ref, ()))
    ]
    # replaced whole, in one MULTI: an order that left the listing (older than the lookback) is forgotten
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(seen_key)
        if seen:
            pipe.hset(seen_key, mapping={ref: f"{status} {first}" for ref, (status, first) in seen.items()})
            pipe.pexpire(seen_key, lookback_ms + k.DAY_MS)
        await pipe.execute()
    return sorted(missing, key=lambda m: (m["first_seen"], m["reference"]))


async def _ipn_statuses(redis: Redis, refs: list[str]) -> dict[str, set[str]]:
    """The ORDERSTATUS of every IPN stored for each RefNo (relay:ix:ref, the notification hashes), from
    any source: an account with several IPN URLs (NOTIFICATION_URL) notifies each order to one of them,
    and a RefNo is 2Checkout's reference of one order, so an IPN carrying it is that order's wherever it
    arrived."""
    nids: dict[str, list[str]] = {}
    for i in range(0, len(refs), CHUNK):
        chunk = refs[i : i + CHUNK]
        async with redis.pipeline(transaction=False) as pipe:
            for ref in chunk:
                pipe.zrange(k.idx_ref(ref), 0, -1)
            for ref, found in zip(chunk, await pipe.execute(), strict=True):
                if found:
                    nids[ref] = [n.decode() for n in found]
    pairs = [(ref, nid) for ref, ids in nids.items() for nid in ids]
    statuses: dict[str, set[str]] = {}
    for i in range(0, len(pairs), CHUNK):
        batch = pairs[i : i + CHUNK]
        async with redis.pipeline(transaction=False) as pipe:
            for _, nid in batch:
                pipe.hmget(k.notification(nid), ["channel", "status"])
            for (ref, _), (channel, status) in zip(batch, await pipe.execute(), strict=True):
                if channel == b"ipn" and status:
                    statuses.setdefault(ref, set()).add(status.decode())
    return statuses


# -- the stored result -------------------------------------------------------------------------------


async def save(
    redis: Redis,
    src: str,
    now_ms: int,
    lookback_ms: int,
    *,
    orders: int | None = None,
    missing: list[dict[str, Any]] | None = None,
    error: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Store a pass's result: its missing orders, or its error beside the last known list."""
    doc = load(await redis.get(k.reconcile_state(src)))
    if error is None and missing is not None:
        doc.update(
            checked_at=now_ms,
            orders=orders,
            count=len(missing),
            missing=missing[:MISSING_CAP],
            since=(doc["since"] or now_ms) if missing else None,
            error=None,
        )
    else:
        err = dict(error or {})
        since = doc["error"]["since"] if doc["error"] else now_ms
        doc["error"] = {
            "http_status": err.get("http_status"),
            "message": str(err.get("message", "")),
            "since": since,
            "at": now_ms,
        }
    doc["attempted_at"] = now_ms
    await redis.set(k.reconcile_state(src), json.dumps(doc), px=lookback_ms + k.DAY_MS)
    return doc


def load(raw: bytes | str | None) -> dict[str, Any]:
    """A stored result, or the empty one (never run, expired, unreadable)."""
    doc: dict[str, Any] = {
        "checked_at": None,
        "attempted_at": None,
        "orders": None,
        "count": 0,
        "missing": [],
        "since": None,
        "error": None,
    }
    if raw:
        try:
            stored = json.loads(raw)
        except ValueError:
            return doc
        if isinstance(stored, dict):
            doc.update({key: stored[key] for key in doc if key in stored})
    return doc


async def read(redis: Redis, settings: Settings) -> dict[str, dict[str, Any]]:
    sources = reconciled_sources(settings)
    if not sources:
        return {}
    raws = await redis.mget([k.reconcile_state(src) for src in sources])
    return {src: load(raw) for src, raw in zip(sources, raws, strict=True)}


# -- what the rest of the relay shows --------------------------------------------------------------


def missing_rows(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {"reference": m["reference"], "status": m["status"], "first_seen": iso_seconds(m["first_seen"])}
        for m in doc["missing"]
    ]


def error_text(doc: Mapping[str, Any]) -> str | None:
    err = doc["error"]
    if not err:
        return None
    return f"HTTP {err['http_status']}: {err['message']}" if err["http_status"] else str(err["message"])


def order_link(reference: str) -> str:
    """The order's page in 2Checkout's control panel, where its notifications can be sent again."""
    return f"https://secure.2checkout.com/cpanel/order_info.php?refno={quote(reference, safe='')}"


def view(states: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``GET /api/reconcile`` and ``relay reconcile --json``: per source, only the missing orders."""
    return {
        "sources": [
            {
                "source": src,
                "missing": missing_rows(doc),
                "count": doc["count"],
                "error": error_text(doc),
                "http_status": doc["error"]["http_status"] if doc["error"] else None,
                "checked_at": iso_seconds(doc["checked_at"]),
                "since": iso_seconds(doc["since"]),
            }
            for src, doc in states.items()
        ]
    }


def problems(states: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The health problems ``notifications_missing`` and ``reconcile_failing`` (both degraded)."""
    found: list[dict[str, Any]] = []
    for src, doc in states.items():
        if doc["count"]:
            refs = missing_rows(doc)[:PROBLEM_REFERENCES]
            named = ", ".join(f"{r['reference']} ({r['status']})" for r in refs)
            more = f" and {doc['count'] - len(refs)} more" if doc["count"] > len(refs) else ""
            found.append(
                {
                    "kind": "notifications_missing",
                    "source": src,
                    "count": doc["count"],
                    "since": iso_seconds(doc["since"]),
                    "references": refs,
                    "checked_at": iso_seconds(doc["checked_at"]),
                    "message": f"source {src}: {doc['count']} order(s) in 2Checkout's order list have no IPN in the "
                    f"status they reached: {named}{more}; reissue each from its order page in the "
                    "2Checkout control panel (relay reconcile lists the links)",
                }
            )
        if doc["error"]:
            err = doc["error"]
            found.append(
                {
                    "kind": "reconcile_failing",
                    "source": src,
                    "since": iso_seconds(err["since"]),
                    "http_status": err["http_status"],
                    "error": err["message"],
                    "last_at": iso_seconds(err["at"]),
                    "message": f"source {src}: 2Checkout's order API could not be read ({error_text(doc)}); "
                    "the missing orders shown are from the last pass that could",
                }
            )
    return found

"""What a resend is made of (relay/store/resend.py): the records of a plan and its answer, the limits,
and when an earlier resend already has a notification in hand."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from relay import constants as k
from relay.store.params import MAX_IDS, SELECTING_FILTERS, ResendRequest
from relay.store.queries import BadParam, BadRequest, Filters, Row, validate

IDEMPOTENCY_TTL_MS = k.DAY_MS
BULK_MAX = 10_000
BULK_SCAN_BUDGET = 200_000
CHUNK = 500
SKIPPED_SHOWN = 100
# a resend in one of these states already carries (or carried) the notification to that endpoint;
# "paused" too: it is sent on resume, so resending again while paused would send twice
IN_HAND = frozenset({"pending", "in_flight", "retrying", "paused", "delivered"})
FACTS = ("source", "channel", "ref", "mtype", "status", "test", "resend_of", "type", "eps")


def check_idempotency_key(value: object) -> str | None:
    """The key as the API's models check it (``--idempotency-key`` and the ``Idempotency-Key`` header)."""
    return validate(ResendRequest, {"idempotency_key": value}).idempotency_key


def check_bulk_selection(ids: Sequence[str] | None, filters: Filters | None) -> None:
    """A bulk resend selects by ``ids`` or by ``filters``: exactly one, not empty, ids within the limit."""
    if (ids is None) == (filters is None):
        raise BadRequest("give either ids or filter, not both or neither")
    if ids is not None and not ids:
        raise BadParam("ids", [], "is empty")
    if ids is not None and len(ids) > MAX_IDS:
        raise BadParam("ids", f"[{len(ids)} ids]", f"at most {MAX_IDS} per request")
    if filters is not None and filters.empty:
        raise BadParam("filter", {}, f"is empty: name at least one of {', '.join(SELECTING_FILTERS)}")


def bulk_target(ids: Sequence[str] | None, filters: Filters | None) -> str:
    """What a bulk resend selected, as its audit entry names it."""
    if ids is not None:
        return f"{len(ids)} id(s)"
    return "filter " + " ".join(f"{key}={v}" for key, v in vars(filters).items() if v is not None)


@dataclass(frozen=True)
class Original:
    nid: str
    source: str
    channel: str
    ref: str
    mtype: str
    status: str
    test: bool
    etype: str = ""
    routed: tuple[str, ...] = ()  # the endpoints its fan-out routed it to


@dataclass(frozen=True)
class Resent:
    id: str
    resend_of: str
    targets: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "resend_of": self.resend_of, "targets": list(self.targets)}


@dataclass(frozen=True)
class Skip:
    id: str
    reason: str

    def as_json(self) -> dict[str, str]:
        return {"id": self.id, "reason": self.reason}


Plan = list[tuple[Original, tuple[str, ...]]]


def in_hand(resends: list[Row], endpoint: str) -> bool:
    for row in resends:
        d = row.deliveries.get(endpoint)
        if d is not None and d.get("state") in IN_HAND:
            return True
        routed = "eps" in row.fields
        if not routed and endpoint in row.fields.get("targets", "").split(","):
            return True  # queued, its fan-out has not run yet
    return False


def resend_answer(resent: list[Resent], skipped: list[Skip], *, count: int, dry_run: bool) -> dict[str, Any]:
    return {
        "dry_run": dry_run,
        "count": count,
        "ids": [r.id for r in resent],
        "resends": [r.as_json() for r in resent],
        "skipped_count": len(skipped),
        "skipped": [s.as_json() for s in skipped[:SKIPPED_SHOWN]],
    }

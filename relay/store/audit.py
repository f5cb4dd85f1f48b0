"""The audit log of operator actions: pause, resume, retry-now, cancel, resend and reload.

Each entry says what was done, when, from where (``cli``, ``api`` or ``dashboard`` with the caller's
address, or ``signal``/``reload`` for what a process did by itself) and to how many deliveries.
Entries are JSON items of the list ``relay:audit``, newest first, capped at ``AUDIT_CAP``: the log
is bounded whatever the traffic. The delivery scripts (relay/store/lua/control.lua) push their entry
in the same atomic call as the change they make, so an action is never done without its entry;
other actions push theirs with ``record``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from relay import constants as k
from relay.store.queries import BadParam

ACTIONS = ("pause", "resume", "retry", "cancel", "resend", "reload")
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000


@dataclass(frozen=True)
class Origin:
    """Where an action came from: the interface and, for the API and dashboard, the caller's address."""

    via: str
    address: str | None = None

    def label(self) -> str:
        return f"{self.via} ({self.address})" if self.address else self.via


def entry(
    action: str, origin: Origin, *, target: str, count: int = 0, at_ms: int | None = None, **detail: Any
) -> dict[str, Any]:
    """One audit entry. ``target``: the endpoint, ``nid`` or ``nid:endpoint``, or ``config``."""
    doc: dict[str, Any] = {
        "at": at_ms if at_ms is not None else int(time.time() * 1000),
        "action": action,
        "via": origin.via,
        "address": origin.address,
        "target": target,
        "count": count,
    }
    doc.update({key: value for key, value in detail.items() if value is not None})
    return doc


def encode(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


async def record(redis: Redis, doc: dict[str, Any]) -> None:
    """Push one entry and trim the log, together (MULTI): the log never grows past its cap."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.lpush(k.AUDIT, encode(doc))
        pipe.ltrim(k.AUDIT, 0, k.AUDIT_CAP - 1)
        await pipe.execute()


def parse_limit(value: object) -> int:
    if value is None:
        return DEFAULT_LIMIT
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 6:
        n = int(value)
    else:
        raise BadParam("limit", value, f"expected an integer from 1 to {MAX_LIMIT}")
    if not 1 <= n <= MAX_LIMIT:
        raise BadParam("limit", value, f"expected an integer from 1 to {MAX_LIMIT}")
    return n


def parse_action(value: object) -> str | None:
    if value is None:
        return None
    if value not in ACTIONS:
        raise BadParam("action", value, f"expected one of {', '.join(ACTIONS)}")
    return str(value)


async def read(redis: Redis, *, limit: int = DEFAULT_LIMIT, action: str | None = None) -> list[dict[str, Any]]:
    """The newest ``limit`` entries (of one ``action`` if given). Unreadable items are skipped."""
    found: list[dict[str, Any]] = []
    start, page = 0, max(limit, 200)
    # filtering by action walks the log in pages; it is capped, so this ends
    while len(found) < limit and start < k.AUDIT_CAP:
        raw = await redis.lrange(k.AUDIT, start, start + page - 1)  # type: ignore[misc]
        if not raw:
            break
        for item in raw:
            try:
                doc = json.loads(item)
            except ValueError:
                continue
            if isinstance(doc, dict) and (action is None or doc.get("action") == action):
                found.append(doc)
                if len(found) == limit:
                    break
        start += page
    return found

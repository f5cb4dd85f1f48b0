"""A removed endpoint's work (relay/store/endpoints.py): routed as cancelled, and cancelled until none is left.

A notification received before an endpoint's removal is still routed to it if its fan-out runs after
(a job delayed or lost and re-run by the sweeper, a worker that reloaded first): its delivery is
recorded ``cancelled`` at once, never sent. What was already routed is cancelled by ``cancel``: at the
reload or start-up that removed it, every minute by the sweeper while any is left (in flight when it
was removed, a reload whose cancel failed, a worker still on the old config), and before a re-added
endpoint's lane starts, so a re-added endpoint gets only what is routed after it came back.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import structlog
from redis.asyncio import Redis

from config.settings import Endpoint, Settings
from relay.routing import Route
from relay.store import audit
from relay.store.control import Control
from relay.store.endpoints import Removed

logger = structlog.get_logger()


def endpoints(records: Mapping[str, Removed], routed: Collection[str], seq: int) -> list[Endpoint]:
    """The removed endpoints whose removal came after notification ``seq`` and that the fan-out does not
    route it to otherwise: not configured, or re-added since (a re-added endpoint gets only what was
    received after it came back, so what it missed while removed is recorded cancelled, not nothing)."""
    return [r.endpoint for r in records.values() if r.name not in routed and seq <= r.seq]


# a removal held before Redis has recorded it: no notification seq is known yet, so every one counts
PROVISIONAL_SEQ = 2**62


def provisional(old: Settings, new: Settings, now_ms: int) -> dict[str, Removed]:
    """The endpoints ``new`` drops from ``old``, as removals this worker holds until Redis's records
    (relay/store/endpoints.py) replace them: a fan-out meanwhile records a cancelled delivery to them."""
    return {
        name: Removed(name, now_ms, PROVISIONAL_SEQ, "reload", ep)
        for name, ep in old.endpoints.items()
        if name not in new.endpoints
    }


def held(current: Mapping[str, Removed], records: Mapping[str, Removed], settings: Settings) -> dict[str, Removed]:
    """``records`` (Redis's), with the provisional removals of ``current`` that Redis has no record of
    yet (their recording failed and is retried), unless ``settings`` configures the name again."""
    kept = {
        name: r
        for name, r in current.items()
        if r.seq == PROVISIONAL_SEQ and name not in records and name not in settings.endpoints
    }
    return {
        **kept,
        **{name: r for name, r in records.items() if r.seq != PROVISIONAL_SEQ or name not in settings.endpoints},
    }


def marked(routes: list[Route], gone: list[Endpoint]) -> list[Route]:
    """A removed endpoint's route is recorded cancelled (route.lua's mode ``removed``); a filtered one skipped."""
    names = {ep.name for ep in gone}
    return [(name, "removed" if name in names and mode != "skip" else mode, reason) for name, mode, reason in routes]


async def cancel(
    redis: Redis, settings: Settings, records: Mapping[str, Removed], origin: audit.Origin, *, everything: bool
) -> dict[str, int]:
    """Cancel each removed endpoint's work routed before its removal. ``everything``: also the waiting
    work of an endpoint configured again (before its lane starts); otherwise only its leftovers in
    flight, since the waiting work of a re-added endpoint is mostly its new work. Returns how many
    were cancelled per endpoint (only those with any)."""
    control = Control(redis, settings)
    done: dict[str, int] = {}
    for record in records.values():
        configured = record.name in settings.endpoints
        count, left = await control.cancel_removed(
            record.name, record.seq, origin, in_flight_only=configured and not everything
        )
        if count:
            done[record.name] = count
            logger.info(
                "removed_endpoint_work_cancelled",
                endpoint=record.name,
                count=count,
                in_flight=left,
                removed_by=record.by,
            )
    return done

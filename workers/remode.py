"""A reload that switches an endpoint's mode (serial, concurrent, per_order) re-scores its waiting work.

A serial or per_order queue is ordered by receipt (score: the notification's seq) and a concurrent one by due time
(score: ms), and complete.lua reschedules a retry by the delivery's recorded ``mode``. Left as they
were, a concurrent queue made serial sent its work in due-time order, not receipt order, and a
serial one made concurrent retried every waiting retry at once and then at every lease expiry (its
deliveries still said ``serial``). workers/lua/remode.lua re-scores each queued delivery for the new
mode and records the mode on it; the endpoint's new lane runs it before it claims anything.
"""

from __future__ import annotations

from redis.asyncio import Redis

from config.settings import Endpoint
from relay import constants as k
from relay.store.scripts import script
from workers import wire

# deliveries re-scored per script call: one call never holds Redis for a whole backlog
PAGE = 500


def mode_of(ep: Endpoint) -> str:
    return ep.mode


async def switched(redis: Redis, ep: Endpoint) -> bool:
    """Whether ``ep``'s queue holds work routed in the other mode: the config was edited and the
    worker restarted rather than reloaded. The oldest and newest queued deliveries tell (a queue is
    re-scored whole, so a switch shows at either end)."""
    q = k.ep_queue(ep.name)
    ends = {*await redis.zrange(q, 0, 0), *await redis.zrange(q, -1, -1)}
    modes = [await redis.hget(k.delivery(nid.decode(), ep.name), "mode") for nid in ends]  # type: ignore[misc]
    return any(mode is not None and mode.decode() != mode_of(ep) for mode in modes)


async def remode(redis: Redis, ep: Endpoint) -> int:
    """Re-score ``ep``'s queue for its mode; returns how many deliveries were re-scored.

    The queue is walked with ZSCAN, a page per script call: re-scoring moves members, so ranks cannot be
    paged, while ZSCAN returns every member present for the whole walk whatever their scores become
    (one may come twice: re-scoring is idempotent). Read whole by one ZRANGE, a backlog of a million
    held Redis, and filled this worker, as one reply. What a fan-out queues meanwhile is queued in the
    new mode already, or re-scored by the reload of the worker that routed it (every worker runs this
    at its reload)."""
    q = k.ep_queue(ep.name)
    keys = wire.REMODE.pack_keys(queue=q)
    fields = wire.REMODE.pack_args(ep=ep.name, mode=mode_of(ep))
    run = script(wire.REMODE)
    total, cursor = 0, 0
    while True:  # ends with the walk: ZSCAN's cursor comes back to 0
        cursor, page = await redis.zscan(q, cursor, count=PAGE)
        if page:
            total += int(await run(keys=keys, args=[*fields, *(nid for nid, _ in page)], client=redis))
        if cursor == 0:
            return total

"""Every key has a bound: what the sweeper trims besides the keys that expire on their own.

Per-notification keys (``relay:n``, ``relay:d``, ``relay:a``) carry the retention period as their
TTL, and minute hashes their 25 h. What is left is trimmed here:

- the time-scored indexes of configured endpoints and sources, by retention on Redis's clock
  (sweep.lua; the reference index is trimmed on every write, see ingest.lua);
- the keys of endpoints and sources no longer in the config: they get the retention period as a TTL,
  so they vanish once nothing has written them for that long, and lose it again if the name comes
  back (another worker's config may still have it);
- ``relay:stats`` fields of endpoints that have no key left at all.

The SCAN walks a page per sweep, so a large keyspace costs a little per tick, never a long block.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.asyncio import Redis

from config.event_types import EVENT_TYPES
from config.settings import Settings
from relay import constants as k
from relay.store.scripts import script
from workers import wire

SCAN_PAGE = 500


@dataclass
class Walk:
    """Where the SCAN of each pattern stands, and the endpoint names it met this round."""

    cursors: dict[str, int] = field(default_factory=lambda: {k.EP_PREFIX + "*": 0, k.IDX_SOURCE_PREFIX + "*": 0})
    seen_endpoints: set[str] = field(default_factory=set)
    next_at: float = 0.0  # monotonic: when the sweeper takes the next page


def _trimmed_keys(settings: Settings) -> list[str]:
    keys = [k.IDX_ALL, *(k.idx_channel(ch) for ch in ("ipn", "lcn", "ins"))]
    keys += [k.idx_source(src) for src in settings.sources]
    keys += [k.idx_type(etype) for etype in EVENT_TYPES]
    keys += [k.ep_state(ep, state) for ep in settings.endpoints for state in k.STATES]
    return [*keys, k.WORKERS]


async def trim(redis: Redis, settings: Settings) -> int:
    """Trim the indexes; returns Redis's clock (ms)."""
    args = wire.SWEEP.pack_args(retention_ms=settings.delivery.retention_ms, worker_ttl_ms=k.DAY_MS)
    now: int = await script(wire.SWEEP)(keys=wire.SWEEP.pack_keys(*_trimmed_keys(settings)), args=args, client=redis)
    return int(now)


def _owner(key: str) -> tuple[str, str] | None:
    """('ep', name) or ('src', name) for a key of one endpoint or source; None for a minute hash."""
    if key.startswith(k.EP_PREFIX):
        name, _, rest = key[len(k.EP_PREFIX) :].partition(":")
        return None if rest.startswith("m:") else ("ep", name)  # minute hashes expire on their own
    if key.startswith(k.IDX_SOURCE_PREFIX):
        return "src", key[len(k.IDX_SOURCE_PREFIX) :]
    return None


async def expire_removed(redis: Redis, settings: Settings, walk: Walk) -> int:
    """One SCAN page per pattern: removed names' keys get a TTL, configured ones lose it. Returns
    how many keys were given an expiry."""
    retention = settings.delivery.retention_ms
    # an endpoint another worker runs (registered in relay:endpoints) is not removed, whatever this
    # worker's config says: its config may be the one not reloaded yet
    running = {name.decode() for name in await redis.hkeys(k.EP_REGISTRY)}  # type: ignore[misc]
    expired = 0
    for pattern, cursor in list(walk.cursors.items()):
        cursor, raw = await redis.scan(cursor, match=pattern, count=SCAN_PAGE)
        walk.cursors[pattern] = int(cursor)
        owned = [(key.decode(), owner) for key in raw if (owner := _owner(key.decode())) is not None]
        if owned:
            async with redis.pipeline(transaction=False) as pipe:
                for key, _ in owned:
                    pipe.pttl(key)
                ttls = await pipe.execute()
            async with redis.pipeline(transaction=False) as pipe:
                for (key, (kind, name)), ttl in zip(owned, ttls, strict=True):
                    known = name in settings.endpoints or name in running if kind == "ep" else name in settings.sources
                    if kind == "ep":
                        walk.seen_endpoints.add(name)
                    if not known and ttl == -1:
                        pipe.pexpire(key, retention)
                        expired += 1
                    elif known and ttl >= 0:
                        pipe.persist(key)
                await pipe.execute()
        if cursor == 0 and pattern.startswith(k.EP_PREFIX):
            await _forget_stats(redis, settings, walk.seen_endpoints)
            walk.seen_endpoints = set()
    return expired


async def _forget_stats(redis: Redis, settings: Settings, seen: set[str]) -> None:
    """After a full round: drop the counters of endpoints neither configured nor with a key left."""
    fields = [f.decode() for f in await redis.hkeys(k.STATS)]  # type: ignore[misc]
    gone = [f for f in fields if "|" in f and (ep := f.split("|", 1)[0]) not in settings.endpoints and ep not in seen]
    if gone:
        await redis.hdel(k.STATS, *gone)  # type: ignore[misc]

"""Failed deliveries resolved by a delivered resend (relay/store/lua/resolve.lua).

A resend records its original in ``relay:ep:{ep}:resent`` for each target; this pass, run before
health is evaluated and before failed deliveries are listed, moves each original whose resend was
delivered from ``st:failed`` to ``st:resolved``. It only touches originals that were resent, so it
costs nothing when none were.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis.asyncio import Redis

from relay import constants as k
from relay.store.scripts import script
from relay.store.wire import RESOLVE

PER_CALL = 500


# resends older than this are no longer looked at (without the configured retention at hand)
MAX_RETENTION_MS = 3650 * k.DAY_MS


async def resolve(redis: Redis, endpoints: Iterable[str], retention_ms: int = MAX_RETENTION_MS) -> int:
    """Resolve what can be resolved now (stamped on Redis's clock); the number resolved."""
    eps = list(endpoints)
    async with redis.pipeline(transaction=False) as pipe:
        for ep in eps:
            pipe.zcard(k.ep_resent(ep))
        waiting = await pipe.execute()
    run = script(RESOLVE)
    total = 0
    for ep, n in zip(eps, waiting, strict=True):
        if n:
            keys = RESOLVE.pack_keys(
                resent=k.ep_resent(ep), failed=k.ep_state(ep, "failed"), resolved=k.ep_state(ep, k.RESOLVED)
            )
            args = RESOLVE.pack_args(ep=ep, per_call=PER_CALL, retention_ms=retention_ms)
            total += int(await run(keys=keys, args=args, client=redis))
    return total

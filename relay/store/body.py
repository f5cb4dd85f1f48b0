"""A notification's body as stored: in a key of its own, compressed by the fan-out.

A 1.5 KB IPN deflates to about half (issue 26: the body was the largest field a notification keeps
for the retention period). The body goes to ``relay:b:{nid}``, beside the notification hash, with the
same TTL: kept out of the hash, it leaves the hash only short values, which Redis stores compactly (a
listpack) instead of as a hash table, about 700 bytes less again.

The ingress stores it as received, and the hash's ``braw`` field says so: compressing it there cost
``relay serve`` about a fifth of its CPU per request (docs/benchmarks.md). The worker's fan-out, which
claims every notification anyway, compresses the bodies of the batch it routes and route.lua writes
them over the plain ones in the same call, dropping ``braw`` (workers/fanout.py): the stored bytes
after the fan-out are what the ingress stored before. zlib's Adler-32 check guards that they come
back exactly. A body compression would not make smaller stays plain, ``braw`` kept.

So a body is, in the order relays stored it: the hash's ``body`` field (before issue 26, and an empty
body), its ``bodyz`` field (compressed; issue 26's first step), ``relay:b`` compressed (no ``braw``),
or ``relay:b`` as received (``braw``). Every reader takes all four: ``restore``. The original bytes
are what is delivered (``format = "form"``), verified, shown and resent.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable
from typing import Any, cast

from redis.asyncio import Redis

from relay import constants as k

PLAIN = "body"
PACKED = "bodyz"
# in the hash while relay:b holds the body as received: the fan-out has not compressed it yet
RAW = "braw"
# level 1: within 3 % of level 6's size on IPN bodies, at a fraction of its CPU
LEVEL = 1


def pack(body: bytes) -> bytes | None:
    """``body`` compressed for relay:b, or None when that would not make it smaller."""
    packed = zlib.compress(body, LEVEL)
    return packed if len(packed) < len(body) else None


def restore(plain: bytes | None, packed: bytes | None) -> bytes:
    """The original bytes from a body as stored, plain or compressed (either may be absent)."""
    if packed:
        return zlib.decompress(packed)
    return plain or b""


def stored(plain: bytes | None, packed: bytes | None, own: bytes | None, raw: bytes | None) -> bytes:
    """The original bytes from the hash's ``body``, ``bodyz`` and ``braw`` fields and relay:b."""
    if own is not None:
        return own if raw else zlib.decompress(own)
    return restore(plain, packed)


async def read(redis: Redis, nid: str) -> bytes:
    """The original body of notification ``nid`` (b"" when it has none)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hmget(k.notification(nid), [PLAIN, PACKED, RAW])
        pipe.get(k.body(nid))
        (plain, packed, raw), own = await cast(Awaitable[list[Any]], pipe.execute())
    return stored(plain, packed, own, raw)

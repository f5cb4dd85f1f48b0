"""A notification's body as stored: compressed, in a key of its own, when that makes it smaller.

A 1.5 KB IPN deflates to about half (issue 26: the body was the largest field a notification keeps
for the retention period). The compressed body (zlib, whose Adler-32 check guards that the bytes come
back exactly) goes to ``relay:b:{nid}``, beside the notification hash, with the same TTL: kept out of
the hash, it leaves the hash only short values, which Redis stores compactly (a listpack) instead of
as a hash table, about 700 bytes less again. A body compression would not make smaller stays the
hash's ``body`` field, as every notification stored before this change has it; the hash field
``bodyz`` is the compressed body of the relay in between (issue 26's first step). Every reader takes
all three: ``restore``. The original bytes are what is delivered (``format = "form"``), verified,
shown and resent.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable
from typing import Any, cast

from redis.asyncio import Redis

from relay import constants as k

PLAIN = "body"
PACKED = "bodyz"
# level 1: within 3 % of level 6's size on IPN bodies, at a fraction of its CPU (the ingress pays it)
LEVEL = 1


def pack(body: bytes) -> tuple[str, bytes]:
    """How to store ``body``: (PACKED, its compressed bytes) for relay:b, or (PLAIN, itself) for the hash."""
    packed = zlib.compress(body, LEVEL)
    return (PACKED, packed) if len(packed) < len(body) else (PLAIN, body)


def restore(plain: bytes | None, packed: bytes | None) -> bytes:
    """The original bytes from a body as stored, plain or compressed (either may be absent)."""
    if packed:
        return zlib.decompress(packed)
    return plain or b""


async def read(redis: Redis, nid: str) -> bytes:
    """The original body of notification ``nid`` (b"" when it has none)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hmget(k.notification(nid), [PLAIN, PACKED])
        pipe.get(k.body(nid))
        (plain, packed), own = await cast(Awaitable[list[Any]], pipe.execute())
    return restore(plain, own or packed)

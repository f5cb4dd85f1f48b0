"""A notification's body as stored in ``relay:n:{nid}``: compressed when that makes it smaller.

A 1.5 KB IPN deflates to about half (issue 26: the body was the largest field a notification keeps
for the retention period). Stored as field ``bodyz`` (zlib, whose Adler-32 check guards that the
bytes come back exactly), or as ``body`` when compression would not make it smaller, as every
notification stored before this change has it. Every reader takes both: ``restore``. The original
bytes are what is delivered (``format = "form"``), verified, shown and resent.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable
from typing import cast

from redis.asyncio import Redis

PLAIN = "body"
PACKED = "bodyz"
# level 1: within 3 % of level 6's size on IPN bodies, at a fraction of its CPU (the ingress pays it)
LEVEL = 1


def pack(body: bytes) -> tuple[str, bytes]:
    """The field and value to store ``body`` as."""
    packed = zlib.compress(body, LEVEL)
    return (PACKED, packed) if len(packed) < len(body) else (PLAIN, body)


def restore(plain: bytes | None, packed: bytes | None) -> bytes:
    """The original bytes from a notification's ``body`` and ``bodyz`` fields (either may be absent)."""
    if packed:
        return zlib.decompress(packed)
    return plain or b""


async def read(redis: Redis, key: str) -> bytes:
    """The original body of the notification hash ``key`` (b"" when it has none)."""
    plain, packed = await cast(Awaitable[list[bytes | None]], redis.hmget(key, [PLAIN, PACKED]))
    return restore(plain, packed)

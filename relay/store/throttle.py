"""An endpoint's ``rate_limit`` as relay health, /api/health and the dashboard show it: whether a
delivery is being held back by it now (``throttled``) and the rate it is sent at (``rate``, requests
per second over the last whole window), read from what workers/lua/rate.lua keeps in
``relay:ep:{ep}:rate``. A delivery held back is neither an attempt nor a failure: nothing here counts
toward an endpoint's failing verdict."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from config.settings import Endpoint

FIELDS = ("held", "win", "n", "prev")
WINDOW_MS = 2000  # workers/wire.py RATE_WINDOW_MS (the store layer does not import workers)


def row(ep: Endpoint, raw: Sequence[bytes | None], now_ms: int) -> dict[str, Any]:
    """``mode``, ``rate_limit``, ``rate_burst``, ``throttled`` and ``rate`` of one endpoint."""
    out: dict[str, Any] = {
        "mode": ep.mode,
        "rate_limit": ep.rate_limit,
        "rate_burst": ep.rate_burst,
        "throttled": False,
        "rate": None,
    }
    if ep.rate_limit is None:
        return out
    held, win, n, prev = (_int(v) for v in raw)
    interval = 1000 / ep.rate_limit
    # held back by a claim within the last two requests' time (at least 2 s): it is being throttled now
    out["throttled"] = held is not None and now_ms - held <= max(2000, 2 * interval)
    current = now_ms // WINDOW_MS
    count = (prev if win == current else n if win == current - 1 else 0) or 0
    out["rate"] = round(count * 1000 / WINDOW_MS, 2)
    return out


def _int(value: bytes | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None

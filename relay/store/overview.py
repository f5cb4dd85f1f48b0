"""The dashboard's overview as data: the health report, each endpoint's state and 24 h chart, reconciliation.

Read by the dashboard (``relay/dashboard/views/overview.py``) and timed by ``bench/health.py``; it lives
in the store so the bench measures it without importing the dashboard.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis

from config.settings import Settings
from relay import constants as k
from relay.store.stats import health_report, hourly


def endpoint_state(row: Mapping[str, Any]) -> str:
    """failing exactly when the evaluation of health says so (relay/store/stats.py); paused when an
    operator holds it (never failing then); else healthy."""
    if row.get("paused"):
        return "paused"
    return "failing" if row.get("failing") else "healthy"


def _target(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host


async def overview_model(redis: Redis, settings: Settings, now_ms: int) -> dict[str, Any]:
    """The health report, each endpoint's state and hourly chart, and whether anything was ever received."""
    report = await health_report(redis, settings, now_ms)
    model: dict[str, Any] = {"report": report, "endpoints": {}, "total": None, "reconcile": []}
    if not report["redis"]["reachable"]:
        return model
    for src, doc in report["reconcile"].items():
        cfg = settings.sources[src].reconcile
        assert cfg is not None
        model["reconcile"].append(
            {
                "source": src,
                "doc": doc,
                "lookback_hours": f"{cfg.lookback_hours:g}",
                "interval_seconds": cfg.interval_seconds,
            }
        )
    # failing endpoints first, as the evaluation found them
    endpoints = sorted(settings.endpoints, key=lambda ep: not report["endpoints"].get(ep, {}).get("failing"))
    model["total"] = int(await redis.zcard(k.IDX_ALL))
    charts = await hourly(redis, endpoints, now_ms)
    for ep in endpoints:
        row = report["endpoints"].get(ep, {})
        model["endpoints"][ep] = {
            "state": endpoint_state(row),
            "hours": charts[ep],
            "failing_since": row.get("failing_since"),
            "target": _target(settings.endpoints[ep].url),
        }
    return model

"""The workers' alert job: every minute, the alerts and recovery messages relay/alerting decides are due.

It sends the kinds a worker can see (``WORKER_KINDS``: failing endpoints, refusing or silent
sources, work waiting too long); ``no_worker`` is sent by ``relay serve`` (relay/alerting/watch.py),
since no worker is alive to send it, and ``redis_unreachable`` by whichever process sees it (a
worker from its restart loop, workers/main.py; ``redis_recovered`` when it starts again).
"""

from __future__ import annotations

from typing import Any

import aiohttp

from config.settings import Settings
from relay.alerting.incidents import KINDS, WORKER_KINDS, evaluate
from relay.alerting.send import Notice, notify
from workers.engine import Engine

__all__ = ["Notice", "check_alerts", "evaluate", "notify", "send_now"]


async def check_alerts(ctx: dict[str, Any]) -> dict[str, int]:
    """Every minute: alert on the problems of WORKER_KINDS, and on their recovery."""
    engine: Engine = ctx["engine"]
    settings: Settings = ctx["settings"]
    notices = await evaluate(ctx["relay_redis"], settings, engine.redis_ms())  # the clock health's ages are on
    await notify(notices, settings, ctx["session"])
    sent = [*WORKER_KINDS, *dict.fromkeys(KINDS[kind].recovered for kind in WORKER_KINDS)]
    return {kind: sum(1 for n in notices if n.kind == kind) for kind in sent}


async def send_now(notices: list[Notice], settings: Settings) -> None:
    """Send from outside a running worker (no session in a context): its Redis is gone."""
    async with aiohttp.ClientSession() as session:
        await notify(notices, settings, session)

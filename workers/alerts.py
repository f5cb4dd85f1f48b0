"""The workers' alert job: every minute, the alerts and recovery messages relay/alerting decides are due.

It sends the kinds a worker can see (``WORKER_KINDS``: failing endpoints, refusing or silent
sources, work waiting too long); ``no_worker`` is sent by ``relay serve`` (relay/alerting/watch.py),
since no worker is alive to send it, and ``redis_unreachable`` by whichever ``relay serve`` sees it.
"""

from __future__ import annotations

from typing import Any

from config.settings import Settings
from relay.alerting.incidents import KINDS, WORKER_KINDS, evaluate
from relay.alerting.send import Notice, notify
from workers.engine import Engine

__all__ = ["Notice", "check_alerts", "evaluate", "notify"]


async def check_alerts(ctx: dict[str, Any]) -> dict[str, int]:
    """Every minute: alert on the problems of WORKER_KINDS, and on their recovery."""
    engine: Engine = ctx["engine"]
    settings: Settings = ctx["settings"]
    notices = await evaluate(ctx["relay_redis"], settings, engine.redis_ms())  # the clock health's ages are on
    await notify(notices, settings, ctx["session"])
    sent = [*WORKER_KINDS, *dict.fromkeys(KINDS[kind].recovered for kind in WORKER_KINDS)]
    return {kind: sum(1 for n in notices if n.kind == kind) for kind in sent}

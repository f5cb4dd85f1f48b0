"""Steering deliveries: pause and resume an endpoint, retry now, cancel. Shared by the API, CLI and dashboard.

Each action is one call of ``relay/store/lua/control.lua``, which also pushes the action's audit entry
(relay/store/audit.py). The state lives in Redis, so every process sees it at once:

- a paused endpoint is a field of ``relay:paused``; its waiting deliveries are in state ``paused``,
  the claim script gives it nothing and the fan-out parks new work as ``paused``. Resume puts each
  back in the state it had and adds the paused time to its ``paused_ms``, which the retry window
  does not count (workers/schedule.py).
- retry now makes a retrying delivery due now. On a serial endpoint only the head is ever sent, so it
  makes the head due: the order of receipt holds.
- cancel takes a waiting delivery out of its queue as ``cancelled``, with who and when; it is not a
  failure and can be resent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from config.settings import Endpoint, Settings
from relay import constants as k
from relay.store import audit
from relay.store.queries import BadParam, Conflict, NotFound, check_id, iso
from relay.store.scripts import key_functions, load

REFUSALS = {
    "paused": "endpoint {ep} is paused: resume it first",
    "not_paused": "endpoint {ep} is not paused",
    "missing": "notification {nid} has no delivery to {ep}",
    "in_flight": "the delivery of {nid} to {ep} is in flight; it finishes within the endpoint's timeout",
    "finished": "the delivery of {nid} to {ep} is already {detail}; nothing waits to be cancelled",
    "not_waiting": "the delivery of {nid} to {ep} is {detail}, not retrying",
}


class Control:
    def __init__(self, redis: Redis, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.settings = settings
        self.clock = clock
        self._script = redis.register_script(key_functions() + load("control"))

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def endpoint(self, name: object) -> Endpoint:
        if not isinstance(name, str):
            raise BadParam("endpoint", name, "expected an endpoint name")
        ep = self.settings.endpoints.get(name)
        if ep is None:
            known = ", ".join(sorted(self.settings.endpoints)) or "none"
            raise NotFound(f"no endpoint {name!r} is configured (configured: {known})")
        return ep

    async def _call(self, action: str, ep: Endpoint, entry: dict[str, Any] | None,
                    *args: str | int) -> tuple[str, int, str]:
        raw = await self._script(keys=[k.PAUSED, k.AUDIT], args=[
            action, ep.name, audit.encode(entry) if entry else "", k.AUDIT_CAP, 0 if ep.concurrent else 1, *args])
        return raw[0].decode(), int(raw[1]), raw[2].decode()

    def _refuse(self, code: str, ep: str, nid: str = "", detail: str = "") -> Conflict | NotFound:
        message = REFUSALS[code].format(ep=ep, nid=nid, detail=detail)
        return NotFound(message) if code == "missing" else Conflict(message)

    # -- pause and resume --------------------------------------------------------------------

    async def pause(self, name: str, origin: audit.Origin) -> dict[str, Any]:
        ep = self.endpoint(name)
        entry = audit.entry("pause", origin, target=ep.name, at_ms=self.now_ms())
        who = json.dumps({"at": entry["at"], "by": origin.label()})
        code, count, detail = await self._call("pause", ep, entry, who)
        state = await self.pause_state(ep.name)
        return {"endpoint": ep.name, "paused": True, "already": detail == "already", "count": count, **state}

    async def resume(self, name: str, origin: audit.Origin) -> dict[str, Any]:
        ep = self.endpoint(name)
        entry = audit.entry("resume", origin, target=ep.name, at_ms=self.now_ms())
        code, count, _ = await self._call("resume", ep, entry)
        if code != "ok":
            raise self._refuse(code, ep.name)
        return {"endpoint": ep.name, "paused": False, "count": count}

    async def paused(self) -> dict[str, dict[str, Any]]:
        """Every paused endpoint: since when (ms) and by whom."""
        raw: dict[bytes, bytes] = await self.redis.hgetall(k.PAUSED)  # type: ignore[misc]
        out = {}
        for name, value in raw.items():
            try:
                doc = json.loads(value)
                out[name.decode()] = {"since": int(doc["at"]), "by": str(doc.get("by", ""))}
            except (ValueError, KeyError, TypeError):
                out[name.decode()] = {"since": None, "by": ""}
        return out

    async def pause_state(self, name: str) -> dict[str, Any]:
        info = (await self.paused()).get(name)
        if info is None:
            return {"paused_since": None, "paused_by": None}
        return {"paused_since": iso(info["since"]), "paused_by": info["by"]}

    # -- retry now ---------------------------------------------------------------------------

    async def retry(self, origin: audit.Origin, *, endpoint: str | None = None,
                    nid: str | None = None) -> dict[str, Any]:
        """Make retrying deliveries due now: one notification's (to ``endpoint``, or to each of its
        endpoints that has one retrying), or every one of ``endpoint``."""
        if nid is None:
            if endpoint is None:
                raise BadParam("endpoint", None, "name an endpoint, a notification, or both")
            ep = self.endpoint(endpoint)
            entry = audit.entry("retry", origin, target=ep.name, at_ms=self.now_ms())
            code, count, head = await self._call("retry", ep, entry, "")
            if code != "ok":
                raise self._refuse(code, ep.name)
            return {"endpoint": ep.name, "count": count, **({"head": head} if head else {})}
        check_id(nid)
        names = [self.endpoint(endpoint).name] if endpoint is not None else await self._retrying_eps(nid)
        done: dict[str, int] = {}
        for name in names:
            ep = self.endpoint(name)
            entry = audit.entry("retry", origin, target=f"{nid}:{ep.name}", at_ms=self.now_ms())
            code, count, detail = await self._call("retry", ep, entry, nid)
            if code != "ok":
                raise self._refuse(code, ep.name, nid, detail)
            done[ep.name] = count
        return {"id": nid, "endpoints": done, "count": sum(done.values())}

    async def _retrying_eps(self, nid: str) -> list[str]:
        eps = await self._routed(nid)
        states = await self._states(nid, eps)
        found = [ep for ep, state in states.items() if state == "retrying"]
        if not found:
            raise Conflict(f"notification {nid} has no retrying delivery"
                           + (f" (deliveries: {', '.join(f'{e}:{s}' for e, s in states.items())})" if states else ""))
        return found

    async def _routed(self, nid: str) -> list[str]:
        raw = await self.redis.hget(k.notification(nid), "eps")  # type: ignore[misc]
        if raw is None:
            if not await self.redis.exists(k.notification(nid)):
                raise NotFound(f"no notification {nid!r}")
            raise Conflict(f"notification {nid} is not routed yet")
        return [ep for ep in raw.decode().split(",") if ep in self.settings.endpoints]

    async def _states(self, nid: str, eps: list[str]) -> dict[str, str]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for ep in eps:
                pipe.hget(k.delivery(nid, ep), "state")
            raw = await pipe.execute()
        return {ep: v.decode() for ep, v in zip(eps, raw, strict=True) if v is not None}

    # -- cancel ------------------------------------------------------------------------------

    async def cancel(self, nid: str, origin: audit.Origin, *, endpoint: str | None = None) -> dict[str, Any]:
        """Cancel a waiting delivery (to ``endpoint``, or every waiting one of the notification)."""
        check_id(nid)
        if endpoint is not None:
            names = [self.endpoint(endpoint).name]
        else:
            states = await self._states(nid, await self._routed(nid))
            names = [ep for ep, state in states.items() if state in k.WAITING]
            if not names:
                raise Conflict(f"notification {nid} has no waiting delivery to cancel"
                               + (f" (deliveries: {', '.join(f'{e}:{s}' for e, s in states.items())})"
                                  if states else ""))
        cancelled: list[str] = []
        for name in names:
            ep = self.endpoint(name)
            entry = audit.entry("cancel", origin, target=f"{nid}:{ep.name}", at_ms=self.now_ms())
            code, _, detail = await self._call("cancel", ep, entry, nid, origin.label())
            if code != "ok":
                raise self._refuse(code, ep.name, nid, detail)
            cancelled.append(ep.name)
        return {"id": nid, "cancelled": cancelled, "count": len(cancelled), "by": origin.label()}

    async def cancel_endpoint(self, ep: Endpoint, origin: audit.Origin, reason: str) -> int:
        """Cancel every waiting delivery of ``ep`` (a reload removed it). Audited only if any were."""
        entry = audit.entry("cancel", origin, target=ep.name, at_ms=self.now_ms(), reason=reason)
        _, count, _ = await self._call("cancel_all", ep, entry, f"{origin.label()}: {reason}")
        return int(count)

    # -- counts for confirmations ------------------------------------------------------------

    async def waiting(self, nid: str, endpoint: str | None, *, retrying_only: bool) -> int:
        """How many of a notification's deliveries a retry (retrying ones) or a cancel (waiting ones) touches."""
        check_id(nid)
        eps = [self.endpoint(endpoint).name] if endpoint is not None else await self._routed(nid)
        wanted = ("retrying",) if retrying_only else k.WAITING
        return sum(1 for state in (await self._states(nid, eps)).values() if state in wanted)

    async def counts(self, name: str) -> dict[str, int]:
        """How many deliveries each endpoint action would touch (the dashboard's confirmations)."""
        ep = self.endpoint(name)
        async with self.redis.pipeline(transaction=False) as pipe:
            for state in ("pending", "retrying", "paused"):
                pipe.zcard(k.ep_state(ep.name, state))
            pending, retrying, paused = await pipe.execute()
        return {"pause": int(pending) + int(retrying), "resume": int(paused),
                "retry": min(1, int(retrying)) if not ep.concurrent else int(retrying)}

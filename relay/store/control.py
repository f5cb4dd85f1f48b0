"""Steering deliveries: pause and resume an endpoint, retry now, cancel. Shared by the API, CLI and dashboard.

An action on one notification is one call of ``relay/store/lua/control.lua``, which also pushes the
action's audit entry (relay/store/audit.py). An action on a whole endpoint (pause, resume, retry all) is
a call per page of ``CONTROL_PAGE`` deliveries, so none holds Redis (the ingress with it) for longer as
the backlog grows; each page is atomic and the action idempotent, so repeating an action a crash cut
short finishes it; its audit entry comes with the last page. The state lives in Redis, so every process
sees it at once:

- a paused endpoint is a field of ``relay:paused``; its waiting deliveries are in state ``paused``,
  the claim script gives it nothing and the fan-out parks new work as ``paused``. Resume puts each
  back in the state it had and adds the paused time to its ``paused_ms``, which the retry window
  does not count (workers/schedule.py).
- retry now makes a retrying delivery due now. On a serial endpoint only the head is ever sent, so it
  makes the head due: the order of receipt holds.
- cancel takes a waiting delivery out of its queue as ``cancelled``, with who and when; it is not a
  failure and can be resent.

Every action decides from Redis, never from the caller's configuration (which may not be reloaded
yet): serial or concurrent is each delivery's recorded ``mode``, a notification's endpoints are its
routed ``eps``, and an endpoint any worker runs (``relay:endpoints``) can be named. A delivery that
retention expired is never written back; its stale index entries are dropped. An action on one
notification's deliveries to several endpoints is one atomic call that acts on each one it can and
answers which were done and why the others were not (``refused``).
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
from relay.store.queries import BadParam, Conflict, NotFound, check_id
from relay.store.scripts import script
from relay.store.wire import CONTROL
from relay.timefmt import iso_millis

# deliveries one cancel_removed call looks at (~10 Redis commands each: a few ms of Redis at most)
REMOVED_PAGE = 500
# deliveries one call of a paged action (pause, resume, retry all) moves: under 1 ms of Redis (500 took
# 4 ms, up to 33 ms on a busy machine; SLOWLOG's line is 10 ms)
CONTROL_PAGE = 100

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
        self._script = script(CONTROL)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def endpoint(self, name: object) -> Endpoint:
        """A configured endpoint (for confirmations and counts; the actions themselves ask Redis)."""
        if not isinstance(name, str):
            raise BadParam("endpoint", name, "expected an endpoint name")
        ep = self.settings.endpoints.get(name)
        if ep is None:
            known = ", ".join(sorted(self.settings.endpoints)) or "none"
            raise NotFound(f"no endpoint {name!r} is configured (configured: {known})")
        return ep

    async def _name(self, name: object, *, removed_ok: bool = False) -> str:
        """An endpoint an action may name: configured here or in any worker (``relay:endpoints``), so a
        caller whose config is not yet reloaded acts as the workers do; a removed one where
        ``removed_ok`` (its deliveries can still be cancelled)."""
        if not isinstance(name, str):
            raise BadParam("endpoint", name, "expected an endpoint name")
        if name in self.settings.endpoints or await self.redis.hexists(k.EP_REGISTRY, name):  # type: ignore[misc]
            return name
        if await self.redis.hexists(k.EP_REMOVED, name):  # type: ignore[misc]
            if removed_ok:
                return name
            raise Conflict(f"endpoint {name!r} was removed from the configuration; its waiting work was cancelled")
        self.endpoint(name)  # raises NotFound listing the configured ones
        return name

    async def _call(
        self, action: str, ep: str, entry: dict[str, Any] | None, **named: str | int
    ) -> tuple[str, int, str]:
        """One control.lua call; ``named``: the action's own ARGV (relay/store/wire.py CONTROL)."""
        raw = await self._script(
            keys=CONTROL.pack_keys(paused=k.PAUSED, audit=k.AUDIT),
            args=CONTROL.pack_args(
                action=action, ep=ep, audit=audit.encode(entry) if entry else "", audit_cap=k.AUDIT_CAP, **named
            ),
            client=self.redis,
        )
        return raw[0].decode(), int(raw[1]), raw[2].decode()

    def _refuse(self, code: str, ep: str, nid: str = "", detail: str = "") -> Conflict | NotFound:
        message = REFUSALS[code].format(ep=ep, nid=nid, detail=detail)
        return NotFound(message) if code == "missing" else Conflict(message)

    # -- pause and resume --------------------------------------------------------------------

    async def pause(self, name: str, origin: audit.Origin) -> dict[str, Any]:
        """Pause an endpoint: its flag, then its waiting deliveries as ``paused``, a page a call. Pausing
        a paused endpoint answers ``already`` and moves what a pause cut short left waiting."""
        ep = await self._name(name)
        entry = audit.entry("pause", origin, target=ep, at_ms=self.now_ms())
        who = json.dumps({"at": entry["at"], "by": origin.label()})
        already: bool | None = None
        count = 0
        for _ in range(await self._pages(ep, "pending", "retrying")):
            always = "0" if already else "1"
            _, n, detail = await self._call("pause", ep, entry, who=who, page=CONTROL_PAGE, done=count, always=always)
            doc = json.loads(detail)
            already = doc["already"] if already is None else already
            count += n
            if not doc["more"]:
                break
        else:
            raise Conflict(f"pausing {ep} did not finish (its deliveries keep arriving): pause it again")
        state = await self.pause_state(ep)
        return {"endpoint": ep, "paused": True, "already": bool(already), "count": count, **state}

    async def resume(self, name: str, origin: audit.Origin) -> dict[str, Any]:
        """Resume an endpoint: its paused deliveries back a page a call, its flag with the last page."""
        ep = await self._name(name)
        entry = audit.entry("resume", origin, target=ep, at_ms=self.now_ms())
        count = 0
        for _ in range(await self._pages(ep, "paused")):
            code, n, detail = await self._call("resume", ep, entry, page=CONTROL_PAGE, done=count)
            if code != "ok":
                raise self._refuse(code, ep)
            count += n
            if not json.loads(detail)["more"]:
                break
        else:
            raise Conflict(f"resuming {ep} did not finish (its deliveries keep arriving): resume it again")
        return {"endpoint": ep, "paused": False, "count": count}

    async def _pages(self, ep: str, *states: str) -> int:
        """A bound on the calls a paged action takes: its deliveries now, and room for what arrives meanwhile."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for state in states:
                pipe.zcard(k.ep_state(ep, state))
            sizes = await pipe.execute()
        return sum(int(n) for n in sizes) // CONTROL_PAGE + 100

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
        return {"paused_since": iso_millis(info["since"]), "paused_by": info["by"]}

    # -- retry now ---------------------------------------------------------------------------

    async def retry(
        self, origin: audit.Origin, *, endpoint: str | None = None, nid: str | None = None
    ) -> dict[str, Any]:
        """Make retrying deliveries due now: one notification's (to ``endpoint``, or to each of its
        endpoints that has one retrying), or every one of ``endpoint``."""
        if nid is None:
            if endpoint is None:
                raise BadParam("endpoint", None, "name an endpoint, a notification, or both")
            return await self._retry_all(await self._name(endpoint), origin)
        check_id(nid)
        names = [await self._name(endpoint)] if endpoint is not None else await self._retrying_eps(nid)
        entry = audit.entry("retry", origin, target=nid, at_ms=self.now_ms())
        count, done, refused = await self._each("retry", nid, names, entry)
        return {"id": nid, "endpoints": done, "count": count, **({"refused": refused} if refused else {})}

    async def _retry_all(self, ep: str, origin: audit.Origin) -> dict[str, Any]:
        """Every retrying delivery of ``ep`` due now, a page a call from a cursor; only the deliveries
        retrying when it began (a rerun after a crash makes some due twice, which is harmless)."""
        entry = audit.entry("retry", origin, target=ep, at_ms=self.now_ms())
        count, head, cursor, upto = 0, "", "", ""
        for _ in range(await self._pages(ep, "retrying")):
            code, n, detail = await self._call(
                "retry", ep, entry, nid="", page=CONTROL_PAGE, done=count, cursor=cursor, upto=upto
            )
            if code != "ok":
                raise self._refuse(code, ep)
            doc = json.loads(detail)
            count, head, cursor, upto = count + n, head or doc["head"], doc["cursor"], doc["upto"]
            if not doc["more"]:
                break
        return {"endpoint": ep, "count": count, **({"head": head} if head else {})}

    async def _each(
        self, action: str, nid: str, names: list[str], entry: dict[str, Any], **named: str
    ) -> tuple[int, dict[str, int], dict[str, str]]:
        """One call for every endpoint: each that can be is acted on, atomically, and the answer says
        exactly which were and why the others were not. Nothing done at all is a refusal."""
        _, count, detail = await self._call(action, ",".join(names), entry, nid=nid, **named)
        report: dict[str, dict[str, Any]] = json.loads(detail)
        done = {ep: int(report[ep]["count"]) for ep in names if report[ep]["code"] == "ok"}
        refusals = {ep: self._refuse(r["code"], ep, nid, r["detail"]) for ep, r in report.items() if r["code"] != "ok"}
        if not done:
            first = next(iter(refusals.values()))
            if len(refusals) == 1:
                raise first
            raise Conflict("; ".join(str(e) for e in refusals.values()))
        return count, done, {ep: str(e) for ep, e in refusals.items()}

    async def _retrying_eps(self, nid: str) -> list[str]:
        eps = await self._routed(nid)
        states = await self._states(nid, eps)
        found = [ep for ep, state in states.items() if state == "retrying"]
        if not found:
            raise Conflict(
                f"notification {nid} has no retrying delivery"
                + (f" (deliveries: {', '.join(f'{e}:{s}' for e, s in states.items())})" if states else "")
            )
        return found

    async def _routed(self, nid: str) -> list[str]:
        """The endpoints the fan-out routed it to, as Redis has them (not filtered by the caller's config)."""
        raw = await self.redis.hget(k.notification(nid), "eps")  # type: ignore[misc]
        if raw is None:
            if not await self.redis.exists(k.notification(nid)):
                raise NotFound(f"no notification {nid!r}")
            raise Conflict(f"notification {nid} is not routed yet")
        return [ep for ep in raw.decode().split(",") if ep]

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
            names = [await self._name(endpoint, removed_ok=True)]
        else:
            states = await self._states(nid, await self._routed(nid))
            names = [ep for ep, state in states.items() if state in k.WAITING]
            if not names:
                raise Conflict(
                    f"notification {nid} has no waiting delivery to cancel"
                    + (f" (deliveries: {', '.join(f'{e}:{s}' for e, s in states.items())})" if states else "")
                )
        entry = audit.entry("cancel", origin, target=nid, at_ms=self.now_ms())
        _, done, refused = await self._each("cancel", nid, names, entry, who=origin.label())
        return {
            "id": nid,
            "cancelled": list(done),
            "count": len(done),
            "by": origin.label(),
            **({"refused": refused} if refused else {}),
        }

    async def cancel_removed(
        self, name: str, upto_seq: int, origin: audit.Origin, *, in_flight_only: bool = False
    ) -> tuple[int, int]:
        """Cancel the work of a removed endpoint routed up to ``upto_seq`` (the removal's): waiting
        deliveries, and in-flight ones whose lease ran out (their worker died); those still leased
        leave its queue and are left to finish. Returns (cancelled, still in flight). Audited once,
        only if any were cancelled.

        In pages of ``REMOVED_PAGE`` per script call: it runs at a reload, at every worker start and
        before a re-add, and one call over a removed endpoint's whole backlog (or a re-added one's live
        work, which it passes over) held Redis, the ingress with it, for as long. Each page is atomic;
        a page left undone by a crash is done by the next sweep or start."""
        who = f"{origin.label()}: endpoint removed"
        count = left = 0
        for state in ("in_flight",) if in_flight_only else ("pending", "retrying", "paused", "in_flight"):
            offset = 0
            size = int(await self.redis.zcard(k.ep_state(name, state)))
            if not size:
                continue  # the sweeper asks every minute while the removal is on record: mostly nothing
            for _ in range(size // REMOVED_PAGE + 2):  # bounded: what arrives meanwhile is a later page's
                _, n, detail = await self._call(
                    "cancel_removed",
                    name,
                    None,
                    who=who,
                    upto=upto_seq,
                    from_state=state,
                    offset=offset,
                    page=REMOVED_PAGE,
                )
                still, kept, examined = (int(x) for x in detail.split(","))
                count, left, offset = count + n, left + still, offset + kept
                if examined < REMOVED_PAGE:
                    break
        if count:
            await audit.record(
                self.redis,
                audit.entry("cancel", origin, target=name, count=count, at_ms=self.now_ms(), reason="endpoint removed"),
            )
        return count, left

    # -- counts for confirmations ------------------------------------------------------------

    async def waiting(self, nid: str, endpoint: str | None, *, retrying_only: bool) -> int:
        """How many of a notification's deliveries a retry (retrying ones) or a cancel (waiting ones) touches."""
        check_id(nid)
        eps = [await self._name(endpoint, removed_ok=True)] if endpoint is not None else await self._routed(nid)
        wanted = ("retrying",) if retrying_only else k.WAITING
        return sum(1 for state in (await self._states(nid, eps)).values() if state in wanted)

    async def counts(self, name: str) -> dict[str, int]:
        """How many deliveries each endpoint action would touch (the dashboard's and the CLI's
        confirmations): of an endpoint configured here or run by a worker, as the actions accept."""
        ep = await self._name(name)
        async with self.redis.pipeline(transaction=False) as pipe:
            for state in ("pending", "retrying", "paused"):
                pipe.zcard(k.ep_state(ep, state))
            pipe.zrange(k.ep_queue(ep), 0, 0)
            pending, retrying, paused, head = await pipe.execute()
        # serial as the queued work records it, not as this process's config says (it may not be reloaded)
        mode = await self.redis.hget(k.delivery(head[0].decode(), ep), "mode") if head else None  # type: ignore[misc]
        serial = mode == b"serial"
        return {
            "pause": int(pending) + int(retrying),
            "resume": int(paused),
            "retry": min(1, int(retrying)) if serial else int(retrying),
        }

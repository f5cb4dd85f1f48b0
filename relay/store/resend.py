"""Resending notifications, as 2Checkout does: the original bytes, queued, recorded as a new notification.

A resend of original ``X`` is the notification ``X~r{n}`` (``n`` from ``relay:resend-seq:X``) with
``resend_of = X`` and ``targets``, queued for its fan-out (relay:fanout) by ``relay/store/lua/resend.lua`` in one
atomic call. A resend of a resend is a resend of its original. Each resend is delivered under a
``webhook-id`` of its own (``X~r{n}:{endpoint}``) with ``Relay-Resend-Of: X``, so a receiver that drops
duplicates by ``webhook-id`` processes it. With an idempotency key, ``relay:idem:{key}`` (SET NX, one
day) pins the request, and ``relay:idem:{key}:map`` records the resend made for each original, so a
retried request, even one cut off half way, resends each original at most once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import structlog
from redis.asyncio import Redis

from config.settings import Endpoint, Settings
from relay import constants as k
from relay import routing
from relay.store import audit, endpoints
from relay.store.queries import (
    BadParam,
    Conflict,
    Filters,
    NotFound,
    Row,
    TooBroad,
    check_id,
    load_rows,
    scan,
)
from relay.store.resend_records import (
    BULK_MAX,
    BULK_SCAN_BUDGET,
    CHUNK,
    FACTS,
    IDEMPOTENCY_TTL_MS,
    Original,
    Plan,
    Resent,
    Skip,
    bulk_target,
    check_bulk_selection,
    in_hand,
    resend_answer,
)
from relay.store.scripts import script
from relay.store.wire import RESEND

logger = structlog.get_logger()


class Resender:
    """Queues resends; shared by the admin API and the CLI."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        # no clock: every time a resend records comes from Redis's (resend.lua's now_ms)
        self.redis = redis
        self.settings = settings
        self.retention_ms = settings.delivery.retention_ms
        self._script = script(RESEND)
        # the endpoints the workers run (relay:endpoints), read at each request; None: no worker has
        # registered any yet, so this process's configuration is all there is to go by
        self._running: frozenset[str] | None = None
        # ...and, by their routing rule, those this caller's file lacks (edited, not yet reloaded)
        self._extra: dict[str, Endpoint] = {}

    def follow(self, settings: Settings) -> None:
        """A config reload: resend to the endpoints configured now."""
        self.settings = settings
        self.retention_ms = settings.delivery.retention_ms

    # -- entry points ------------------------------------------------------------------------

    async def one(
        self,
        nid: str,
        *,
        endpoint: str | None = None,
        endpoints: Sequence[str] = (),
        idempotency_key: str | None = None,
        origin: audit.Origin | None = None,
    ) -> dict[str, Any]:
        """Resend one notification (or, given a resend, its original) to ``endpoint``, to ``endpoints``
        (e.g. those where it failed), or to every endpoint that receives it. Raises NotFound, Conflict,
        BadParam."""
        check_id(nid)
        await self._load_running()
        self._configured("endpoint", endpoint)
        for name in endpoints:
            self._configured("endpoint", name)

        async def work(idem_map: str) -> dict[str, Any]:
            original = (await self._originals([nid]))[0]
            if isinstance(original, Skip):
                raise NotFound(original.reason)
            if endpoints:
                chosen = [self._targets(original, name) for name in endpoints]
                targets = tuple(t for ts, _ in chosen for t in ts)
                reason = "; ".join(why for ts, why in chosen if not ts)
                if reason:
                    raise Conflict(f"cannot resend {original.nid}: {reason}")
            else:
                targets, reason = self._targets(original, endpoint)
            if not targets:
                raise Conflict(f"cannot resend {original.nid}: {reason}")
            outcome = (await self._queue([(original, targets)], idem_map))[0]
            if isinstance(outcome, Skip):
                raise NotFound(outcome.reason)
            return outcome.as_json()

        request = {"route": "one", "id": nid, "endpoint": endpoint, "endpoints": list(endpoints)}
        result = await self._idempotent(idempotency_key, request, work)
        await self._audit(origin, result, target=nid, resends=[result])
        return result

    async def bulk(
        self,
        *,
        ids: Sequence[str] | None = None,
        filters: Filters | None = None,
        endpoint: str | None = None,
        dry_run: bool = False,
        idempotency_key: str | None = None,
        origin: audit.Origin | None = None,
    ) -> dict[str, Any]:
        """Resend each original named by ``ids`` or selected by ``filters`` once.

        With ``filters``, an original whose earlier resend already carries it to a target endpoint
        (pending, in flight, retrying, paused or delivered) is skipped for that endpoint, so running the same
        bulk resend twice does not send twice.
        """
        check_bulk_selection(ids, filters)
        await self._load_running()
        self._configured("endpoint", endpoint)
        endpoint, newcomers = await self._bulk_endpoint(endpoint, filters)

        async def work(idem_map: str) -> dict[str, Any]:
            plan, skipped = await self._plan(ids, filters, endpoint, newcomers=newcomers)
            if dry_run:
                return resend_answer([], skipped, count=len(plan), dry_run=True)
            outcomes = await self._queue(plan, idem_map)
            resent = [o for o in outcomes if isinstance(o, Resent)]
            skipped += [o for o in outcomes if isinstance(o, Skip)]
            logger.info(
                "bulk_resend_queued",
                count=len(resent),
                skipped=len(skipped),
                by="ids" if ids is not None else "filter",
                endpoint=endpoint,
            )
            return resend_answer(resent, skipped, count=len(resent), dry_run=False)

        if dry_run:
            return await work("")
        request = {
            "route": "bulk",
            "ids": list(ids) if ids is not None else None,
            "filter": filters.fingerprint() if filters is not None else None,
            "endpoint": endpoint,
        }
        result = await self._idempotent(idempotency_key, request, work)
        await self._audit(origin, result, target=bulk_target(ids, filters), resends=result["resends"])
        return result

    async def _bulk_endpoint(self, endpoint: str | None, filters: Filters | None) -> tuple[str | None, bool]:
        """The endpoint a bulk resend is limited to, and whether it goes to newcomers only: selected by a
        removed endpoint's name (a rename's old name), a notification is resent to the endpoints that
        receive it now and were not routed it when it arrived, unless ``endpoint`` names one."""
        if endpoint is None and filters is not None and filters.endpoint is not None:
            if filters.endpoint in self.settings.endpoints or filters.endpoint in self._extra:
                return filters.endpoint, False
            if filters.endpoint in await endpoints.removed_names(self.redis):
                return None, True
            self._configured("filter.endpoint", filters.endpoint)
        return endpoint, False

    async def _audit(
        self, origin: audit.Origin | None, result: dict[str, Any], *, target: str, resends: list[dict[str, Any]]
    ) -> None:
        """One audit entry per request; a replayed idempotent request did nothing new, so it has none."""
        if origin is None or result.get("replayed"):
            return
        count = sum(len(r["targets"]) for r in resends)
        await audit.record(self.redis, audit.entry("resend", origin, target=target, count=count, resends=len(resends)))

    # -- selection ---------------------------------------------------------------------------

    async def _plan(
        self, ids: Sequence[str] | None, filters: Filters | None, endpoint: str | None, *, newcomers: bool = False
    ) -> tuple[Plan, list[Skip]]:
        skipped: list[Skip] = []
        if ids is not None:
            named = list(dict.fromkeys(ids))
            resolved = await self._originals(named)
        else:
            assert filters is not None
            page = await scan(
                self.redis,
                filters,
                limit=BULK_MAX + 1,
                budget=BULK_SCAN_BUDGET,
                endpoints=list(self.settings.endpoints),
            )
            if page.next_cursor is not None:
                raise TooBroad(
                    f"the filter selects more than {BULK_MAX} notifications (or more than "
                    f"{BULK_SCAN_BUDGET} to look at); narrow it with since and until"
                )
            roots = list(dict.fromkeys(row.fields.get("resend_of") or row.nid for row in page.items))
            resolved = await self._originals(roots)
        plan: Plan = []
        seen: set[str] = set()
        for item in resolved:
            if isinstance(item, Skip):
                skipped.append(item)
                continue
            if item.nid in seen:
                continue
            seen.add(item.nid)
            targets, reason = self._targets(item, endpoint)
            if newcomers:
                targets = tuple(t for t in targets if t not in item.routed)
                reason = reason or "every endpoint that receives it now was routed it when it arrived"
            if targets:
                plan.append((item, targets))
            else:
                skipped.append(Skip(item.nid, reason))
        if filters is not None:
            plan, superseded = await self._dropin_hand(plan)
            skipped += superseded
        return plan, skipped

    async def _originals(self, nids: Sequence[str]) -> list[Original | Skip]:
        """Each id's original (a resend maps to the notification it resends), or why there is none."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for nid in nids:
                pipe.hmget(k.notification(nid), ["recv", "resend_of"])
            heads = await pipe.execute()
        roots: list[str | Skip] = []
        for nid, (recv, resend_of) in zip(nids, heads, strict=True):
            if recv is None:
                roots.append(Skip(nid, f"no notification {nid!r} (never received, or past retention)"))
            else:
                roots.append(resend_of.decode() if resend_of else nid)
        wanted = [r for r in roots if isinstance(r, str)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for nid in wanted:
                pipe.hmget(k.notification(nid), list(FACTS))
            facts = dict(zip(wanted, await pipe.execute(), strict=True))
        out: list[Original | Skip] = []
        for nid, root in zip(nids, roots, strict=True):
            if isinstance(root, Skip):
                out.append(root)
                continue
            values = [(v or b"").decode("utf-8", "replace") for v in facts[root]]
            source, channel, ref, mtype, status, test, _, etype, eps = values
            if not source:
                out.append(Skip(nid, f"the original {root!r} of {nid!r} is gone (past retention)"))
            else:
                out.append(
                    Original(
                        root,
                        source,
                        channel,
                        ref,
                        mtype,
                        status,
                        test == "1",
                        etype,
                        tuple(e for e in eps.split(",") if e),
                    )
                )
        return out

    def _targets(self, n: Original, endpoint: str | None) -> tuple[tuple[str, ...], str]:
        routes = routing.route(
            [*self.settings.endpoints.values(), *self._extra.values()],
            source=n.source,
            channel=n.channel,
            mtype=n.mtype,
            status=n.status,
            test=n.test,
            etype=n.etype,
        )
        if endpoint is not None:
            if endpoint not in {name for name, _, _ in routes}:
                return (), f"endpoint {endpoint!r} does not receive source {n.source!r} channel {n.channel!r}"
            return (endpoint,), ""
        names = tuple(name for name, mode, _ in routes if mode != "skip" and self._runs(name))
        if names:
            return names, ""
        why = "; ".join(f"{name}: {reason}" for name, _, reason in routes)
        idle = [name for name, mode, _ in routes if mode != "skip" and not self._runs(name)]
        if idle:
            why = "; ".join([*([why] if why else []), *(f"{name}: run by no worker yet" for name in idle)])
        return (), "no configured endpoint receives it now" + (f" ({why})" if why else "")

    def _runs(self, name: str) -> bool:
        return self._running is None or name in self._running

    async def _load_running(self) -> None:
        """What the workers run: a resend to an endpoint only this caller's file has (edited, not yet
        reloaded) was queued, reported, and routed to nobody, since the fan-out routes what it runs."""
        running = await endpoints.running(self.redis)
        self._running = frozenset(running) if running else None
        self._extra = {name: ep for name, ep in running.items() if name not in self.settings.endpoints}

    async def _dropin_hand(self, plan: Plan) -> tuple[Plan, list[Skip]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for original, _ in plan:
                pipe.zrange(k.resends(original.nid), 0, -1, withscores=True)
            earlier = await pipe.execute() if plan else []
        rows = await load_rows(self.redis, [(m.decode(), int(s)) for found in earlier for m, s in found])
        by_original: dict[str, list[Row]] = {}
        for row in rows:
            by_original.setdefault(row.fields.get("resend_of", ""), []).append(row)
        kept: Plan = []
        skipped: list[Skip] = []
        for original, targets in plan:
            left = tuple(ep for ep in targets if not in_hand(by_original.get(original.nid, []), ep))
            if left:
                kept.append((original, left))
            else:
                skipped.append(
                    Skip(
                        original.nid,
                        "already resent: an earlier resend is pending, in flight, retrying, paused or delivered",
                    )
                )
        return kept, skipped

    def _configured(self, param: str, endpoint: str | None) -> None:
        if endpoint is not None and endpoint not in self.settings.endpoints and endpoint not in self._extra:
            known = ", ".join(sorted({*self.settings.endpoints, *self._extra})) or "none"
            raise BadParam(param, endpoint, f"not a configured endpoint (configured: {known})")
        if endpoint is not None and not self._runs(endpoint):
            raise BadParam(
                param,
                endpoint,
                "configured in this file but run by no worker yet: apply the file with relay reload first",
            )

    # -- writing -----------------------------------------------------------------------------

    async def _queue(self, plan: Plan, idem_map: str) -> list[Resent | Skip]:
        out: list[Resent | Skip] = []
        if idem_map and plan:
            out, plan = await self._queued_before(plan, idem_map)
        for start in range(0, len(plan), CHUNK):
            out += await self._queue_chunk(plan[start : start + CHUNK], idem_map)
        return out

    async def _queued_before(self, plan: Plan, idem_map: str) -> tuple[list[Resent | Skip], Plan]:
        """A retry: what the earlier try already queued is answered from the map (the script checks
        again, atomically, for a retry racing its first try); the rest of the plan is left to queue."""
        done = await cast(
            Awaitable[list[bytes | None]], self.redis.hmget(idem_map, [original.nid for original, _ in plan])
        )
        answered: list[Resent | Skip] = [
            Resent(nid.decode(), original.nid, targets)
            for (original, targets), nid in zip(plan, done, strict=True)
            if nid is not None
        ]
        return answered, [item for item, nid in zip(plan, done, strict=True) if nid is None]

    async def _queue_chunk(self, chunk: Plan, idem_map: str) -> list[Resent | Skip]:
        """Number each resend, then write each and queue it for its fan-out (resend.lua), a pipeline of each."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for original, _ in chunk:
                pipe.incr(k.resend_seq(original.nid))
                pipe.pexpire(k.resend_seq(original.nid), self.retention_ms)
            numbers = (await pipe.execute())[0::2]
        async with self.redis.pipeline(transaction=False) as pipe:
            for (original, targets), n in zip(chunk, numbers, strict=True):
                await self._resend_call(pipe, original, targets, f"{original.nid}~r{n}", idem_map)
            results = await pipe.execute()
        out: list[Resent | Skip] = []
        for (original, targets), (status, nid_raw) in zip(chunk, results, strict=True):
            nid = nid_raw.decode()
            if status == b"gone":
                out.append(Skip(original.nid, f"no notification {original.nid!r} (past retention)"))
                continue
            out.append(Resent(nid, original.nid, targets))
            logger.info(
                "resend_queued", nid=nid, resend_of=original.nid, targets=list(targets), reused=status == b"reused"
            )
        return out

    async def _resend_call(
        self, pipe: Any, original: Original, targets: tuple[str, ...], nid: str, idem_map: str
    ) -> None:
        """Queue on ``pipe`` the resend.lua call that writes resend ``nid`` of ``original``."""
        await self._script(
            keys=RESEND.pack_keys(
                original=k.notification(original.nid),
                notification=k.notification(nid),
                seq=k.SEQ,
                ix_all=k.IDX_ALL,
                ix_channel=k.idx_channel(original.channel),
                ix_source=k.idx_source(original.source),
                ix_ref=k.idx_ref(original.ref) if original.ref else "",
                fanout=k.FANOUT,
                resends=k.resends(original.nid),
                idempotency=idem_map,
                ix_type=k.idx_type(original.etype) if original.etype else "",
                original_body=k.body(original.nid),
                body=k.body(nid),
            ),
            args=RESEND.pack_args(
                original_nid=original.nid,
                nid=nid,
                retention_ms=self.retention_ms,
                targets=",".join(targets),
                idempotency_ttl_ms=IDEMPOTENCY_TTL_MS,
            ),
            client=pipe,
        )

    async def _idempotent(
        self, key: str | None, request: dict[str, Any], work: Callable[[str], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        if key is None:
            return await work("")
        claim, idem_map, stored = k.idempotency(key)
        fingerprint = hashlib.blake2b(json.dumps(request, sort_keys=True).encode(), digest_size=16).hexdigest()
        if not await self.redis.set(claim, fingerprint, nx=True, px=IDEMPOTENCY_TTL_MS):
            previous = await self.redis.get(claim)
            if previous is not None and previous.decode() != fingerprint:
                raise Conflict(
                    f"idempotency_key {key!r} was already used for a different request "
                    "in the last 24 hours; use a new key"
                )
            answer = await self.redis.get(stored)
            if answer is not None:
                logger.info("resend_replayed", idempotency_key=key)
                return {**json.loads(answer), "replayed": True}
        # an earlier try that stopped half way left its map: the originals it resent are reused
        result = await work(idem_map)
        await self.redis.set(stored, json.dumps(result, separators=(",", ":")), px=IDEMPOTENCY_TTL_MS)
        return result

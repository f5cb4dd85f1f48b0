"""The fan-out: notifications taken from ``relay:fanout`` in batches and routed to their endpoints.

Each worker runs one fan-out loop (``run``): it claims up to ``BATCH`` notifications under a lease
(fanclaim.lua, one round trip that also reads what routing needs), decides each one's routes
(relay/routing.py, in Python) and writes them all with one route.lua call. A notification stays in
``relay:fanout`` until routed, so one whose worker is killed mid-batch is claimed again by any worker
once its lease runs out (``LEASE_MS``); route.lua creates each delivery record once, so routing it
twice, or beside an old ingress's ARQ job (``fan_out``), changes nothing.

The loop wakes on a new notification at once: every ingest (and resend) increments ``relay:seq``, which
the worker's tracking connection watches (workers/wake.py); without it, it polls every ``POLL_S``.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from relay import constants as k
from relay import events, protocol, routing
from relay.store import body as stored_body
from relay.store.connection import REDIS_ERRORS
from relay.store.scripts import script
from workers import removed, wire

if TYPE_CHECKING:
    from workers.engine import Engine

logger = structlog.get_logger()

# notifications claimed and routed per call: at 8 endpoints one route.lua call of a full batch writes
# ~2,000 commands, about a millisecond inside Redis, where a script blocks every other client
BATCH = 64
# a batch not routed by then (its worker killed or stalled) is claimed again by any worker; routing is
# quick, so this only bounds how long a killed worker's batch waits (and the serial lanes behind it)
LEASE_MS = 3_000
# with the wake (workers/wake.py): only a lapsed lease needs looking for. Without it: every 5 ms, as
# ARQ polled for the fan-out jobs this loop replaced
IDLE_S, POLL_S = 1.0, 0.005


@dataclass(slots=True)
class Waiting:
    """One notification claimed for its fan-out: its FANOUT_FIELDS values, and its body as stored if read
    (plain, compressed), restored only when routing reads it: one that does not restore fails its own
    routing, not its batch's claim."""

    nid: str
    values: list[bytes | None]
    stored: tuple[bytes | None, bytes | None] = (None, None)

    @property
    def body(self) -> bytes | None:
        try:
            return _body(*self.stored)
        except zlib.error as exc:
            # routed as if it had none (no `match` passes, no type from it): its deliveries then fail,
            # visibly, at their first attempt (workers/step.py). Left unrouted, it would hold every
            # serial lane behind it (they wait for older notifications' fan-out) until someone acted
            logger.warning("fanout_body_unreadable", nid=self.nid, error=str(exc))
            return None

    def field(self, name: str) -> str:
        value = self.values[_AT[name]]
        return value.decode() if value is not None else ""

    def compressed(self) -> bytes:
        """Its body compressed, for route.lua to store in place of the one the ingress stored as received
        (relay/store/body.py); b"" when it is compressed already, or compressing would not shrink it."""
        plain = self.stored[0]
        if self.values[_AT["braw"]] is None or plain is None:
            return b""
        return stored_body.pack(plain) or b""


_AT = {name: i for i, name in enumerate(wire.FANOUT_FIELDS)}
_WIDTH = len(wire.FANOUT_FIELDS) + 3  # nid, the fields, the body as stored (plain, compressed)


def _body(plain: bytes | None, packed: bytes | None) -> bytes | None:
    """The original bytes of a body fanclaim.lua read (relay/store/body.py), None when it read none."""
    return None if plain is None and packed is None else stored_body.restore(plain, packed)


def wants_body(engine: Engine) -> bool:
    """Only an endpoint with a ``match`` needs the event document, and so the body."""
    return any(ep.match is not None for ep in engine.settings.endpoints.values())


async def claim(engine: Engine, batch: int = BATCH) -> list[Waiting]:
    """Up to ``batch`` notifications waiting for their fan-out, oldest first, leased to this worker."""
    raw: list[Any] = await script(wire.FANCLAIM)(
        keys=wire.FANCLAIM.pack_keys(fanout=k.FANOUT, lease=k.FANOUT_LEASE),
        args=wire.FANCLAIM.pack_args(batch=batch, lease_ms=LEASE_MS, body=int(wants_body(engine))),
        client=engine.redis,
    )
    return [
        Waiting(raw[i].decode(), raw[i + 1 : i + _WIDTH - 2], (raw[i + _WIDTH - 2], raw[i + _WIDTH - 1]))
        for i in range(1, 1 + int(raw[0]) * _WIDTH, _WIDTH)
    ]


async def fan_out(engine: Engine, nid: str) -> int | None:
    """Route ``nid`` alone (an old ingress's ARQ job, tests); the delivery records created (-1: gone,
    None: it cannot be routed, left in relay:fanout)."""
    values = await engine.redis.hmget(k.notification(nid), list(wire.FANOUT_FIELDS))  # type: ignore[misc]
    body = None
    wanted = wants_body(engine) or values[_AT["type"]] is None or values[_AT["braw"]] is not None
    if values[_AT["seq"]] is not None and wanted:
        body = await stored_body.read(engine.redis, nid)
    [created] = await route(engine, [Waiting(nid, values, (body, None))])
    return created


async def route(engine: Engine, batch: list[Waiting]) -> list[int | None]:
    """Route ``batch`` in one route.lua call; per notification, the delivery records created (-1: gone).

    One whose routes cannot be decided (a body that does not decompress, a field that does not parse:
    bit rot, a hand edit) is left out (None), logged: it stays in relay:fanout, claimed again once its
    lease lapses and shown by `relay health`'s fan-out backlog, and never holds back the rest of its
    batch (a poison pill failing every claim that takes it would stop the whole fan-out).
    """
    keys = wire.ROUTE.pack_keys(fanout=k.FANOUT, lease=k.FANOUT_LEASE)
    args: list[str | int | bytes] = wire.ROUTE.pack_args(retention_ms=engine.retention_ms)
    woken: set[str] = set()
    routed: list[bool] = []
    for waiting in batch:
        try:
            routes = routes_of(engine, waiting)
        except Exception as exc:
            logger.error("fanout_unroutable", nid=waiting.nid, error=f"{type(exc).__name__}: {exc}")
            routed.append(False)
            continue
        routed.append(True)
        keys += (k.notification(waiting.nid), k.body(waiting.nid))
        # compressed here, off the ingress's CPU: one compression per notification, not per delivery
        args += (waiting.nid, len(routes), waiting.compressed())
        for name, mode, reason in routes:
            by_name = {"ep": name, "mode": mode, "reason": reason}
            args.extend(by_name[f] for f in wire.ROUTE_FIELDS)
            keys.extend(wire.route_keys(waiting.nid, name))
            if mode != "skip":
                woken.add(name)
    raw: list[Any] = await script(wire.ROUTE)(keys=keys, args=args, client=engine.redis)
    for name in woken:
        engine.wake(name)
    engine.unblock(int(raw[0]))
    created = iter(raw[1:])
    return [int(next(created)) if ok else None for ok in routed]


def routes_of(engine: Engine, waiting: Waiting) -> list[routing.Route]:
    """Where ``waiting`` goes (relay/routing.py), under the configuration this worker runs now."""
    if waiting.values[_AT["seq"]] is None:
        return []  # gone (past retention): route.lua takes it out of relay:fanout
    field = waiting.field
    source, channel, received = field("source"), field("channel"), int(field("recv") or 0)
    etype = field("type") if waiting.values[_AT["type"]] is not None else _event_type(channel, waiting.body)
    targets = field("targets")
    # an endpoint a reload added gets only what was received after it (resends carry their own recv)
    endpoints = [ep for name, ep in engine.settings.endpoints.items() if engine.added.get(name, 0) <= received]
    # and one removed after it was received gets a cancelled record, not nothing (workers/removed.py)
    gone = removed.endpoints(engine.removed, {ep.name for ep in endpoints}, int(field("seq") or 0))

    def document() -> Mapping[str, Any] | None:
        try:
            fields = protocol.parse_form(waiting.body or b"")
        except protocol.FormError:
            return None
        return events.build(
            nid=waiting.nid,
            source=source,
            channel=channel,
            received_ms=received,
            fields=fields,
            resend_of=field("resend_of"),
        )

    return removed.marked(
        routing.route(
            [*endpoints, *gone],
            source=source,
            channel=channel,
            mtype=field("mtype"),
            status=field("status"),
            test=field("test") == "1",
            etype=etype,
            only=frozenset(targets.split(",")) if targets else None,
            document=document,
        ),
        gone,
    )


def _event_type(channel: str, body: bytes | None) -> str:
    """The type of a notification stored before types were (it has no ``type`` field): from its body."""
    try:
        return events.event_type(channel, protocol.parse_form(body or b""))[0]
    except protocol.FormError:
        return events.UNMAPPED


async def run(engine: Engine) -> None:
    """The fan-out loop: claim a batch, route it, again while there is work; else wait for a wake.

    Ends when the engine stops, after the batch in hand is routed (a batch left half-done by a crash
    is routed again once its lease runs out). A Redis error backs off and tries again.
    """
    backoff = 0.1
    while not engine.stopping:
        signal = engine.fanout_signal
        signal.clear()  # before the claim: a notification stored after this wakes the wait below
        try:
            batch = await claim(engine)
            if batch:
                await route(engine, batch)
            backoff = 0.1
        except REDIS_ERRORS as exc:
            logger.warning("fanout_failed", error=type(exc).__name__, retry_in=backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            continue
        if len(batch) == BATCH:
            continue  # there may be more
        watched = engine.fanout_watch is not None and engine.fanout_watch.active
        try:
            await asyncio.wait_for(signal.wait(), IDLE_S if watched else POLL_S)
        except TimeoutError:
            pass

"""The fan-out: route one stored notification to its endpoints (relay/routing.py decides, route.lua
writes each delivery record once). Safe to run any number of times: ARQ runs jobs at least once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from relay import constants as k
from relay import events, protocol, routing
from relay.store.scripts import script
from workers import removed, wire

if TYPE_CHECKING:
    from workers.engine import Engine

_FIELDS = ["source", "channel", "mtype", "status", "test", "targets", "type", "recv", "seq", "resend_of"]


async def fan_out(engine: Engine, nid: str) -> int:
    """Route ``nid``; the number of delivery records created (-1: the notification is gone)."""
    redis = engine.redis
    source, channel, mtype, status, test, targets, etype, recv, seq, resend_of = await redis.hmget(  # type: ignore[misc]
        k.notification(nid), _FIELDS
    )
    if source is None:
        await redis.zrem(k.FANOUT, nid)
        engine.unblock(None)
        return -1
    if etype is None:
        etype = await _event_type(engine, nid, channel.decode())
    only = frozenset(targets.decode().split(",")) if targets else None
    received = int(recv or 0)
    # an endpoint a reload added gets only what was received after it (resends carry their own recv)
    endpoints = [ep for name, ep in engine.settings.endpoints.items() if engine.added.get(name, 0) <= received]
    # and one removed after it was received gets a cancelled record, not nothing (workers/removed.py)
    gone = removed.endpoints(engine.removed, {ep.name for ep in endpoints}, int(seq or 0))
    body: list[bytes] = []
    if any(ep.match is not None for ep in endpoints):
        # only an endpoint with a ``match`` needs the event document: the body is read for it alone
        body.append(await redis.hget(k.notification(nid), "body") or b"")  # type: ignore[misc]

    def document() -> Mapping[str, Any] | None:
        try:
            fields = protocol.parse_form(body[0] if body else b"")
        except protocol.FormError:
            return None
        return events.build(
            nid=nid,
            source=source.decode(),
            channel=channel.decode(),
            received_ms=received,
            fields=fields,
            resend_of=(resend_of or b"").decode(),
        )

    routes = removed.marked(
        routing.route(
            [*endpoints, *gone],
            source=source.decode(),
            channel=channel.decode(),
            mtype=(mtype or b"").decode(),
            status=(status or b"").decode(),
            test=test == b"1",
            etype=etype.decode(),
            only=only,
            document=document,
        ),
        gone,
    )
    keys = wire.ROUTE.pack_keys(notification=k.notification(nid), fanout=k.FANOUT)
    args = wire.ROUTE.pack_args(nid=nid, retention_ms=engine.retention_ms)
    for name, mode, reason in routes:
        by_name = {"ep": name, "mode": mode, "reason": reason}
        args.extend(by_name[f] for f in wire.ROUTE_FIELDS)
        keys.extend(wire.route_keys(nid, name))
    created, oldest = await script(wire.ROUTE)(keys=keys, args=args, client=engine.redis)
    for name, mode, _ in routes:
        if mode != "skip":
            engine.wake(name)
    engine.unblock(int(oldest))
    return int(created)


async def _event_type(engine: Engine, nid: str, channel: str) -> bytes:
    """The type of a notification stored before types were (it has no ``type`` field): from its body."""
    body = await engine.redis.hget(k.notification(nid), "body")  # type: ignore[misc]
    try:
        return events.event_type(channel, protocol.parse_form(body or b""))[0].encode()
    except protocol.FormError:
        return events.UNMAPPED.encode()

"""Which endpoints the relay has had: the configured ones, and the ones a reload or a restart removed.

Every worker registers its configured endpoints in ``relay:endpoints`` (name -> routing rule) when it
starts and when it reloads (relay/store/lua/endpoints.lua). An endpoint a reload drops, or one a
worker starts without (the file was edited and the worker restarted instead of reloaded), gets a
removal record in ``relay:ep-removed``: Redis's clock, the notification sequence number at that moment
(``seq``) and its routing rule. With it:

- its work routed up to ``seq`` ends ``cancelled`` (``endpoint removed``): at the reload, again by the
  sweeper until none is left (a delivery in flight when it was removed, a reload whose cancel failed),
  and before the endpoint runs again if it is re-added; work routed after a re-add (a higher seq) is
  never touched;
- a notification received up to ``seq`` but fanned out after the removal still gets a delivery to it,
  recorded as cancelled (workers/removed.py): an acknowledged notification is never routed to nobody
  without a record, even when a reload renames an endpoint (a removal and an addition);
- its name can still select deliveries (listings, resend filters) while the record is kept: retention.

Registering also takes any expiry off a configured endpoint's keys at once: the sweeper gives a
removed name's keys the retention period, and a re-added endpoint's queue must not expire under it.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from redis.asyncio import Redis

from config import match
from config.settings import Endpoint, Settings
from relay import constants as k
from relay.store import queries
from relay.store.scripts import script
from relay.store.wire import ENDPOINTS

RULE_FIELDS = (
    "sources",
    "channels",
    "concurrent",
    "mode",
    "event_types",
    "message_types",
    "order_statuses",
    "test_orders",
    "match",
)


@dataclass(frozen=True)
class Removed:
    name: str
    at: int  # ms, Redis's clock
    seq: int  # its work routed up to this notification sequence number is cancelled
    by: str  # reload | restart
    endpoint: Endpoint  # its routing rule as it was configured (nothing else of it is kept)


def rule(ep: Endpoint) -> str:
    """The part of an endpoint that decides what is routed to it, as JSON."""
    doc = {name: getattr(ep, name) for name in RULE_FIELDS}
    doc["match"] = match.raw(ep.match) if ep.match is not None else None
    return json.dumps(
        {name: sorted(v) if isinstance(v, frozenset) else v for name, v in doc.items()}, separators=(",", ":")
    )


def from_rule(name: str, raw: str) -> Endpoint:
    """An Endpoint that routes as the rule says (it is never sent to: no URL, no secret, so it is built
    without validation: an empty URL is not one the file could hold)."""
    doc = json.loads(raw)

    def names(key: str) -> frozenset[str] | None:
        value = doc.get(key)
        return None if value is None else frozenset(value)

    return Endpoint.model_construct(
        name=name,
        url="",
        sources=frozenset(doc.get("sources", ())),
        channels=frozenset(doc.get("channels", ())),
        concurrent=bool(doc.get("concurrent")),
        mode=doc.get("mode") or ("concurrent" if doc.get("concurrent") else "serial"),
        max_in_flight=1,
        timeout=1.0,
        signing_secret=None,
        retry_delays=None,
        headers={},
        format="form",
        message_types=names("message_types"),
        event_types=names("event_types"),
        order_statuses=names("order_statuses"),
        test_orders=doc.get("test_orders"),
        retry_4xx=frozenset(),
        match=_match(doc.get("match")),
    )


def _match(raw: object) -> dict[str, match.Rule] | None:
    """A removed endpoint's ``match``, so what it would have skipped is recorded skipped, not cancelled.
    One the current event schema no longer accepts routes as if it had none (a record, never a send)."""
    try:
        return match.compile_match(raw) if isinstance(raw, dict) else None
    except ValueError:
        return None


async def register(
    redis: Redis, settings: Settings, *, start: bool, removed: Mapping[str, Endpoint] | None = None
) -> list[str]:
    """Register ``settings``' endpoints; record the removal of ``removed`` (a reload's) or, at ``start``,
    of every registered endpoint ``settings`` lacks. Returns the names whose removal was recorded."""
    configured = {name: rule(ep) for name, ep in settings.endpoints.items()}
    removing = {name: rule(ep) for name, ep in (removed or {}).items()}
    gone = await script(ENDPOINTS)(
        keys=ENDPOINTS.pack_keys(registry=k.EP_REGISTRY, removed=k.EP_REMOVED, seq=k.SEQ),
        args=ENDPOINTS.pack_args(
            when="start" if start else "reload",
            configured=json.dumps(configured),
            removing=json.dumps(removing),
            retention_ms=settings.delivery.retention_ms,
            states=json.dumps([*k.STATES, k.RESOLVED]),
        ),
        client=redis,
    )
    return sorted(name.decode() for name in gone)


async def removed(redis: Redis) -> dict[str, Removed]:
    """Every removal still on record, by name."""
    raw: dict[bytes, bytes] = await redis.hgetall(k.EP_REMOVED)  # type: ignore[misc]
    out: dict[str, Removed] = {}
    for key, value in raw.items():
        name = key.decode()
        try:
            doc = json.loads(value)
            out[name] = Removed(
                name, int(doc["at"]), int(doc["seq"]), str(doc.get("by", "")), from_rule(name, str(doc["rule"]))
            )
        except (ValueError, KeyError, TypeError):
            continue  # unreadable: endpoints.lua forgets it
    return out


async def running(redis: Redis) -> dict[str, Endpoint]:
    """The endpoints the workers run (registered at their start and reload), each as its routing rule."""
    raw: dict[bytes, bytes] = await redis.hgetall(k.EP_REGISTRY)  # type: ignore[misc]
    out: dict[str, Endpoint] = {}
    for key, value in sorted(raw.items()):
        try:
            out[key.decode()] = from_rule(key.decode(), value.decode())
        except (ValueError, TypeError, AttributeError):
            continue  # unreadable: the next registration rewrites it
    return out


async def removed_names(redis: Redis) -> list[str]:
    return sorted(name.decode() for name in await redis.hkeys(k.EP_REMOVED))  # type: ignore[misc]


async def known_names(redis: Redis, settings: Settings) -> dict[str, Collection[str]]:
    """What a ``source`` or ``endpoint`` filter may name: configured, run by a worker (the caller's file
    may be edited and not yet reloaded), or a removed endpoint whose deliveries are still kept
    (relay/store/queries.py:check_known)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hkeys(k.EP_REMOVED)
        pipe.hkeys(k.EP_REGISTRY)
        removed, running = await pipe.execute()
    others = {name.decode() for name in [*removed, *running]} - set(settings.endpoints)
    return queries.known_names(settings, sorted(others))

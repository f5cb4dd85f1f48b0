"""Reading notifications back: filters, index choice and cursor pages (one notification in full: ``detail.py``).

Shared by the admin API (``relay/admin/api.py``) and the CLI (``relay/cli/notifications.py``). Every listing walks
one sorted-set index newest first (never KEYS or SCAN): the most selective of ``relay:ix:ref``,
``relay:ep:{ep}:st:{state}``, ``relay:ix:ch``, ``relay:ix:src``, ``relay:ix:type`` and ``relay:ix:all``, and checks the
other filters on each candidate, scanning at most ``SCAN_BUDGET`` candidates per page. A state without an endpoint
walks every endpoint's index of that state at once, merged by ``relay/store/lua/merge.lua`` (each notification
once, newest change first): a page reads about a page of each, never the whole backlog.

Filters are validated by the pydantic models of ``relay/store/params.py``; the errors and their
wording are in ``errors.py`` (re-exported here, where the API, the CLI and the dashboard have always
found them). Hiding secrets is the surfaces' last step, one function for all three: ``relay/redact.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel
from redis.asyncio import Redis

from config.settings import Settings
from relay import constants as k
from relay.store import params
from relay.store.cursor import INDEX_KINDS as INDEX_KINDS
from relay.store.cursor import Cursor, new_token
from relay.store.errors import BadParam as BadParam
from relay.store.errors import BadRequest as BadRequest
from relay.store.errors import Conflict as Conflict
from relay.store.errors import NotFound as NotFound
from relay.store.errors import QueryError as QueryError
from relay.store.errors import TooBroad as TooBroad
from relay.store.errors import validate as validate
from relay.store.params import DEFAULT_LIMIT as DEFAULT_LIMIT
from relay.store.params import FILTER_NAMES as FILTER_NAMES
from relay.store.params import MAX_LIMIT as MAX_LIMIT
from relay.store.params import NAME as NAME
from relay.store.params import NID as NID
from relay.store.params import Filters as Filters
from relay.store.resolve import resolve
from relay.store.scripts import script
from relay.store.wire import DELIVERY_SUMMARY, MERGE, ROWS, SUMMARY_FIELDS
from relay.timefmt import iso_millis

M = TypeVar("M", bound=BaseModel)

SCAN_BUDGET = 5_000
BATCH = 200
# notifications one merge.lua call looks at, at most (each a ZSCORE per endpoint: a few ms of Redis)
MERGE_BUDGET = 500
# candidates whose rows are read at a time when a page still needs fewer: a page of 50 that matches at
# once reads 50 rows, not the whole batch of BATCH candidates
SLICE = 25
# notifications one rows.lua call reads (about 6 µs of Redis per delivery): a page of 50 to 8 endpoints is
# 5 calls of ~0.5 ms in one round trip, not one call that holds Redis for 3 ms
ROWS_PER_CALL = 10


def parse_filters(values: Mapping[str, object]) -> Filters:
    """Validate filter values from a query string, a JSON object or CLI options; unknown names are an error."""
    return validate(Filters, values)


def known_names(settings: Settings, removed: Collection[str] = ()) -> dict[str, Collection[str]]:
    """The names a ``source`` or ``endpoint`` filter must be one of: configured, or for an endpoint also
    one a reload or restart removed (``removed``, relay/store/endpoints.py: its deliveries are kept)."""
    return {"source": list(settings.sources), "endpoint": [*settings.endpoints, *removed]}


def check_known(f: Filters, known: Mapping[str, Collection[str]], prefix: str = "") -> Filters:
    """An unknown source or endpoint is an error listing the configured names, not an empty listing."""
    for name, names in known.items():
        value = getattr(f, name)
        if value is not None and value not in names:
            raise BadParam(
                prefix + name, value, f"is not a configured {name} (known: {', '.join(sorted(names)) or 'none'})"
            )
    return f


def parse_limit(value: object) -> int:
    if value is None:
        return DEFAULT_LIMIT
    return validate(params.ListQuery, {"limit": value}).limit


def check_id(nid: str) -> str:
    if not NID.fullmatch(nid):
        raise NotFound(f"no notification {nid!r} (ids look like ipn_<24 hex digits>, and resends <id>~r<n>)")
    return nid


# -- the cursor ------------------------------------------------------------------------------


def index_key(kind: str, f: Filters) -> str:
    if kind == "ref" and f.ref is not None:
        return k.idx_ref(f.ref)
    if kind == "state" and f.endpoint is not None and f.state is not None:
        return k.ep_state(f.endpoint, f.state)
    if kind == "ch" and f.channel is not None:
        return k.idx_channel(f.channel)
    if kind == "src" and f.source is not None:
        return k.idx_source(f.source)
    if kind == "type" and f.type is not None:
        return k.idx_type(f.type)
    if kind == "all":
        return k.IDX_ALL
    raise BadParam("cursor", kind, "belongs to a listing with other filters")


def state_keys(f: Filters, endpoints: Sequence[str]) -> list[str]:
    """The state indexes a state filter without an endpoint walks: that state's of every endpoint (and,
    for failed with include_resolved, the failures a delivered resend resolved)."""
    if f.state is None:
        return []
    states = (f.state, k.RESOLVED) if f.state == "failed" and f.include_resolved else (f.state,)
    return [k.ep_state(ep, state) for ep in endpoints for state in states]


def _bounds(kind: str, f: Filters) -> tuple[str, str]:
    lo = str(f.since) if f.since is not None else "-inf"
    # the state indexes are scored by the delivery's last change, never before receipt: only since bounds them
    hi = str(f.until) if f.until is not None and kind not in ("state", "xstate") else "+inf"
    return hi, lo


async def choose_index(redis: Redis, f: Filters, endpoints: Sequence[str] = ()) -> str:
    """The index with the fewest members in the time range: every other filter is checked per item.
    ``endpoints``: every endpoint with deliveries (a state across endpoints walks their indexes)."""
    # resolved failures have left the failed index: listing them too needs another index
    by_state = f.endpoint and f.state and not (f.state == "failed" and f.include_resolved)
    kinds = [
        kind
        for kind, present in (
            ("ref", f.ref),
            ("state", by_state),
            ("xstate", f.state and not f.endpoint and endpoints),
            ("ch", f.channel),
            ("src", f.source),
            ("type", f.type),
        )
        if present
    ]
    if not kinds:
        return "all"
    if len(kinds) == 1:
        return kinds[0]
    async with redis.pipeline(transaction=False) as pipe:
        for kind in kinds:
            hi, lo = _bounds(kind, f)
            for key in state_keys(f, endpoints) if kind == "xstate" else [index_key(kind, f)]:
                pipe.zcount(key, lo, hi)
        counts = iter(await pipe.execute())
    sizes = [sum(next(counts) for _ in (state_keys(f, endpoints) if kind == "xstate" else [0])) for kind in kinds]
    return min(zip(sizes, range(len(kinds)), kinds, strict=True))[2]


# -- walking an index ------------------------------------------------------------------------


@dataclass
class Row:
    """One notification as the listing sees it: its summary fields and its deliveries' summaries."""

    nid: str
    score: int
    fields: dict[str, str]
    deliveries: dict[str, dict[str, str]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        f = self.fields
        return {
            "id": self.nid,
            "channel": f.get("channel", ""),
            "source": f.get("source", ""),
            "received_at": iso_millis(f.get("recv")),
            "ref": f.get("ref", ""),
            "status": f.get("status", ""),
            "mtype": f.get("mtype", ""),
            "type": f.get("type", ""),  # "" for a notification stored before event types
            "test": f.get("test") == "1",
            "resend_of": f.get("resend_of") or None,
            "targets": f["targets"].split(",") if f.get("targets") else None,
            "deliveries": {ep: _delivery_summary(d) for ep, d in self.deliveries.items()},
        }


def _delivery_summary(d: dict[str, str]) -> dict[str, Any]:
    return {
        "state": d.get("state", ""),
        "attempts": int(d.get("attempts") or 0),
        "last": d.get("last") or None,
        "updated_at": iso_millis(d.get("updated")),
        "next_at": iso_millis(d.get("next")) if d.get("state") == "retrying" else None,
        "resolved_by": d.get("resolved_by") or None,
        "resolved_at": iso_millis(d.get("resolved_at")),
    }


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")


async def load_rows(redis: Redis, scored: list[tuple[str, int]]) -> list[Row]:
    """Summary fields of each notification and of its deliveries (relay/store/lua/rows.lua: one call);
    gone notifications are left out."""
    if not scored:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(0, len(scored), ROWS_PER_CALL):
            await script(ROWS)(args=ROWS.pack_args(*(nid for nid, _ in scored[i : i + ROWS_PER_CALL])), client=pipe)
        raw = [got for chunk in await pipe.execute() for got in chunk]
    rows: list[Row] = []
    for (nid, score), got in zip(scored, raw, strict=True):
        fields = {name: text for name, v in zip(SUMMARY_FIELDS, got[0], strict=True) if (text := _text(v)) is not None}
        if "recv" not in fields:
            continue
        row = Row(nid, score, fields)
        for j in range(1, len(got), 2):
            values = zip(DELIVERY_SUMMARY, got[j + 1], strict=True)
            d = {name: text for name, v in values if (text := _text(v)) is not None}
            if d:
                row.deliveries[got[j].decode()] = d
        rows.append(row)
    return rows


def matches(row: Row, f: Filters) -> bool:
    fields = row.fields
    if f.channel is not None and fields.get("channel") != f.channel:
        return False
    if f.source is not None and fields.get("source") != f.source:
        return False
    if f.ref is not None and fields.get("ref") != f.ref:
        return False
    if f.type is not None and fields.get("type") != f.type:
        return False
    recv = int(fields.get("recv") or 0)
    if (f.since is not None and recv < f.since) or (f.until is not None and recv > f.until):
        return False
    if f.endpoint is not None:
        d = row.deliveries.get(f.endpoint)
        if d is None and f.state is None and "eps" not in fields:
            # a resend not yet routed already names its endpoints: listed at once (after a bulk
            # resend the dashboard lists the endpoint's newest, and they are these)
            return f.endpoint in fields.get("targets", "").split(",")
        return d is not None and (f.state is None or _in_state(d, f))
    if f.state is not None:
        return any(_in_state(d, f) for d in row.deliveries.values())
    return True


def _in_state(d: Mapping[str, str], f: Filters) -> bool:
    if d.get("state") != f.state:
        return False
    return f.include_resolved or f.state != "failed" or not d.get("resolved_by")


async def _candidates(
    redis: Redis, key: str, hi: str, lo: str, after: tuple[int, str] | None
) -> AsyncIterator[list[tuple[str, int]]]:
    """Batches of (nid, score) from ``key``, newest first, strictly after the cursor position ``after``."""
    if after is not None:
        score, nid = after
        # members sharing the cursor's score come in reverse lexical order: resume below its nid
        ties = await redis.zrevrangebyscore(key, score, score, start=0, num=SCAN_BUDGET, withscores=True)
        rest = [(m.decode(), int(s)) for m, s in ties if m.decode() < nid]
        if rest:
            yield rest
        hi = f"({score}"
    offset = 0
    while True:
        chunk = await redis.zrevrangebyscore(key, hi, lo, start=offset, num=BATCH, withscores=True)
        if not chunk:
            return
        offset += len(chunk)
        yield [(m.decode(), int(s)) for m, s in chunk]
        if len(chunk) < BATCH:
            return


@dataclass(frozen=True)
class Page:
    items: list[Row]
    next_cursor: str | None
    index: str
    scanned: int


async def scan(
    redis: Redis,
    f: Filters,
    *,
    limit: int,
    cursor: str | None = None,
    budget: int = SCAN_BUDGET,
    endpoints: Sequence[str] = (),
) -> Page:
    """Up to ``limit`` matching notifications, newest first, looking at no more than ``budget`` candidates.

    ``next_cursor`` is set whenever the index may hold more: a page can come back short (even empty)
    with a cursor when the budget ran out first.
    """
    if f.state == "failed":
        # resolve what a delivered resend resolved first, so "failed" lists only what still is
        await resolve(redis, [f.endpoint] if f.endpoint else endpoints)
    # a state across endpoints: those configured and those removed whose deliveries are kept
    removed = [name.decode() for name in await redis.hkeys(k.EP_REMOVED)] if f.state and not f.endpoint else []  # type: ignore[misc]
    every = list(dict.fromkeys([*endpoints, *removed])) if endpoints else []
    after: tuple[int, str] | None = None
    if cursor:
        c = Cursor.decode(cursor, f)
        kind, after, began, token = c.kind, (c.score, c.nid), c.began, c.token
    else:
        kind, began, token = await choose_index(redis, f, every), 0, new_token()
    if kind == "xstate":
        keys = state_keys(f, every)
        listing = _Listing(began, token or new_token())
        return await _scan_merged(redis, f, keys, limit=limit, after=after, listing=listing, budget=budget)
    return await _scan_index(redis, f, kind, limit=limit, after=after, budget=budget)


async def _scan_index(
    redis: Redis, f: Filters, kind: str, *, limit: int, after: tuple[int, str] | None, budget: int
) -> Page:
    """A page of one index (not a state across endpoints), newest first after ``after``."""
    hi, lo = _bounds(kind, f)
    fp = f.fingerprint()
    items: list[Row] = []
    seen: set[str] = set()
    scanned = 0
    async for batch in _candidates(redis, index_key(kind, f), hi, lo, after):
        fresh = [(nid, s) for nid, s in batch if nid not in seen]
        seen.update(nid for nid, _ in fresh)
        done = 0
        while done < len(fresh):
            chunk = fresh[done : done + max(limit - len(items), SLICE)]
            done += len(chunk)
            for row in await load_rows(redis, chunk):
                if matches(row, f):
                    items.append(row)
                    if len(items) == limit:
                        return Page(items, Cursor(kind, row.score, row.nid, fp).encode(), kind, scanned + len(batch))
        scanned += len(batch)
        if scanned >= budget:
            last_nid, last_score = batch[-1]
            return Page(items, Cursor(kind, last_score, last_nid, fp).encode(), kind, scanned)
    return Page(items, None, kind, scanned)


@dataclass
class _Listing:
    began: int  # when its first page was read (Redis ms); 0 before that
    token: str  # its relay:list:{token}: those listed that merge.lua could meet again


async def _scan_merged(
    redis: Redis,
    f: Filters,
    keys: list[str],
    *,
    limit: int,
    after: tuple[int, str] | None,
    listing: _Listing,
    budget: int,
) -> Page:
    """A page of a state across endpoints: merge.lua hands out each notification once, at its newest
    entry that did not change since the listing began, from a cursor (one that stayed in the state is
    never skipped, none is listed twice: merge.lua says how); the other filters are checked here, as
    for any index."""
    fp, lo = f.fingerprint(), _bounds("xstate", f)[1]
    items: list[Row] = []
    scanned = 0
    while True:
        score, nid = after if after is not None else ("", "")
        raw = await script(MERGE)(
            keys=MERGE.pack_keys(*keys, listed=k.listing_seen(listing.token)),
            args=MERGE.pack_args(
                limit=limit - len(items),
                budget=min(MERGE_BUDGET, budget - scanned),
                lo=lo,
                after_score=score,
                after_nid=nid,
                began=listing.began or "",
                ttl=k.LISTING_SEEN_TTL_MS,
            ),
            client=redis,
        )
        more, examined = int(raw[0]), int(raw[3])
        began = listing.began = listing.began or int(raw[4])
        scanned += examined
        if examined:
            after = (int(float(raw[1])), raw[2].decode())
        pairs = [(raw[i].decode(), int(float(raw[i + 1]))) for i in range(5, len(raw), 2)]
        for row in await load_rows(redis, pairs):
            if matches(row, f):
                items.append(row)
                if len(items) == limit:
                    cur = Cursor("xstate", row.score, row.nid, fp, began, listing.token)
                    return Page(items, cur.encode(), "xstate", scanned)
        if not more:
            return Page(items, None, "xstate", scanned)
        if scanned >= budget:
            assert after is not None
            cur = Cursor("xstate", after[0], after[1], fp, began, listing.token)
            return Page(items, cur.encode(), "xstate", scanned)

"""The notification list and its refresh: filters from the query string, cursor pages, frozen selections."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from config.event_types import EVENT_TYPES
from config.settings import CHANNELS
from relay import constants as k
from relay.dashboard import view
from relay.dashboard.render import BASE, REFRESH_MS, fragment, render_page, render_section
from relay.dashboard.sessions import session_of
from relay.redact import redact_rows
from relay.store import endpoints, queries
from relay.store.queries import QueryError
from relay.web import appkeys

LIST_FILTERS = ("channel", "source", "state", "endpoint", "ref", "type", "include_resolved")


def list_params(request: web.Request) -> dict[str, str]:
    """The list's query parameters, trimmed, empty ones dropped (the last of a repeated one wins)."""
    return {name: value.strip() for name, value in request.query.items() if value.strip()}


def list_filters(
    params: Mapping[str, str], now_ms: int, known: Mapping[str, Collection[str]] | None = None
) -> queries.Filters:
    raw: dict[str, object] = {name: params[name] for name in LIST_FILTERS if name in params}
    period = params.get("period")
    if period in view.PERIODS:
        raw["since"] = now_ms - view.PERIODS[period][1]
    elif period == "custom":
        raw.update({name: params[name] for name in ("since", "until") if name in params})
    elif period is not None:  # ignored, it listed everything as if "any time" had been chosen
        raise queries.BadParam("period", period, f"expected one of {', '.join(view.PERIODS)} or custom")
    f = queries.parse_filters(raw)
    return f if known is None else queries.check_known(f, known)


def frozen(params: Mapping[str, str], f: queries.Filters, *, until: int | None = None) -> dict[str, str]:
    """The same selection with its time range as absolute times, so a cursor or a bulk resend stays valid."""
    out = {name: params[name] for name in LIST_FILTERS if name in params}
    end = f.until if f.until is not None else until
    if f.since is not None or end is not None:
        out["period"] = "custom"
        out.update({name: str(v) for name, v in (("since", f.since), ("until", end)) if v is not None})
    return out


@dataclass(frozen=True)
class Listing:
    items: list[dict[str, Any]]
    next_url: str | None
    first_url: str | None
    data_url: str
    filters: queries.Filters
    frozen: dict[str, str]


async def listing(request: web.Request, params: Mapping[str, str]) -> Listing:
    settings = request.config_dict[appkeys.LIVE].settings
    f = list_filters(
        params, int(time.time() * 1000), await endpoints.known_names(request.config_dict[appkeys.REDIS], settings)
    )
    cursor = params.get("cursor")
    page = await queries.scan(
        request.config_dict[appkeys.REDIS],
        f,
        limit=queries.DEFAULT_LIMIT,
        cursor=cursor,
        endpoints=list(settings.endpoints),
    )
    fixed = frozen(params, f)
    url = f"{BASE}/notifications"
    next_url = f"{url}?{urlencode({**fixed, 'cursor': page.next_cursor})}" if page.next_cursor else None
    plain = {n: v for n, v in params.items() if n not in ("cursor", "queued", "replayed")}
    first_url = f"{url}?{urlencode(plain)}" if cursor else None
    current = {**fixed, "cursor": cursor} if cursor else plain
    data_url = f"{BASE}/data/notifications" + (f"?{urlencode(current)}" if current else "")
    items = redact_rows((row.summary() for row in page.items), settings)
    return Listing(items, next_url, first_url, data_url, f, fixed)


def _list_context(result: Listing) -> dict[str, Any]:
    """What list_fragment.html needs."""
    return {
        "items": result.items,
        "next_url": result.next_url,
        "first_url": result.first_url,
        "filtered": not result.filters.empty,
    }


async def notifications(request: web.Request) -> web.StreamResponse:
    settings = request.config_dict[appkeys.LIVE].settings
    params = list_params(request)
    choices: dict[str, list[str]] = {
        "channel": list(CHANNELS),
        "source": sorted(settings.sources),
        "endpoint": sorted(settings.endpoints),
        "state": list(k.STATES),
        "type": list(EVENT_TYPES),
    }
    page = {
        "params": params,
        "choices": choices,
        "error": None,
        "bulk_url": None,
        "queued": int(params["queued"]) if params.get("queued", "").isdigit() else None,
        "replayed": bool(params.get("replayed")),
    }
    try:
        result = await listing(request, params)
    except QueryError as exc:
        return render_page(
            request,
            "list.html",
            {**page, "error": exc.message},
            exc.status,
            session=session_of(request),
            current="notifications",
        )
    if not result.filters.empty:
        page["bulk_url"] = f"{BASE}/resend?{urlencode(frozen(params, result.filters, until=int(time.time() * 1000)))}"
    return render_page(
        request,
        "list.html",
        {**page, **_list_context(result), "data_url": result.data_url, "summary": view.list_summary(result.items)},
        session=session_of(request),
        current="notifications",
        refresh_ms=REFRESH_MS,
    )


async def notifications_data(request: web.Request) -> web.StreamResponse:
    result = await listing(request, list_params(request))
    next_cursor = result.next_url is not None
    html = render_section(request, "list_fragment.html", _list_context(result))
    return fragment({"items": result.items, "has_next": next_cursor}, html, view.list_summary(result.items))

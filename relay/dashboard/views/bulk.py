"""Bulk resend: the confirmation with the dry run's count, then the resend of the frozen selection."""

from __future__ import annotations

import time
from urllib.parse import urlencode

import structlog
from aiohttp import web

from relay.dashboard.render import BASE, error_page, redirect, render_page
from relay.dashboard.sessions import session_of
from relay.dashboard.views.forms import form_text, idempotency_key
from relay.dashboard.views.listing import LIST_FILTERS, frozen, list_filters, list_params
from relay.store import endpoints
from relay.store.queries import QueryError
from relay.web import appkeys, inputs

logger = structlog.get_logger()


async def bulk_confirm(request: web.Request) -> web.StreamResponse:
    params = list_params(request)
    session = session_of(request)
    back = f"{BASE}/notifications?{urlencode(params)}"
    try:
        f = list_filters(
            params,
            int(time.time() * 1000),
            await endpoints.known_names(request.config_dict[appkeys.REDIS], request.config_dict[appkeys.LIVE].settings),
        )
        dry = await request.app[appkeys.RESENDER].bulk(filters=f, dry_run=True)
    except QueryError as exc:
        return error_page(request, exc.status, exc.message, session, back=back)
    fixed = frozen(params, f, until=int(time.time() * 1000))
    selection = [
        (name, getattr(f, name))
        for name in ("channel", "source", "endpoint", "state", "ref", "type")
        if getattr(f, name) is not None
    ]
    context = {
        "filters": fixed,
        "selection": selection,
        "since": f.since,
        "until": f.until,
        "dry": dry,
        "back": back,
        "idempotency_key": idempotency_key(),
    }
    return render_page(request, "bulk.html", context, session=session, current="notifications")


async def bulk_resend(request: web.Request) -> web.StreamResponse:
    form = await inputs.form(request)
    params = {
        name: value
        for name in (*LIST_FILTERS, "period", "since", "until")
        if (value := form_text(form, name)) is not None
    }
    back = f"{BASE}/notifications?{urlencode(params)}"
    try:
        f = list_filters(
            params,
            int(time.time() * 1000),
            await endpoints.known_names(request.config_dict[appkeys.REDIS], request.config_dict[appkeys.LIVE].settings),
        )
        result = await request.app[appkeys.RESENDER].bulk(filters=f, idempotency_key=form_text(form, "idempotency_key"))
    except QueryError as exc:
        return error_page(request, exc.status, f"bulk resend refused: {exc.message}", session_of(request), back=back)
    logger.info(
        "dashboard_bulk_resend",
        count=result["count"],
        skipped=result["skipped_count"],
        expected=form_text(form, "expected"),
        replayed=bool(result.get("replayed")),
    )
    # the resends are new notifications, received now and not yet in the chosen state: list what is
    # newest under the same channel, source, endpoint and reference, so they show at the top
    done: dict[str, str] = {name: params[name] for name in ("channel", "source", "endpoint", "ref") if name in params}
    done.update({"queued": str(result["count"]), **({"replayed": "1"} if result.get("replayed") else {})})
    return redirect(f"{BASE}/notifications?{urlencode(done)}")

"""One notification: its page, its refresh (redacted as the API and the CLI redact it) and its resend."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import structlog
from aiohttp import web

from relay.dashboard import view
from relay.dashboard.render import BASE, REFRESH_MS, error_page, fragment, redirect, render_page, render_section
from relay.dashboard.sessions import session_of
from relay.dashboard.views.forms import form_text, idempotency_key
from relay.redact import redact_notification
from relay.store import queries
from relay.store.detail import detail as notification_detail
from relay.store.queries import QueryError
from relay.web import appkeys, inputs

logger = structlog.get_logger()


async def load_detail(request: web.Request, nid: str) -> dict[str, Any]:
    """The API's detail document, redacted as the API and the CLI redact it (relay/redact.py)."""
    doc = await notification_detail(request.config_dict[appkeys.REDIS], nid)
    return redact_notification(doc, request.config_dict[appkeys.LIVE].settings)


async def detail(request: web.Request) -> web.StreamResponse:
    settings = request.config_dict[appkeys.LIVE].settings
    nid = request.match_info["id"]
    try:
        doc = await load_detail(request, nid)
    except queries.NotFound as exc:
        return error_page(request, 404, exc.message, session_of(request), back=f"{BASE}/notifications")
    resent = request.query.get("resent", "")
    routed = [ep for ep in doc.get("deliveries", {}) if ep in settings.endpoints]
    choices = routed or sorted(settings.endpoints)
    # the resend defaults to where the delivery failed (and no delivered resend resolved it)
    failed = [
        ep
        for ep in routed
        if doc["deliveries"][ep].get("state") == "failed" and not doc["deliveries"][ep].get("resolved_by")
    ]
    context = {
        "doc": doc,
        "endpoints": choices,
        "failed": failed,
        "idempotency_key": idempotency_key(),
        # the flash names the resend only when it is a notification id
        "resent": resent if queries.NID.fullmatch(resent) else None,
        "replayed": bool(request.query.get("replayed")),
        "data_url": f"{BASE}/data/notifications/{quote(nid, safe='')}",
        "summary": view.detail_summary(doc),
    }
    return render_page(
        request, "detail.html", context, session=session_of(request), current="notifications", refresh_ms=REFRESH_MS
    )


async def detail_data(request: web.Request) -> web.StreamResponse:
    doc = await load_detail(request, request.match_info["id"])
    return fragment(
        {"notification": doc}, render_section(request, "detail_fragment.html", {"doc": doc}), view.detail_summary(doc)
    )


async def resend_one(request: web.Request) -> web.StreamResponse:
    nid = request.match_info["id"]
    form = await inputs.form(request)
    back = f"{BASE}/notifications/{quote(nid, safe='')}"
    try:
        # one endpoint, several (comma-separated: "where it failed"), or none for every endpoint
        names = (form_text(form, "endpoint") or "").split(",")
        names = [n.strip() for n in names if n.strip()]
        result = await request.app[appkeys.RESENDER].one(
            nid,
            endpoint=names[0] if len(names) == 1 else None,
            endpoints=names if len(names) > 1 else (),
            idempotency_key=form_text(form, "idempotency_key"),
        )
    except QueryError as exc:
        return error_page(request, exc.status, f"cannot resend {nid}: {exc.message}", session_of(request), back=back)
    logger.info(
        "dashboard_resend",
        nid=nid,
        resend=result["id"],
        targets=result["targets"],
        replayed=bool(result.get("replayed")),
    )
    params = {"resent": result["id"], "replayed": "1" if result.get("replayed") else None}
    query = urlencode({n: v for n, v in params.items() if v})
    return redirect(f"{BASE}/notifications/{quote(result['resend_of'], safe='')}?{query}")

"""Operator control (relay/store/control.py): confirm with the count, then act; audited as "dashboard"."""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from relay.dashboard.render import BASE, error_page, redirect, render_page
from relay.dashboard.sessions import session_of
from relay.dashboard.views.forms import form_text
from relay.store import audit
from relay.store.control import Control
from relay.store.queries import QueryError
from relay.web import appkeys, inputs

CONTROL_TEXT = {
    "pause": (
        "Pause endpoint {target}",
        "Its waiting deliveries will wait as paused: no attempts, no retries spent.",
        "Pause",
    ),
    "resume": (
        "Resume endpoint {target}",
        "Its paused deliveries will be sent again (serial: in receipt order).",
        "Resume",
    ),
    "retry": (
        "Retry now: {target}",
        "Retrying deliveries will be sent now instead of at their next retry.",
        "Retry now",
    ),
    "cancel": ("Cancel: {target}", "Waiting deliveries will be cancelled (they can be resent later).", "Cancel"),
}


def _control(request: web.Request) -> Control:
    return Control(request.config_dict[appkeys.REDIS], request.config_dict[appkeys.LIVE].settings)


async def control_confirm(request: web.Request) -> web.StreamResponse:
    action, session = request.match_info["action"], session_of(request)
    control = _control(request)
    name, nid = request.match_info.get("name"), request.match_info.get("id")
    endpoint = request.query.get("endpoint") or None
    try:
        if name is not None:
            count = (await control.counts(name))[action]
            target, back, act = name, f"{BASE}/", f"{BASE}/endpoints/{quote(name, safe='')}/{action}"
        else:
            assert nid is not None
            count = await control.waiting(nid, endpoint, retrying_only=action == "retry")
            target = f"{nid}" + (f" to {endpoint}" if endpoint else "")
            back = f"{BASE}/notifications/{quote(nid, safe='')}"
            act = f"{back}/{action}"
    except QueryError as exc:
        return error_page(request, exc.status, exc.message, session, back=f"{BASE}/")
    title, question, button = CONTROL_TEXT[action]
    context = {
        "title": title.format(target=target),
        "question": question,
        "count": count,
        "button": button,
        "action": act,
        "back": back,
        "endpoint": endpoint,
    }
    return render_page(request, "control.html", context, session=session)


async def control_endpoint(request: web.Request) -> web.StreamResponse:
    action, name = request.match_info["action"], request.match_info["name"]
    origin = audit.Origin("dashboard", request.remote)
    control = _control(request)
    try:
        if action == "pause":
            await control.pause(name, origin)
        elif action == "resume":
            await control.resume(name, origin)
        else:
            await control.retry(origin, endpoint=name)
    except QueryError as exc:
        return error_page(request, exc.status, f"{action} {name}: {exc.message}", session_of(request), back=f"{BASE}/")
    return redirect(f"{BASE}/")


async def control_notification(request: web.Request) -> web.StreamResponse:
    action, nid = request.match_info["action"], request.match_info["id"]
    form = await inputs.form(request)
    endpoint = form_text(form, "endpoint")
    origin = audit.Origin("dashboard", request.remote)
    back = f"{BASE}/notifications/{quote(nid, safe='')}"
    try:
        if action == "retry":
            await _control(request).retry(origin, nid=nid, endpoint=endpoint)
        else:
            await _control(request).cancel(nid, origin, endpoint=endpoint)
    except QueryError as exc:
        return error_page(request, exc.status, f"{action} {nid}: {exc.message}", session_of(request), back=back)
    return redirect(back)

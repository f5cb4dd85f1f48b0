"""HTML for the dashboard (``relay/dashboard/routes.py``): plain functions that return escaped strings.

Every value that reaches the page goes through ``e`` (``html.escape``): notification bodies, references
and endpoint answers are attacker-controlled text. Times are rendered in UTC with their epoch
milliseconds in ``data-ts``; ``static/dashboard.js`` rewrites them in the viewer's time zone.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from relay.constants import DAY_MS

BASE = "/dashboard"
STATE_LABELS = {"healthy": "Healthy", "failing": "Failing", "alerting": "Alerting"}
PERIODS = {"1h": ("Last hour", DAY_MS // 24), "24h": ("Last 24 hours", DAY_MS),
           "7d": ("Last 7 days", 7 * DAY_MS), "30d": ("Last 30 days", 30 * DAY_MS)}
SEND_TEST = "relay send-test --channel ipn"


def e(value: object) -> str:
    """Escape for HTML text and quoted attribute values."""
    return html.escape("" if value is None else str(value), quote=True)


def href(path: str, params: Mapping[str, object] | None = None) -> str:
    """A dashboard URL with its query string (values that are None or empty left out), escaped."""
    query = urlencode([(k, str(v)) for k, v in (params or {}).items() if v is not None and v != ""])
    return e(f"{path}?{query}" if query else path)


def detail_href(nid: str) -> str:
    return e(f"{BASE}/notifications/{quote(nid, safe='')}")


def to_ms(value: object) -> int | None:
    """Epoch ms from an int, a digit string or an ISO-8601 string (as the API documents give them)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str) and value:
        if value.isdigit():
            return int(value)
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            return None
    return None


def when(value: object, *, empty: str = "—") -> str:
    """A ``<time>`` in UTC; the page script shows it in the viewer's time zone."""
    ms = to_ms(value)
    if ms is None:
        return e(empty)
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    iso = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return f'<time datetime="{iso}" data-ts="{ms}">{moment:%Y-%m-%d %H:%M:%S} UTC</time>'


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.0f} s" if seconds >= 1 else "under 1 s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s < 600 and s % 60 else f"{s // 60} min"
    if s < 86_400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86_400} d {s % 86_400 // 3600} h"


def rate(ok: int, fail: int) -> str:
    total = ok + fail
    if not total:
        return '<span class="muted">no attempts</span>'
    percent = 100 * ok / total
    text = f"{percent:.0f}" if percent in (0, 100) else f"{percent:.1f}"
    return f'{text} % <span class="sub">({ok} of {total})</span>'


def badge(state: str, text: str | None = None) -> str:
    return f'<span class="badge st-{e(state)}">{e(text or state.replace("_", " "))}</span>'


def empty_state(title: str, hint: str) -> str:
    return f'<div class="empty"><p class="empty-title">{title}</p><p>{hint}</p></div>'


# -- the frame ---------------------------------------------------------------------------------


def page(title: str, main: str, *, assets: str, csrf: str | None = None, current: str = "",
         refresh_ms: int = 0) -> str:
    """A whole page. ``csrf`` given: the signed-in frame with navigation and the logout button."""
    head = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="referrer" content="same-origin">'
            f'<title>{e(title)} · relay</title>'
            f'<link rel="icon" href="{BASE}/static/favicon.svg" type="image/svg+xml">'
            f'<link rel="stylesheet" href="{BASE}/static/dashboard.css?v={e(assets)}">'
            f'<script src="{BASE}/static/dashboard.js?v={e(assets)}" defer></script></head>')
    if csrf is None:
        return f'{head}<body class="bare"><main id="main" class="narrow">{main}</main></body></html>\n'
    links = [("overview", f"{BASE}/", "Overview"), ("notifications", f"{BASE}/notifications", "Notifications")]
    mark = ' aria-current="page"'
    nav = "".join(f'<a href="{url}"{mark if key == current else ""}>{label}</a>' for key, url, label in links)
    header = (
        '<a class="skip" href="#main">Skip to content</a>'
        f'<header class="top"><a class="brand" href="{BASE}/">relay</a>'
        f'<nav aria-label="Main">{nav}</nav>'
        f'<form class="logout" method="post" action="{BASE}/logout">{csrf_field(csrf)}'
        '<button type="submit" class="link">Log out</button></form></header>'
    )
    status = ""
    if refresh_ms:
        status = (
            f'<div class="status" data-refresh-ms="{refresh_ms}">'
            '<span id="live" aria-live="polite"></span> <span id="checked" class="muted"></span> '
            '<span class="muted">Times in <span id="tz">UTC</span>.</span> '
            '<button type="button" id="pause" class="link" aria-pressed="false">Pause updates</button></div>'
        )
    return (f'{head}<body data-csrf="{e(csrf)}">{header}{status}<main id="main">{main}</main>'
            '<div id="expired" role="alert" hidden></div></body></html>\n')


def csrf_field(token: str) -> str:
    return f'<input type="hidden" name="csrf" value="{e(token)}">'


def digest(fragment: str) -> str:
    return hashlib.blake2b(fragment.encode(), digest_size=8).hexdigest()


def region(url: str, inner: str, label: str, summary: str) -> str:
    """A section the page script refreshes from ``url`` (JSON with ``html``, its ``digest`` and a ``summary``
    that is announced to screen readers when it changes)."""
    return (f'<div class="region" data-refresh="{e(url)}" data-digest="{digest(inner)}" '
            f'data-summary="{e(summary)}" role="region" aria-label="{e(label)}">{inner}</div>')


def flash(kind: str, text: str) -> str:
    role = "alert" if kind == "error" else "status"
    return f'<div class="flash flash-{e(kind)}" role="{role}">{text}</div>'


# -- login, off, errors ----------------------------------------------------------------------------


def login_page(*, assets: str, next_url: str, error: str | None = None, notice: str | None = None,
               token_env: str) -> str:
    parts = ['<h1>relay dashboard</h1>']
    if error:
        parts.append(flash("error", e(error)))
    if notice:
        parts.append(flash("ok", e(notice)))
    parts.append(
        f'<form class="stack" method="post" action="{BASE}/login">'
        f'<input type="hidden" name="next" value="{e(next_url)}">'
        '<label for="token">Admin token</label>'
        '<input id="token" name="token" type="password" autocomplete="current-password" required autofocus '
        'aria-describedby="token-hint">'
        f'<p id="token-hint" class="hint">The value of the environment variable <code>{e(token_env)}</code> '
        'the relay was started with.</p>'
        '<button type="submit">Log in</button></form>'
    )
    return page("Log in", "".join(parts), assets=assets)


def off_page(*, assets: str, token_env: str) -> str:
    main = (
        '<h1>The dashboard is off</h1>'
        f'<p>Set the environment variable <code>{e(token_env)}</code> (named by <code>server.admin_token_env</code>) '
        'to a long random token and restart <code>relay serve</code>, for example:</p>'
        f'<pre>export {e(token_env)}="$(python3 -c \'import secrets; print(secrets.token_urlsafe(32))\')"\n'
        'relay serve</pre>'
        '<p>Then open <code>/dashboard</code> again and log in with that token. The same token opens the '
        'admin API (<code>/api</code>). See <code>docs/dashboard.md</code>.</p>'
    )
    return page("Dashboard off", main, assets=assets)


def error_page(status: int, message: str, *, assets: str, csrf: str | None, back: str | None = None) -> str:
    titles = {400: "Bad request", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
              409: "Conflict", 422: "Too broad", 503: "Unavailable"}
    title = titles.get(status, "Error")
    link = f'<p><a href="{e(back)}">Back</a></p>' if back else f'<p><a href="{BASE}/">Overview</a></p>'
    return page(title, f'<h1>{e(title)}</h1>{flash("error", e(message))}{link}', assets=assets, csrf=csrf)


# -- overview ----------------------------------------------------------------------------------------


def overview_page(model: Mapping[str, Any], *, assets: str, csrf: str, refresh_ms: int) -> str:
    main = '<h1>Overview</h1>' + region(f"{BASE}/data/overview", overview_fragment(model), "Relay status",
                                        overview_summary(model))
    return page("Overview", main, assets=assets, csrf=csrf, current="overview", refresh_ms=refresh_ms)


def overview_summary(model: Mapping[str, Any]) -> str:
    report = model["report"]
    if not report["redis"]["reachable"]:
        return "Redis is unreachable."
    states = ", ".join(f"{name} {card['state']}" for name, card in model["endpoints"].items())
    return f"Relay {report['status']}." + (f" Endpoints: {states}." if states else "")


def overview_fragment(model: Mapping[str, Any]) -> str:
    report = model["report"]
    redis = report["redis"]
    if not redis["reachable"]:
        return flash("error", f'Redis is unreachable: {e(redis.get("error", ""))}. Nothing can be shown or '
                              'delivered until it is back; check <code>REDIS_URL</code> and the Redis server.')
    queue, workers = report["queue"], report["workers"]
    verdict = "healthy" if report["status"] == "healthy" else "unhealthy"
    oldest = f'oldest waiting {duration(queue["oldest_age_s"])}' if queue["oldest_age_s"] is not None \
        else "nothing waiting"
    seen = ""
    if workers["list"] and not workers["alive"]:
        seen = f'last heartbeat {duration(workers["list"][0]["age_s"])} ago'
    tiles = [
        ("Relay", badge(verdict, verdict.capitalize()),
         f'{len(report["reasons"])} problem{"s" if len(report["reasons"]) != 1 else ""}'),
        ("Queue depth", e(queue["depth"]), f'{e(queue["fanout"])} awaiting fan-out · {oldest}'),
        ("Live workers", e(workers["alive"]), seen or "heartbeat within 30 s"),
        ("Redis", "Reachable", f'persistence {e(redis["persistence"])} · {e(redis["used_memory_human"])} used'),
    ]
    out = ['<section class="tiles" aria-label="Relay">']
    for label, value, sub in tiles:
        out.append(f'<div class="tile"><span class="label">{label}</span><span class="value">{value}</span>'
                   f'<span class="sub">{sub}</span></div>')
    out.append("</section>")
    problems = [flash("error", e(r)) for r in report["reasons"]] + [flash("warn", e(w)) for w in report["warnings"]]
    if not workers["alive"]:
        problems.append(flash("warn", "No worker is running, so nothing is delivered: start one with "
                                      "<code>relay worker</code>."))
    out += problems
    if model.get("total") == 0:
        out.append(empty_state("No notifications yet.", f"Send a signed test one with <code>{e(SEND_TEST)}</code>, "
                               "or point 2Checkout at <code>/ipn</code>, <code>/lcn</code> and <code>/ins</code>."))
    endpoints: Mapping[str, Any] = model["endpoints"]
    if not endpoints:
        out.append(empty_state("No endpoints are configured.", "Add an <code>[[endpoints]]</code> entry to your "
                               "config file (see <code>docs/configuration.md</code>) and restart the relay."))
        return "".join(out)
    out.append('<section class="cards" aria-label="Endpoints">')
    for name, card in endpoints.items():
        out.append(endpoint_card(name, card, report["endpoints"].get(name, {})))
    out.append("</section>")
    return "".join(out)


def endpoint_card(name: str, card: Mapping[str, Any], row: Mapping[str, Any]) -> str:
    state = card["state"]
    hour, day = row.get("last_hour", {}), row.get("last_day", {})
    pending, retrying = row.get("pending", 0), row.get("retrying", 0)
    listing = f"{BASE}/notifications"
    ident = f"ep-{e(name)}"

    def count_link(state_name: str, n: int) -> str:
        return f'<a href="{href(listing, {"endpoint": name, "state": state_name})}">{n} {state_name}</a>'

    stats = [
        ("Success, 1 h", rate(hour.get("ok", 0), hour.get("fail", 0))),
        ("Success, 24 h", rate(day.get("ok", 0), day.get("fail", 0))),
        ("Backlog", f'{pending + retrying} <span class="sub">({pending} pending, {retrying} retrying)</span>'),
        ("Oldest waiting", duration(row.get("oldest_pending_age_s"))),
        ("Failed", count_link("failed", row.get("failed", 0)) if row.get("failed") else "0"),
        ("Delivered", count_link("delivered", row.get("delivered", 0)) if row.get("delivered") else "0"),
    ]
    dl = "".join(f'<div><dt>{label}</dt><dd>{value}</dd></div>' for label, value in stats)
    recovered = (row.get("last_ok") or 0) > (row.get("last_fail") or 0)
    why = {"alerting": "A failure alert is open for this endpoint.",
           "failing": "Failed in the last 5 minutes; the latest attempt succeeded." if recovered
           else "Failing: no attempt has succeeded since the last failure.",
           "healthy": "No recent failure."}[state]
    last = (f'<p class="last">Last success {when(row.get("last_ok"), empty="never")} · '
            f'last failure {when(row.get("last_fail"), empty="never")}</p>')
    return (
        f'<article class="card card-{e(state)}" aria-labelledby="{ident}" data-endpoint="{e(name)}" '
        f'data-state="{e(state)}">'
        f'<div class="card-head"><h2 id="{ident}"><a href="{href(listing, {"endpoint": name})}">{e(name)}</a></h2>'
        f'{badge(state, STATE_LABELS[state])}</div>'
        f'<p class="sub">{e(card.get("target", ""))} · {why}</p>'
        f'<dl class="stats">{dl}</dl>{chart(name, card["hours"])}{last}</article>'
    )


def chart(name: str, hours: Sequence[Mapping[str, int]]) -> str:
    """Delivered and failed attempts per hour over 24 h, as stacked inline-SVG bars (oldest left)."""
    width, height, bar = 240, 48, 10
    peak = max((h["ok"] + h["fail"] for h in hours), default=0)
    ok_total = sum(h["ok"] for h in hours)
    fail_total = sum(h["fail"] for h in hours)
    title_id = f"chart-{e(name)}"
    parts = [f'<figure class="chart"><svg viewBox="0 0 {width} {height}" preserveAspectRatio="none" '
             f'role="img" aria-labelledby="{title_id}" focusable="false">'
             f'<title id="{title_id}">{e(name)}, last 24 hours: {ok_total} delivered and {fail_total} failed '
             'attempts</title>']
    for i, h in enumerate(hours):
        total = h["ok"] + h["fail"]
        x = i * bar + 1
        parts.append("<g>")
        parts.append(f'<title data-ts="{h["start"]}" data-fmt="hour" '
                     f'data-suffix=": {h["ok"]} delivered, {h["fail"]} failed">'
                     f'{when_text(h["start"])}: {h["ok"]} delivered, {h["fail"]} failed</title>')
        parts.append(f'<rect class="slot" x="{x}" y="0" width="{bar - 2}" height="{height}"/>')
        if total and peak:
            full = max(1.0, (height - 2) * total / peak)
            fail_h = full * h["fail"] / total
            ok_h = full - fail_h
            if ok_h > 0:
                parts.append(f'<rect class="ok" x="{x}" y="{height - ok_h:.2f}" width="{bar - 2}" '
                             f'height="{ok_h:.2f}"/>')
            if fail_h > 0:
                parts.append(f'<rect class="fail" x="{x}" y="{height - full:.2f}" width="{bar - 2}" '
                             f'height="{max(fail_h, 1.0):.2f}"/>')
        parts.append("</g>")
    parts.append("</svg>")
    parts.append('<figcaption><span class="key key-ok"></span>delivered <span class="key key-fail"></span>failed'
                 ' <span class="muted">· attempts per hour, last 24 h'
                 f'{"" if peak else " (none yet)"}</span></figcaption></figure>')
    return "".join(parts)


def when_text(ms: int) -> str:
    return f"{datetime.fromtimestamp(ms / 1000, UTC):%a %H:%M} UTC"


# -- notifications list ------------------------------------------------------------------------------


def select(name: str, label: str, options: Iterable[tuple[str, str]], chosen: str | None) -> str:
    opts = "".join(f'<option value="{e(v)}"{" selected" if v == (chosen or "") else ""}>{e(t)}</option>'
                   for v, t in options)
    return (f'<div class="field"><label for="f-{e(name)}">{e(label)}</label>'
            f'<select id="f-{e(name)}" name="{e(name)}">{opts}</select></div>')


def list_page(*, params: Mapping[str, str], choices: Mapping[str, Sequence[str]], fragment: str,
              summary: str, data_url: str, notice: str, error: str | None, bulk_url: str | None, assets: str, csrf: str,
              refresh_ms: int) -> str:
    any_ = [("", "Any")]
    period = params.get("period", "")
    custom = period == "custom"
    periods = [("", "Any time"), *[(k, v[0]) for k, v in PERIODS.items()]]
    if custom:
        periods.append(("custom", "Custom range (below)"))
    fields = [
        '<div class="field grow"><label for="f-ref">Order reference or licence code</label>'
        f'<input id="f-ref" name="ref" type="search" value="{e(params.get("ref", ""))}" '
        'placeholder="REFNO, sale_id or LICENSE_CODE" autocomplete="off"></div>',
        select("channel", "Channel", any_ + [(c, c.upper()) for c in choices["channel"]], params.get("channel")),
        select("source", "Source", any_ + [(s, s) for s in choices["source"]], params.get("source")),
        select("endpoint", "Endpoint", any_ + [(x, x) for x in choices["endpoint"]], params.get("endpoint")),
        select("state", "Delivery state", any_ + [(s, s.replace("_", " ")) for s in choices["state"]],
               params.get("state")),
        select("period", "Received", periods, period),
    ]
    hidden = ""
    if custom:
        for name in ("since", "until"):
            if params.get(name):
                hidden += f'<input type="hidden" name="{name}" value="{e(params[name])}">'
    form = (f'<form class="filters" method="get" action="{BASE}/notifications" role="search" '
            f'aria-label="Filter notifications">{"".join(fields)}{hidden}'
            f'<div class="field actions"><button type="submit">Filter</button>'
            f'<a class="button secondary" href="{BASE}/notifications">Clear</a></div></form>')
    if custom:
        form += (f'<p class="hint">Received between {when(params.get("since"), empty="the start")} and '
                 f'{when(params.get("until"), empty="now")}.</p>')
    top = ['<h1>Notifications</h1>', notice]
    if error:
        top.append(flash("error", e(error)))
    top.append(form)
    if bulk_url:
        top.append(f'<p class="bulk"><a class="button secondary" href="{e(bulk_url)}">Resend all matching…</a> '
                   '<span class="hint">You will see how many first.</span></p>')
    body = "".join(top) + (region(data_url, fragment, "Notifications", summary) if not error else "")
    return page("Notifications", body, assets=assets, csrf=csrf, current="notifications", refresh_ms=refresh_ms)


def list_summary(items: Sequence[Mapping[str, Any]]) -> str:
    states: dict[str, int] = {}
    for item in items:
        for d in (item.get("deliveries") or {}).values():
            states[d["state"]] = states.get(d["state"], 0) + 1
    counts = ", ".join(f"{n} {state.replace('_', ' ')}" for state, n in sorted(states.items()))
    noun = "notification" if len(items) == 1 else "notifications"
    return f"{len(items)} {noun} shown" + (f"; deliveries: {counts}." if counts else ".")


def list_fragment(items: Sequence[Mapping[str, Any]], *, next_url: str | None, first_url: str | None,
                  filtered: bool, clear_url: str) -> str:
    if not items:
        if next_url:
            return (empty_state("Nothing on this page.", "The search looked at its budget of candidates without "
                                f"a match; <a href=\"{e(next_url)}\">look further</a>.") + pager(next_url, first_url))
        if filtered:
            return empty_state("No notification matches these filters.",
                               f'Widen the time range or <a href="{e(clear_url)}">clear the filters</a>.')
        return empty_state("No notifications yet.", f"Send a signed test one with <code>{e(SEND_TEST)}</code>.")
    rows = []
    for item in items:
        nid = item["id"]
        ref = item.get("ref") or ""
        tags = ""
        if item.get("resend_of"):
            tags += ' <span class="tag">resend</span>'
        if item.get("test"):
            tags += ' <span class="tag">test</span>'
        deliveries = item.get("deliveries") or {}
        if deliveries:
            cells = " ".join(badge(d["state"], f'{ep}: {d["state"].replace("_", " ")}')
                             for ep, d in deliveries.items())
        else:
            cells = '<span class="muted">not routed yet</span>'
        what = " · ".join(e(x) for x in (item.get("mtype"), item.get("status")) if x) or "—"
        rows.append(
            f'<tr data-id="{e(nid)}"><td data-label="Received">{when(item.get("received_at"))}</td>'
            f'<td data-label="Reference"><a href="{detail_href(nid)}">{e(ref) or "(no reference)"}</a>{tags}'
            f'<br><code class="id">{e(nid)}</code></td>'
            f'<td data-label="Channel">{e(item.get("channel", "").upper())} · {e(item.get("source", ""))}</td>'
            f'<td data-label="Type · status">{what}</td>'
            f'<td data-label="Deliveries"><div class="badges">{cells}</div></td></tr>'
        )
    table = ('<table class="list"><caption class="visually-hidden">Notifications, newest first</caption>'
             '<thead><tr><th scope="col">Received</th><th scope="col">Reference</th><th scope="col">Channel</th>'
             '<th scope="col">Type · status</th><th scope="col">Deliveries</th></tr></thead>'
             f'<tbody>{"".join(rows)}</tbody></table>')
    return table + pager(next_url, first_url)


def pager(next_url: str | None, first_url: str | None) -> str:
    if not next_url and not first_url:
        return ""
    links = []
    if first_url:
        links.append(f'<a href="{e(first_url)}">← First page</a>')
    if next_url:
        links.append(f'<a rel="next" href="{e(next_url)}">Next page →</a>')
    return f'<nav class="pager" aria-label="Pages">{" ".join(links)}</nav>'


# -- one notification ------------------------------------------------------------------------------


def detail_page(doc: Mapping[str, Any], *, fragment: str, notice: str, endpoints: Sequence[str],
                idempotency_key: str, assets: str, csrf: str, refresh_ms: int) -> str:
    nid = doc["id"]
    ref = doc.get("ref") or ""
    title = f"Notification {ref}" if ref else "Notification"
    facts = [
        ("Id", f'<code class="nid">{e(nid)}</code>'),
        ("Received", when(doc.get("received_at"))),
        ("Channel · source", f'{e(doc.get("channel", "").upper())} · {e(doc.get("source"))}'),
        ("Reference", e(ref) or "—"),
        ("Message type", e(doc.get("mtype")) or "—"),
        ("Status", e(doc.get("status")) or "—"),
        ("Test order", "yes" if doc.get("test") else "no"),
        ("Signature", e(doc.get("algo")) or "—"),
        ("Content type", e(doc.get("content_type")) or "—"),
    ]
    if doc.get("license"):
        facts.append(("Licence", e(doc["license"])))
    if doc.get("targets"):
        facts.append(("Sent to", e(", ".join(doc["targets"]))))
    dl = "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in facts)
    parts = [f'<p class="crumbs"><a href="{BASE}/notifications">Notifications</a> /</p>',
             f'<h1>{e(title)}</h1>', notice]
    if doc.get("resend_of"):
        parts.append(f'<p class="resend-of">This is a <strong>resend</strong> of '
                     f'<a href="{detail_href(doc["resend_of"])}">{e(doc["resend_of"])}</a>: the same bytes, '
                     'queued again; endpoints get <code>Relay-Resend: true</code> and the original’s '
                     '<code>webhook-id</code>.</p>')
    parts.append(f'<dl class="facts">{dl}</dl>')
    parts.append(region(f"{BASE}/data/notifications/{quote(nid, safe='')}", fragment, "Deliveries",
                        detail_summary(doc)))
    parts.append(resend_form(doc, endpoints, idempotency_key, csrf))
    parts.append(fields_section(doc))
    return page(title, "".join(parts), assets=assets, csrf=csrf, current="notifications", refresh_ms=refresh_ms)


def resend_form(doc: Mapping[str, Any], endpoints: Sequence[str], key: str, csrf: str) -> str:
    nid = doc["id"]
    target = doc.get("resend_of") or nid
    opts = [("", "every endpoint that receives it")] + [(ep, ep) for ep in endpoints]
    options = "".join(f'<option value="{e(v)}">{e(t)}</option>' for v, t in opts)
    note = (f' Resending a resend resends its original, <code>{e(target)}</code>.' if doc.get("resend_of") else "")
    return (
        '<section class="resend-box" aria-labelledby="resend-h"><h2 id="resend-h">Resend</h2>'
        f'<form class="inline" method="post" action="{detail_href(nid)}/resend" data-once>'
        f'{csrf_field(csrf)}<input type="hidden" name="idempotency_key" value="{e(key)}">'
        f'<div class="field"><label for="resend-endpoint">Send to</label>'
        f'<select id="resend-endpoint" name="endpoint">{options}</select></div>'
        '<div class="field actions"><button type="submit">Resend</button></div></form>'
        '<p class="hint">A resend is a new notification (<code>…~r1</code>, <code>…~r2</code>) carrying the '
        f'original bytes, delivered like any other and listed below as a resend.{note}</p></section>'
    )


def detail_summary(doc: Mapping[str, Any]) -> str:
    parts = [f"{ep} {d.get('state', '')}" for ep, d in (doc.get("deliveries") or {}).items()]
    for r in doc.get("resends") or []:
        parts += [f"resend {r['id'].rpartition('~')[2]} to {ep} {d['state']}"
                  for ep, d in (r.get("deliveries") or {}).items()]
    return ("Deliveries: " + ", ".join(parts) + ".") if parts else "Not delivered anywhere yet."


def detail_fragment(doc: Mapping[str, Any]) -> str:
    deliveries: Mapping[str, Mapping[str, Any]] = doc.get("deliveries") or {}
    resends: Sequence[Mapping[str, Any]] = doc.get("resends") or []
    out = ['<section aria-labelledby="status-h"><h2 id="status-h">Status per endpoint</h2>']
    if not deliveries:
        if doc.get("routed"):
            out.append(empty_state("No endpoint receives this notification.",
                                   "Check the endpoints’ <code>sources</code> and <code>channels</code> in the "
                                   "config; then resend it."))
        else:
            out.append(empty_state("Not routed to endpoints yet.",
                                   "The fan-out job has not run: is a worker running? Start one with "
                                   "<code>relay worker</code>."))
    else:
        rows = []
        for ep, d in deliveries.items():
            state = str(d.get("state", ""))
            later = _resend_outcome(ep, resends)
            via = f' <span class="via">then {later}</span>' if later and state != "delivered" else ""
            last = d.get("reason") if state == "skipped" else d.get("last")
            rows.append(
                f'<tr data-endpoint="{e(ep)}" data-state="{e(state)}"><th scope="row">{e(ep)}</th>'
                f'<td data-label="State">{badge(state)}{via}</td>'
                f'<td data-label="Attempts">{e(d.get("attempts", 0))}</td>'
                f'<td data-label="Last result">{e(last) or "—"}</td>'
                f'<td data-label="Updated">{when(d.get("updated"))}</td>'
                f'<td data-label="Next try">{when(d.get("next")) if state == "retrying" else "—"}</td></tr>'
            )
        out.append('<table class="deliveries"><thead><tr><th scope="col">Endpoint</th><th scope="col">State</th>'
                   '<th scope="col">Attempts</th><th scope="col">Last result</th><th scope="col">Updated</th>'
                   f'<th scope="col">Next try</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')
    out.append("</section>")
    if deliveries:
        out.append('<section aria-labelledby="timeline-h"><h2 id="timeline-h">Attempts</h2>')
        for ep, d in deliveries.items():
            out.append(timeline(ep, d))
        out.append("</section>")
    if not doc.get("resend_of"):
        out.append('<section aria-labelledby="resends-h"><h2 id="resends-h">Resends</h2>')
        if resends:
            items = []
            for r in resends:
                ds = r.get("deliveries") or {}
                states = " ".join(badge(d["state"], f'{ep}: {d["state"].replace("_", " ")}')
                                  for ep, d in ds.items()) or '<span class="muted">queued, not routed yet</span>'
                items.append(f'<li data-id="{e(r["id"])}"><a href="{detail_href(r["id"])}">{e(r["id"])}</a> '
                             f'<span class="muted">queued {when(r.get("received_at"))}</span> '
                             f'<span class="badges">{states}</span></li>')
            out.append(f'<ul class="resends">{"".join(items)}</ul>')
        else:
            out.append('<p class="muted">Not resent yet.</p>')
        out.append("</section>")
    return "".join(out)


def _resend_outcome(ep: str, resends: Sequence[Mapping[str, Any]]) -> str:
    """The newest resend's state for ``ep`` (a link and a badge), or ''."""
    for r in reversed(resends):
        d = (r.get("deliveries") or {}).get(ep)
        if d:
            return f'resend <a href="{detail_href(r["id"])}">{e(r["id"].rpartition("~")[2])}</a> {badge(d["state"])}'
    return ""


def timeline(ep: str, d: Mapping[str, Any]) -> str:
    attempts: Sequence[Mapping[str, Any]] = d.get("attempt_log") or []
    head = f'<h3>{e(ep)} <span class="muted">· {len(attempts)} attempt{"s" if len(attempts) != 1 else ""}</span></h3>'
    if not attempts:
        state = d.get("state")
        hint = {"skipped": f"Not sent: {e(d.get('reason', 'filtered out'))}.",
                "pending": "Waiting for its first try: is a worker running (<code>relay worker</code>)?"}
        return head + f'<p class="muted">{hint.get(str(state), "No attempt recorded.")}</p>'
    items = []
    for a in attempts:
        if "unreadable" in a:
            items.append(f'<li><pre class="snippet">{e(a["unreadable"])}</pre></li>')
            continue
        outcome = str(a.get("outcome", ""))
        result = f'HTTP {e(a["status"])}' if a.get("status") is not None else e(a.get("error") or "no answer")
        bits = [result]
        if a.get("ms") is not None:
            bits.append(f'{e(a["ms"])} ms')
        if a.get("next"):
            bits.append(f'next try {when(a["next"])}')
        if a.get("resend"):
            bits.append("resend")
        message = f'<p class="message">{e(a["message"])}</p>' if a.get("message") else ""
        snippet = f'<pre class="snippet">{e(a["response"])}</pre>' if a.get("response") else ""
        items.append(
            f'<li class="attempt outcome-{e(outcome)}"><span class="n">#{e(a.get("n", "?"))}</span> '
            f'{when(a.get("at"))} {badge(_outcome_state(outcome), outcome)} '
            f'<span class="result">{" · ".join(bits)}</span>{message}{snippet}</li>'
        )
    return head + f'<ol class="timeline">{"".join(items)}</ol>'


def _outcome_state(outcome: str) -> str:
    return {"retry": "retrying"}.get(outcome, outcome)


def fields_section(doc: Mapping[str, Any]) -> str:
    fields: Mapping[str, Sequence[str]] | None = doc.get("fields")
    out = ['<section aria-labelledby="fields-h"><h2 id="fields-h">Body</h2>']
    if fields:
        rows = "".join(f'<tr><th scope="row"><code>{e(name)}</code></th>'
                       f'<td>{"<br>".join(map(_value, values))}</td></tr>' for name, values in fields.items())
        out.append('<details open><summary>Parsed fields</summary><table class="fields"><thead><tr>'
                   f'<th scope="col">Field</th><th scope="col">Value</th></tr></thead><tbody>{rows}</tbody></table>'
                   '</details>')
    elif doc.get("body_error"):
        out.append(flash("warn", f'The body is not a form: {e(doc["body_error"])}'))
    out.append(f'<details><summary>Raw body ({len(doc.get("body", "").encode())} bytes)</summary>'
               f'<pre class="raw">{e(doc.get("body", ""))}</pre></details>')
    out.append('<p class="hint">Values equal to a configured secret, and fields whose name contains PASSWORD, '
               'SECRET or TOKEN, are shown as <code>**redacted**</code>.</p></section>')
    return "".join(out)


def _value(value: str) -> str:
    return e(value) if value else '<span class="muted">(empty)</span>'


# -- bulk resend -------------------------------------------------------------------------------------


def bulk_page(*, filters: Mapping[str, str], description: str, dry: Mapping[str, Any], back: str,
              idempotency_key: str, assets: str, csrf: str) -> str:
    count = int(dry.get("count", 0))
    target = f" to <strong>{e(filters['endpoint'])}</strong>" if filters.get("endpoint") else \
        " to every endpoint that receives each one"
    parts = ['<h1>Resend matching notifications</h1>', f'<p>Selection: {description}.</p>']
    if count:
        noun = "notification" if count == 1 else "notifications"
        parts.append(f'<p class="confirm" id="bulk-count">This will resend <strong>{count}</strong> {noun}{target}. '
                     'Each resend is a new notification delivered like any other.</p>')
    else:
        parts.append(f'<p class="confirm" id="bulk-count">Nothing to resend: no notification in this selection '
                     f'needs it. <a href="{e(back)}">Back to the list</a>.</p>')
    skipped = int(dry.get("skipped_count", 0))
    if skipped:
        shown = "".join(f'<li><a href="{detail_href(s["id"])}">{e(s["id"])}</a>: {e(s["reason"])}</li>'
                        for s in dry.get("skipped", []))
        more = f"<p class=\"muted\">…and {skipped - len(dry.get('skipped', []))} more.</p>" \
            if skipped > len(dry.get("skipped", [])) else ""
        parts.append(f'<details><summary>{skipped} will be skipped</summary><ul>{shown}</ul>{more}</details>')
    if count:
        hidden = "".join(f'<input type="hidden" name="{e(k)}" value="{e(v)}">' for k, v in filters.items() if v)
        parts.append(
            f'<form class="inline" method="post" action="{BASE}/resend" data-once>{csrf_field(csrf)}{hidden}'
            f'<input type="hidden" name="idempotency_key" value="{e(idempotency_key)}">'
            f'<input type="hidden" name="expected" value="{count}">'
            f'<div class="field actions"><button type="submit" class="danger">Resend {count} '
            f'{"notification" if count == 1 else "notifications"}</button>'
            f'<a class="button secondary" href="{e(back)}">Cancel</a></div></form>'
        )
    return page("Resend matching notifications", "".join(parts), assets=assets, csrf=csrf, current="notifications")

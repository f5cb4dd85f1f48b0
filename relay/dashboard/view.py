"""Pure helpers for the dashboard's templates (``relay/dashboard/templates/``): text, URLs, numbers, geometry.

Nothing here returns HTML: the templates build the markup and Jinja2 escapes every value (autoescape
is on), so notification bodies, references and endpoint answers, all attacker-controlled text, can
only ever show as text. Times go to the templates as UTC text plus epoch milliseconds for ``data-ts``;
``static/dashboard.js`` rewrites them in the viewer's time zone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from relay.constants import DAY_MS
from relay.store.reconcile import order_link

BASE = "/dashboard"
STATE_LABELS = {"healthy": "Healthy", "failing": "Failing", "paused": "Paused"}
PERIODS = {
    "1h": ("Last hour", DAY_MS // 24),
    "24h": ("Last 24 hours", DAY_MS),
    "7d": ("Last 7 days", 7 * DAY_MS),
    "30d": ("Last 30 days", 30 * DAY_MS),
}
SEND_TEST = "relay send-test --channel ipn"
TITLES = {
    400: "Bad request",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    422: "Too broad",
    503: "Unavailable",
}


def href(path: str, params: Mapping[str, object] | None = None) -> str:
    """A dashboard URL with its query string (values that are None or empty left out)."""
    query = urlencode([(k, str(v)) for k, v in (params or {}).items() if v is not None and v != ""])
    return f"{path}?{query}" if query else path


def detail_href(nid: str) -> str:
    return f"{BASE}/notifications/{quote(nid, safe='')}"


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


@dataclass(frozen=True)
class Moment:
    """What a ``<time>`` element needs: ISO text, epoch ms, and the UTC text shown before the script runs."""

    iso: str
    ms: int
    text: str


def moment(value: object) -> Moment | None:
    ms = to_ms(value)
    if ms is None:
        return None
    at = datetime.fromtimestamp(ms / 1000, UTC)
    return Moment(at.isoformat(timespec="milliseconds").replace("+00:00", "Z"), ms, f"{at:%Y-%m-%d %H:%M:%S} UTC")


def when_text(ms: int) -> str:
    return f"{datetime.fromtimestamp(ms / 1000, UTC):%a %H:%M} UTC"


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


def percent(ok: int, fail: int) -> str | None:
    """The success rate as text (whole at 0 and 100, one decimal between), None without attempts."""
    total = ok + fail
    if not total:
        return None
    value = 100 * ok / total
    return f"{value:.0f}" if value in (0, 100) else f"{value:.1f}"


def plural(n: int, one: str, many: str | None = None) -> str:
    """``one`` or its plural: "delivery" → "deliveries" (a consonant and y), "attempt" → "attempts"."""
    if n == 1:
        return one
    if many is not None:
        return many
    if one.endswith("y") and len(one) > 1 and one[-2] not in "aeiou":
        return one[:-1] + "ies"
    return one + "s"


def digest(fragment: str) -> str:
    """Tells the page script whether a refreshed section changed."""
    return hashlib.blake2b(fragment.encode(), digest_size=8).hexdigest()


def outcome_state(outcome: str) -> str:
    """The badge colour of an attempt's outcome."""
    return {"retry": "retrying"}.get(outcome, outcome)


# -- the overview ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    x: int
    start: int
    ok: int
    fail: int
    ok_y: str | None = None  # None: no such part of the bar
    ok_h: str | None = None
    fail_y: str | None = None
    fail_h: str | None = None


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bar: int
    peak: int
    ok_total: int
    fail_total: int
    bars: list[Bar]


def chart(hours: Sequence[Mapping[str, int]], *, width: int = 240, height: int = 48, bar: int = 10) -> Chart:
    """Deliveries that ended delivered or failing per hour as stacked bars (oldest left), scaled to the busiest hour;
    a non-empty hour is at least 1 unit tall, and its failed part too."""
    peak = max((h["ok"] + h["fail"] for h in hours), default=0)
    bars = []
    for i, h in enumerate(hours):
        total = h["ok"] + h["fail"]
        x = i * bar + 1
        if not (total and peak):
            bars.append(Bar(x, h["start"], h["ok"], h["fail"]))
            continue
        full = max(1.0, (height - 2) * total / peak)
        fail_h = full * h["fail"] / total
        ok_h = full - fail_h
        bars.append(
            Bar(
                x,
                h["start"],
                h["ok"],
                h["fail"],
                ok_y=f"{height - ok_h:.2f}" if ok_h > 0 else None,
                ok_h=f"{ok_h:.2f}" if ok_h > 0 else None,
                fail_y=f"{height - full:.2f}" if fail_h > 0 else None,
                fail_h=f"{max(fail_h, 1.0):.2f}" if fail_h > 0 else None,
            )
        )
    return Chart(width, height, bar, peak, sum(h["ok"] for h in hours), sum(h["fail"] for h in hours), bars)


def state_reason(state: str, row: Mapping[str, Any]) -> str:
    """Why an endpoint card shows its state: the evaluation of health's figures (relay/store/stats.py)."""
    w = row.get("window") or {}
    share = w.get("share")
    figures = (
        f"{w.get('failing', 0)} of {w.get('attempted', 0)} deliveries failing in the last {w.get('hours', 0):g} h"
        if w.get("attempted")
        else f"no delivery in the last {w.get('hours', 0):g} h"
    )
    causes = row.get("causes") or []
    if state == "failing" and "head_retrying" in causes:
        held = row.get("held_back", 0)
        return (
            f"Failing: its head delivery is retrying ({row.get('last_error') or 'no answer'}), holding back "
            f"{held} {plural(held, 'notification')} behind it (serial endpoint); {figures}."
        )
    if state == "failing" and "given_up" in causes:
        failed = w.get("failed", 0)
        noun = plural(failed, "delivery", "deliveries")
        return f"Failing: {failed} {noun} given up in the last {w.get('hours', 0):g} h and not resent; {figures}."
    if state == "failing":
        return f"Failing: {figures} ({100 * (share or 0):.1f}%, threshold {w.get('threshold_percent', 0):g}%)."
    if state == "paused":
        return f"Paused by an operator: nothing is sent until it is resumed; {figures}."
    return f"{figures.capitalize()}; threshold {w.get('threshold_percent', 0):g}%." if w else "No figures."


def overview_summary(model: Mapping[str, Any]) -> str:
    report = model["report"]
    if not report["redis"]["reachable"]:
        return "Redis is unreachable."
    states = ", ".join(f"{name} {card['state']}" for name, card in model["endpoints"].items())
    return f"Relay {report['status']}." + (f" Endpoints: {states}." if states else "")


# -- the list and one notification -------------------------------------------------------------------


def list_summary(items: Sequence[Mapping[str, Any]]) -> str:
    states: dict[str, int] = {}
    for item in items:
        for d in (item.get("deliveries") or {}).values():
            states[d["state"]] = states.get(d["state"], 0) + 1
    counts = ", ".join(f"{n} {state.replace('_', ' ')}" for state, n in sorted(states.items()))
    return f"{len(items)} {plural(len(items), 'notification')} shown" + (f"; deliveries: {counts}." if counts else ".")


def detail_summary(doc: Mapping[str, Any]) -> str:
    parts = [f"{ep} {d.get('state', '')}" for ep, d in (doc.get("deliveries") or {}).items()]
    for r in doc.get("resends") or []:
        parts += [
            f"resend {r['id'].rpartition('~')[2]} to {ep} {d['state']}" for ep, d in (r.get("deliveries") or {}).items()
        ]
    return ("Deliveries: " + ", ".join(parts) + ".") if parts else "Not delivered anywhere yet."


def resend_outcome(ep: str, resends: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The newest resend that has a delivery to ``ep``, with that delivery, or None."""
    for r in reversed(resends):
        d = (r.get("deliveries") or {}).get(ep)
        if d:
            return {"id": r["id"], "n": r["id"].rpartition("~")[2], "state": d["state"]}
    return None


def body_bytes(body: str) -> int:
    return len(body.encode())


def filter_selects(choices: Mapping[str, Sequence[str]], custom: bool) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """The list's drop-downs: (name, label, [(value, text)]), each but the period starting with "Any"."""
    any_ = [("", "Any")]
    periods = [("", "Any time"), *[(key, value[0]) for key, value in PERIODS.items()]]
    if custom:
        periods.append(("custom", "Custom range (below)"))
    return [
        ("channel", "Channel", any_ + [(c, c.upper()) for c in choices["channel"]]),
        ("source", "Source", any_ + [(s, s) for s in choices["source"]]),
        ("endpoint", "Endpoint", any_ + [(x, x) for x in choices["endpoint"]]),
        ("state", "Delivery state", any_ + [(s, s.replace("_", " ")) for s in choices["state"]]),
        ("type", "Event type", any_ + [(t, t) for t in choices["type"]]),
        ("period", "Received", periods),
    ]


# what the templates may call, besides their own macros
GLOBALS: dict[str, Any] = {
    "BASE": BASE,
    "STATE_LABELS": STATE_LABELS,
    "PERIODS": PERIODS,
    "SEND_TEST": SEND_TEST,
    "TITLES": TITLES,
    "href": href,
    "detail_href": detail_href,
    "moment": moment,
    "when_text": when_text,
    "percent": percent,
    "plural": plural,
    "chart": chart,
    "state_reason": state_reason,
    "resend_outcome": resend_outcome,
    "outcome_state": outcome_state,
    "filter_selects": filter_selects,
    "body_bytes": body_bytes,
    "order_link": order_link,
}
FILTERS: dict[str, Any] = {"duration": duration, "digest": digest}

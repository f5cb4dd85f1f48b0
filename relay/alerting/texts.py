"""The readable text of each alert (docs/operations.md, "Example texts"): what is wrong, since when,
the figures, and what to do now, which depends on the state (retrying, or given up)."""

from __future__ import annotations

import socket
from typing import Any

from config.settings import Settings, http_base
from relay.store.reconcile import order_link
from relay.timefmt import iso_seconds, span


def dashboard(settings: Settings) -> str:
    admin = settings.admin
    return http_base(admin.host, admin.port or settings.server.port) + "/dashboard"


def _head() -> str:
    return f"relay on {socket.gethostname()}:"


def advice(p: dict[str, Any], settings: Settings) -> list[str]:
    """What to do about a failing endpoint, as its deliveries stand: retrying ones are sent now by
    ``relay retry`` (a resend finds nothing while they retry), given-up ones by a resend."""
    ep, link = p["endpoint"], dashboard(settings)
    lines = []
    if p["retrying"] or "head_retrying" in p["causes"]:
        lines.append(
            f"Deliveries are retrying: once {ep} is fixed, send them now with relay retry --endpoint {ep}, "
            f"or Retry now at {link}/endpoints/{ep}/retry."
        )
    if p["failed"]:
        lines.append(
            f"{p['failed']} given up: once {ep} is fixed, relay resend --endpoint {ep} --state failed "
            f"resends them (see relay notifications list --endpoint {ep} --state failed, or {link})."
        )
    return lines


def failing_text(p: dict[str, Any], settings: Settings, all_failing: int) -> str:
    share = 100 * (p["share"] or 0)
    oldest = p["oldest_waiting_s"]
    lines = [
        f"{_head()} endpoint {p['endpoint']} ({p['url_host']}) is failing since {p['since']}.",
        f"{p['failing']} of {p['attempted']} deliveries ({share:.1f}%) failed in the last {p['window_hours']:g} h "
        f"(threshold {p['threshold_percent']:g}%): {p['retrying']} retrying, {p['failed']} given up.",
    ]
    if "head_retrying" in p["causes"]:
        lines.append(
            f"It is a serial endpoint and its head delivery is retrying: {p['held_back']} "
            f"{'notification waits' if p['held_back'] == 1 else 'notifications wait'} behind it."
        )
    waiting = (
        "Nothing waits for it now."
        if oldest is None
        else f"Oldest waiting delivery: {span(int(oldest * 1000))} since receipt."
    )
    lines.append(f"Last error: {p['last_error'] or 'none recorded'} at {p['last_error_at'] or '-'}. {waiting}")
    if all_failing > 1:
        lines.append(
            f"All {all_failing} endpoints are failing: the cause may be on the relay's side "
            "(its network, DNS or proxy)."
        )
    lines += advice(p, settings)
    return "\n".join(lines)


def failing_title(p: dict[str, Any]) -> str:
    error = f", {p['last_error']}" if p["last_error"] else ""
    return f"endpoint {p['endpoint']} is failing ({p['failing']} of {p['attempted']} deliveries{error})"


def rejecting_text(p: dict[str, Any], settings: Settings) -> str:
    share = 100 * (p["share"] or 0)
    return "\n".join(
        [
            f"{_head()} source {p['source']} is refusing 2Checkout notifications since {p['since']}.",
            f"{p['refused']} of {p['requests']} requests ({share:.1f}%) refused in the last "
            f"{p['window_minutes']:g} min; last reason {p['reason']} ({p['channel']}): {p['detail']}.",
            "2Checkout retries a refused notification for 48 h and then drops it: fix the cause (e.g. the "
            "secret key in the config and in the 2Checkout panel) in time and they all arrive.",
            f"See: relay health, or {dashboard(settings)}",
        ]
    )


def silent_text(p: dict[str, Any], settings: Settings) -> str:
    return "\n".join(
        [
            f"{_head()} source {p['source']} is silent since {p['since']}: no notification accepted in "
            f"{p['expect_within_hours']:g} h (expect_within_hours).",
            f"Last notification: {p['last_at'] or 'none received yet'}.",
            "Check that the shop still sells, that 2Checkout's IPN/LCN/INS URLs point at this relay, and "
            f"relay health for refusals. See: {dashboard(settings)}",
        ]
    )


def missing_text(p: dict[str, Any], settings: Settings) -> str:
    """Orders in 2Checkout's list without their IPN (relay/store/reconcile.py), each with its link."""
    lines = [
        f"{_head()} source {p['source']}: {p['count']} order(s) in 2Checkout's order "
        f"list have no IPN in the status they reached (since {p['since']}):"
    ]
    lines += [
        f"  {r['reference']} {r['status']} (listed so since {r['first_seen']}): {order_link(r['reference'])}"
        for r in p["references"]
    ]
    if p["count"] > len(p["references"]):
        lines.append(
            f"  … and {p['count'] - len(p['references'])} more: relay reconcile --json lists "
            "up to 1,000 of them, the dashboard's reconciliation section too"
        )
    lines.append(
        "Reissue each notification from the order's page in the 2Checkout control panel; it then "
        "reaches your endpoints as any IPN and clears itself. Until then your systems do not know of it."
    )
    lines.append(f"See: relay health, or {dashboard(settings)}")
    return "\n".join(lines)


def reconcile_failing_text(p: dict[str, Any], settings: Settings) -> str:
    status = f"HTTP {p['http_status']}: " if p["http_status"] else ""
    return "\n".join(
        [
            f"{_head()} source {p['source']}: 2Checkout's order API cannot be read since {p['since']} "
            f"({status}{p['error']}).",
            "Until it can, orders 2Checkout never notified are not found; the missing orders shown are from the "
            "last pass that could read it. A 401 means the merchant code or the secret key is wrong, or the "
            "key lacks API access; a 5xx or a timeout is 2Checkout's side or the network.",
            f"See: relay reconcile --source {p['source']}, or {dashboard(settings)}",
        ]
    )


def paused_text(p: dict[str, Any], settings: Settings) -> str:
    return "\n".join(
        [
            f"{_head()} {p['message']}.",
            f"Its notifications wait, kept, until it is resumed: relay endpoints resume {p['endpoint']} "
            f"(or {dashboard(settings)}).",
        ]
    )


def no_worker_text(p: dict[str, Any], settings: Settings) -> str:
    last = (
        f"The last worker seen was {p['last_worker']} at {p['since']}."
        if p["last_worker"]
        else "No worker is known (a worker that stops cleanly removes itself)."
    )
    return "\n".join(
        [
            f"{_head()} no relay worker is alive: nothing is delivered. Notifications are still received and kept.",
            last,
            f"Start relay worker (see relay health, or {dashboard(settings)}).",
        ]
    )


def backlog_text(p: dict[str, Any], settings: Settings) -> str:
    return "\n".join(
        [
            f"{_head()} {p['message']}.",
            "Work waits longer than [health] max_pending_age: check relay health and the workers. "
            f"See: {dashboard(settings)}",
        ]
    )


def redis_text(error: str, url: str, since: str | None) -> str:
    return (
        f"{_head()} Redis at {url} is unreachable since {since} ({error}): nothing can be stored or "
        "delivered, and 2Checkout's notifications are answered 503 (it retries them for 48 h)."
    )


def recovered_text(what: str, since_ms: int | None, now_ms: int, detail: str) -> str:
    lasted = f" after {span(now_ms - since_ms)} (since {iso_seconds(since_ms)})" if since_ms else ""
    return f"{_head()} {what} recovered{lasted}. {detail}".rstrip()

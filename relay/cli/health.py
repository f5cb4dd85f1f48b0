"""Operator commands: ``relay health``, ``relay check-endpoints`` and ``relay send-test``."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Iterable, Sequence
from typing import Any

import aiohttp

from config.settings import Endpoint, Settings
from relay import __version__
from relay.cli.common import Commands, positive, settings_from
from relay.cli.output import clean, json_text
from relay.redact import shown_url

commands = Commands()


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    rows = [list(headers), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(headers))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def ago(ms: int | None, now_ms: int) -> str:
    if ms is None:
        return "-"
    s = max(0.0, (now_ms - ms) / 1000)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.0f} {unit} ago"
    return f"{s:.0f} s ago"


# -- relay health ---------------------------------------------------------------------------------


def _count(n: int, one: str, many: str | None = None) -> str:
    from relay.dashboard.view import plural

    return f"{n} {plural(n, one, many)}"


def _rate(window: dict[str, Any]) -> str:
    share = window["share"]
    return "-" if share is None else f"{100 * share:.1f}% of {window['attempted']}"


def _problem_line(p: dict[str, Any], now: int) -> str:
    since = f" (since {p['since']})" if p.get("since") else ""
    return f"  {p['kind']:<17} {p['message']}{since}"


def _mark(ep: dict[str, Any]) -> str:
    # a paused endpoint is never failing (stats.py): say why its row is quiet
    # THROTTLED: deliveries wait for its rate_limit (relay/store/throttle.py), which is no failure
    return " PAUSED" if ep["paused"] else " FAILING" if ep["failing"] else " THROTTLED" if ep.get("throttled") else ""


def render_health(report: dict[str, Any], url: str) -> str:
    now = report["checked_at"]
    redis = report["redis"]
    status = report["status"]
    head = f"relay health: {status if status == 'healthy' else status.upper()}"
    if not redis["reachable"]:
        return f"{head}\n  redis_unreachable  Redis at {url} is unreachable ({redis['error']})"
    lines = [head, *(_problem_line(p, now) for p in report["problems"])]
    queue, workers = report["queue"], report["workers"]
    seen = ", ".join(f"{w['name']} ({ago(w['last_seen'], now)})" for w in workers["list"][:5]) or "none known"
    lines += [
        "",
        f"redis    {url}: {redis['used_memory_human']} used, persistence {redis['persistence']}",
        f"waiting  {_count(queue['fanout'], 'notification')} awaiting fan-out, "
        f"{_count(queue['deliveries'], 'delivery')} waiting to be sent",
        f"workers  {workers['alive']} alive; last seen: {seen}",
    ]
    lines += [f"warning  {w}" for w in report["warnings"]]
    lines += [f"info     {n['message']}" for n in report.get("notes", [])]
    lines += (
        ["", *_endpoint_table(report["endpoints"], now)] if report["endpoints"] else ["", "no endpoints configured"]
    )
    return "\n".join(lines)


def _endpoint_table(endpoints: dict[str, Any], now: int) -> list[str]:
    """One row an endpoint, the failing ones first."""
    headers = (
        "endpoint",
        "pending",
        "in_flight",
        "retrying",
        "failed",
        "resolved",
        "delivered",
        "failing 1h",
        "failing 24h",
        "oldest",
        "last ok",
        "last fail",
    )
    rows = [
        (
            name + _mark(ep),
            str(ep["pending"]),
            str(ep["in_flight"]),
            str(ep["retrying"]),
            str(ep["failed"]),
            str(ep["resolved"]),
            str(ep["delivered"]),
            _rate(ep["last_hour"]),
            _rate(ep["last_day"]),
            "-" if ep["oldest_pending_age_s"] is None else f"{ep['oldest_pending_age_s']:.0f} s",
            ago(ep["last_ok"], now),
            ago(ep["last_fail"], now),
        )
        for name, ep in sorted(endpoints.items(), key=lambda item: not item[1]["failing"])
    ]
    return table(headers, rows)


async def _health(settings: Settings, max_pending_age: float | None) -> dict[str, Any]:
    from relay.store.connection import clock_ms, connect, redis_url
    from relay.store.stats import health_report

    redis = connect(redis_url(settings), timeout=settings.server.redis_timeout)
    try:
        return await health_report(redis, settings, await clock_ms(redis), max_pending_age=max_pending_age)
    finally:
        await redis.aclose()


def _health_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the full report as JSON (for scripts)")
    p.add_argument(
        "--max-pending-age",
        type=positive,
        metavar="SECONDS",
        help="unhealthy when a delivery has waited longer (default: [health] max_pending_age, 300)",
    )


@commands.add(
    "health",
    "the relay's health and its problems; exit 0 healthy, 1 degraded, 2 unhealthy, "
    "3 cannot evaluate (bad config or arguments)",
    _health_args,
)
def health(ns: argparse.Namespace) -> int:
    from relay.store.connection import redis_url, safe_url
    from relay.store.stats import STATUS_EXIT

    settings = settings_from(ns, require_secrets=False)
    report = asyncio.run(_health(settings, ns.max_pending_age))
    text = json_text(report) if ns.json else render_health(report, safe_url(redis_url(settings)))
    print("\n".join(clean(line) for line in text.splitlines()))
    return STATUS_EXIT[report["status"]]


# -- relay check-endpoints ------------------------------------------------------------------------


async def _check(session: aiohttp.ClientSession, ep: Endpoint) -> dict[str, Any]:
    status: int | None = None
    error = ""
    started = time.perf_counter()
    try:
        async with session.get(ep.url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=ep.timeout)) as resp:
            status = resp.status
    except TimeoutError:
        error = f"no answer within {ep.timeout:g} s"
    except aiohttp.ClientError as exc:
        error = f"{type(exc).__name__}: {exc}"
    ms = round((time.perf_counter() - started) * 1000, 1)
    ok = status in (200, 405)
    if status == 200:
        verdict = "ok"
    elif status == 405:
        # an endpoint that takes only POST answers GET with 405: it is up, which is all this checks
        verdict = "ok (reachable; answers GET with 405 Method Not Allowed, as a POST-only endpoint may)"
    else:
        verdict = error or f"expected HTTP 200, got {status}"
    return {"endpoint": ep.name, "url": shown_url(ep.url), "status": status, "ms": ms, "ok": ok, "verdict": verdict}


async def check_endpoints(endpoints: Iterable[Endpoint]) -> list[dict[str, Any]]:
    """GET every endpoint URL, as 2Checkout checks a listener URL, expecting HTTP 200."""
    async with aiohttp.ClientSession(headers={"User-Agent": f"2checkout-relay/{__version__}"}) as session:
        return list(await asyncio.gather(*(_check(session, ep) for ep in endpoints)))


def _json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the results as JSON")


@commands.add(
    "check-endpoints", "GET every endpoint URL and expect 200 (405 counts as reachable); exit 1 if any fails", _json_arg
)
def check_endpoints_cmd(ns: argparse.Namespace) -> int:
    settings = settings_from(ns, require_secrets=False)
    results = asyncio.run(check_endpoints(settings.endpoints.values()))
    if ns.json:
        print(json_text(results))
    elif not results:
        print("no endpoints configured")
    else:
        rows = [
            (clean(r["endpoint"]), clean(r["url"]), str(r["status"] or "-"), f"{r['ms']:.0f}", clean(r["verdict"]))
            for r in results
        ]
        print("\n".join(table(("endpoint", "url", "status", "ms", "verdict"), rows)))
    return 0 if all(r["ok"] for r in results) else 1

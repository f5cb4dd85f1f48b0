"""``relay notifications list|show`` and ``relay resend``: the admin API's operations, from a shell.

They talk to Redis directly (``REDIS_URL``, else the embedded server's port) through the same code as
the API (``relay/store/queries.py``, ``relay/store/resend.py``). Tables for people, ``--json`` for scripts. Exit
codes: 0 done, 1 not found / refused / Redis unreachable, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from redis.asyncio import Redis

from config.settings import Settings
from relay import constants as k
from relay.cli.common import (
    Commands,
    Usage,
    cli_origin,
    common_options,
    known_to_redis,
    notification_id,
    print_json,
    run_redis,
)
from relay.cli.output import clean
from relay.redact import redact_notification, redact_rows
from relay.store import detail, endpoints, queries
from relay.store.queries import BadParam
from relay.store.resend import Resender
from relay.store.resend_records import check_idempotency_key

commands = Commands()

FILTER_OPTIONS = ("channel", "source", "state", "endpoint", "since", "until", "ref", "type")


def _filter_options(p: argparse.ArgumentParser, *, endpoint_help: str) -> None:
    p.add_argument("--channel", help="ipn, lcn or ins")
    p.add_argument("--source", help="configured source name")
    p.add_argument("--state", help="delivery state: " + ", ".join(k.STATES))
    p.add_argument("--endpoint", help=endpoint_help)
    p.add_argument("--since", help="received at or after (ISO-8601 or epoch ms)")
    p.add_argument("--until", help="received at or before (ISO-8601 or epoch ms)")
    p.add_argument("--ref", help="REFNO, LICENSE_CODE or sale_id")
    p.add_argument("--type", help="event type, e.g. order.refunded (docs/events.md)")
    p.add_argument(
        "--include-resolved",
        action="store_true",
        help="with --state failed: also failures a delivered resend resolved (hidden by default)",
    )


def _hidden_config(p: argparse.ArgumentParser) -> None:
    common_options(p)


def _notifications_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser(
        "list",
        help="list notifications, newest first",
        description="List notifications, newest first. Filters combine with AND.",
    )
    _filter_options(ls, endpoint_help="routed to this endpoint (with --state: its delivery is in that state)")
    ls.add_argument("--limit", default=str(queries.DEFAULT_LIMIT), help=f"at most this many (1-{queries.MAX_LIMIT})")
    ls.add_argument("--cursor", help="continue a listing (printed after a full page)")
    ls.add_argument("--json", action="store_true", help="JSON for scripts")
    show = sub.add_parser(
        "show",
        help="one notification in full",
        description="One notification: parsed fields, raw body, deliveries, attempts and resends.",
    )
    show.add_argument("id")
    show.add_argument("--json", action="store_true", help="JSON for scripts")
    for sp in (ls, show):
        _hidden_config(sp)


def _resend_args(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Resend the original body of notifications, queued like a new one. Give an ID, or --ids, "
        "or filters (bulk: asks for confirmation; --yes when not in a terminal)."
    )
    p.add_argument("id", nargs="?", help="the notification to resend (a resend id resends its original)")
    p.add_argument("--ids", help="comma-separated notification ids")
    _filter_options(
        p,
        endpoint_help="with ID or --ids: the one endpoint to resend to; with filters: select "
        "deliveries to this endpoint and resend to it only",
    )
    p.add_argument("--dry-run", action="store_true", help="only count what a bulk resend would queue")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument("--idempotency-key", help="retrying with the same key resends nothing twice (24 h)")
    p.add_argument("--json", action="store_true", help="JSON for scripts")


@commands.add("notifications", "list and inspect stored notifications", _notifications_args)
def notifications(ns: argparse.Namespace) -> int:
    return run_redis(ns, _list if ns.action == "list" else _show)


@commands.add("resend", "resend notifications (one, --ids, or by filter) to their endpoints", _resend_args)
def resend(ns: argparse.Namespace) -> int:
    return run_redis(ns, _resend)


async def _filters(ns: argparse.Namespace, settings: Settings, redis: Redis) -> queries.Filters:
    values: dict[str, object] = {name: getattr(ns, name) for name in FILTER_OPTIONS}
    values["include_resolved"] = bool(getattr(ns, "include_resolved", False))
    # a removed endpoint's name still selects its deliveries, and one only the workers run (see known_names)
    return queries.check_known(queries.parse_filters(values), await endpoints.known_names(redis, settings))


def _state(d: dict[str, Any]) -> str:
    return f"{d['state']}→resolved" if d.get("resolved_by") else str(d["state"])


# -- notifications list / show -------------------------------------------------------------------


async def _list(ns: argparse.Namespace, settings: Settings, redis: Redis) -> int:
    limit = queries.parse_limit(ns.limit)
    filters = await _filters(ns, settings, redis)
    page = await queries.scan(redis, filters, limit=limit, cursor=ns.cursor, endpoints=list(settings.endpoints))
    items = redact_rows((row.summary() for row in page.items), settings)
    if ns.json:
        print_json({"items": items, "next_cursor": page.next_cursor, "index": page.index})
        return 0
    rows = [["ID", "RECEIVED", "CH", "SOURCE", "TYPE", "REF", "STATUS", "DELIVERIES"]]
    for item in items:
        deliveries = " ".join(f"{ep}:{_state(d)}" for ep, d in item["deliveries"].items()) or "(not routed yet)"
        rows.append(
            [
                clean(cell)
                for cell in (
                    item["id"],
                    item["received_at"] or "",
                    item["channel"],
                    item["source"],
                    item["type"] or "-",
                    item["ref"],
                    item["status"],
                    deliveries,
                )
            ]
        )
    _print_table(rows)
    if not items:
        print("no notifications match" + ("" if page.next_cursor is None else " in this stretch"))
    if page.next_cursor is not None:
        print(f"\nmore: add --cursor {page.next_cursor}")
    return 0


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]).rstrip())


# the facts `notifications show` prints first, in this order (the rest: fields, deliveries, resends)
SHOWN = (
    "id",
    "channel",
    "source",
    "received_at",
    "seq",
    "type",
    "ref",
    "status",
    "mtype",
    "message_id",
    "email",
    "test",
    "algo",
    "content_type",
    "resend_of",
    "targets",
)


async def _show(ns: argparse.Namespace, settings: Settings, redis: Redis) -> int:
    doc = redact_notification(await detail.detail(redis, notification_id(ns.id)), settings)
    if ns.json:
        print_json(doc)
        return 0
    for name in SHOWN:
        value = doc.get(name)
        if value not in (None, "", []):
            print(f"{name + ':':14} {clean(','.join(value) if isinstance(value, list) else value)}")
    print("fields:")
    for key, values in (doc["fields"] or {}).items():
        for value in values:
            print(f"  {clean(key)} = {clean(value)}")
    if doc.get("body_error"):
        print(f"  (no fields: {clean(doc['body_error'])})")
    print("deliveries:" if doc["deliveries"] else "deliveries:    none yet (not routed)")
    _print_deliveries(doc["deliveries"])
    if doc["resends"]:
        print("resends:")
        for r in doc["resends"]:
            states = " ".join(f"{ep}:{d['state']}" for ep, d in r["deliveries"].items()) or "(not routed yet)"
            print(f"  {clean(r['id'])} {clean(r['received_at'])} {clean(states)}")
    return 0


def _print_deliveries(deliveries: dict[str, Any]) -> None:
    for ep, d in deliveries.items():
        # the same fields as --json and the API (relay/store/detail.py), in words
        extra = " ".join(f"{key}={clean(d[key])}" for key in ("last", "next_at", "reason") if d.get(key))
        state = d["state"]
        if d["resolved_by"]:
            state = f"failed → resolved by resend {d['resolved_by']} at {d['resolved_at']},"
        elif d["cancelled_by"]:
            state = f"cancelled by {d['cancelled_by']} at {d['cancelled_at']},"
        elif d["paused_by"]:
            state = f"paused (endpoint paused by {d['paused_by']} at {d['paused_since']}),"
        print(f"  {clean(ep)}: {clean(state)} after {d['attempts']} attempt(s) {extra}".rstrip())
        for a in d["attempt_log"]:
            status = a.get("status") or a.get("error") or ""
            line = f"#{a.get('n')} {a.get('at')} {a.get('outcome')} {status} {a.get('message') or ''}"
            print(f"    {clean(line)}".rstrip())


# -- resend --------------------------------------------------------------------------------------


async def _resend(ns: argparse.Namespace, settings: Settings, redis: Redis) -> int:
    resender = Resender(redis, settings)
    key = check_idempotency_key(ns.idempotency_key)
    selectors = [name for name in FILTER_OPTIONS if name != "endpoint" and getattr(ns, name) is not None]
    if ns.id is not None or ns.ids is not None:
        return await _resend_named(ns, settings, resender, key, selectors)
    filters = await _filters(ns, settings, redis)
    if filters.empty:
        raise Usage("name a notification ID, --ids, or at least one filter (--state, --endpoint, --since, ...)")
    preview = await resender.bulk(filters=filters, dry_run=True)
    target = f" to {ns.endpoint}" if ns.endpoint else ""
    if ns.dry_run:
        if ns.json:
            print_json(preview)
        else:
            print(
                f"{preview['count']} notification(s) would be resent{target}"
                + (f"; {preview['skipped_count']} skipped" if preview["skipped_count"] else "")
            )
        return 0
    if preview["count"] == 0:
        # not "0 would be resent", exit 0, as if it were a dry run that found nothing wrong: nothing was
        # resent, and a script must not read that as done (exit 1, as `relay resend --ids` does)
        if ns.json:
            print_json({**preview, "dry_run": False})
        elif preview["skipped_count"]:
            _report_bulk(ns, {**preview, "resends": []})
        why = (
            f"{preview['skipped_count']} match, each skipped" if preview["skipped_count"] else "no notification matches"
        )
        print(f"relay: nothing to resend{target}: {why}", file=sys.stderr)
        return 1
    if not ns.yes and not _confirmed(f"{preview['count']} notification(s){target}"):
        return 1
    result = await resender.bulk(filters=filters, idempotency_key=key, origin=cli_origin())
    _report_bulk(ns, result)
    return 0


async def _resend_named(
    ns: argparse.Namespace, settings: Settings, resender: Resender, key: str | None, selectors: list[str]
) -> int:
    """``relay resend ID`` or ``relay resend --ids A,B``."""
    if ns.id is not None and ns.ids is not None:
        raise Usage("give ID or --ids, not both")
    if selectors:
        raise Usage(f"--{selectors[0]} selects by filter; it cannot be combined with ID or --ids")
    if ns.dry_run:
        raise Usage("--dry-run counts a bulk resend by filter; with ID or --ids nothing needs counting")
    if ns.id is not None:
        if ns.endpoint is not None:  # as the resend decides: what the workers run too, not this file alone
            await known_to_redis(resender.redis, settings, ns.endpoint)
        result = await resender.one(
            notification_id(ns.id), endpoint=ns.endpoint, idempotency_key=key, origin=cli_origin()
        )
        _report_one(ns, result)
        return 0
    # each of the right form, as a single ID must be (exit 2); only a well-formed unknown id is skipped
    ids = [notification_id(i.strip()) for i in ns.ids.split(",") if i.strip()]
    if not ids:
        raise BadParam("ids", ns.ids, "is empty")
    result = await resender.bulk(ids=ids, endpoint=ns.endpoint, idempotency_key=key, origin=cli_origin())
    _report_bulk(ns, result)
    if result["count"] == 0 and result["skipped_count"]:
        # as `relay resend ID` for an unknown one: a script must not read "nothing resent" as done
        print(f"relay: nothing resent: {result['skipped_count']} skipped", file=sys.stderr)
        return 1
    return 0


def _confirmed(what: str) -> bool:
    """Asked in a terminal whether to resend ``what``; without one, a usage error naming --yes."""
    if not sys.stdin.isatty():
        raise Usage(f"this resends {what}; add --yes to confirm (stdin is not a terminal, so there is no one to ask)")
    if input(f"Resend {what}? [y/N] ").strip().lower() in ("y", "yes"):
        return True
    print("aborted; nothing was resent", file=sys.stderr)
    return False


def _report_one(ns: argparse.Namespace, result: dict[str, Any]) -> None:
    if ns.json:
        print_json(result)
    else:
        print(clean(f"queued {result['id']} (resend of {result['resend_of']}) to {', '.join(result['targets'])}"))


def _report_bulk(ns: argparse.Namespace, result: dict[str, Any]) -> None:
    if ns.json:
        print_json(result)
        return
    print(f"queued {result['count']} resend(s)" + (" (replayed: already done)" if result.get("replayed") else ""))
    for r in result["resends"]:
        print(clean(f"  {r['id']} (resend of {r['resend_of']}) to {', '.join(r['targets'])}"))
    if result["skipped_count"]:
        print(f"skipped {result['skipped_count']}:")
        for s in result["skipped"]:
            print(clean(f"  {s['id']}: {s['reason']}"))

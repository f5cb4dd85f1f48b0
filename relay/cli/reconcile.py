"""``relay reconcile``: one reconciliation pass now, and the orders whose IPN never arrived.

Exit codes: 0 nothing missing; 1 at least one order missing; 2 the API (or Redis) could not be read, or
a bad argument or config. 1 is kept for "missing", so a script can tell the three apart.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import socket
import sys
import time
from typing import Any

import aiohttp
from redis.asyncio import Redis

from config.settings import Settings
from relay import constants as k
from relay.cli import devsecrets
from relay.cli.common import Commands, UsageError, settings_from
from relay.cli.output import clean, json_text
from relay.cli.sendtest import fill_from_dev_secrets
from relay.store import reconcile as store
from relay.store.connection import REDIS_ERRORS, connect, redis_url, safe_url
from workers.reconcile import run_pass

commands = Commands()

EXIT_NONE, EXIT_MISSING, EXIT_UNREADABLE = 0, 1, 2
# a worker's pass running for this source: wait for it to end, at most this long
WAIT_FOR_RUNNING_S = 60.0


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", metavar="S", help="only this source (default: every source with [sources.reconcile])")
    p.add_argument(
        "--json",
        action="store_true",
        help='print {"sources": [{"source", "missing": [{"reference", "status", "first_seen"}], "error"}]}',
    )


@commands.add(
    "reconcile",
    "compare 2Checkout's order list with the IPNs received, now; exit 0 nothing missing, "
    "1 orders missing, 2 the API could not be read",
    _args,
)
def reconcile_cmd(ns: argparse.Namespace) -> int:
    # under `relay dev` the secret key is the generated one, as for send-test
    filled = fill_from_dev_secrets(os.environ)
    settings = settings_from(ns, require_secrets=False)
    names = store.reconciled_sources(settings)
    if ns.source is not None:
        if ns.source not in settings.sources:
            raise UsageError(f"--source {ns.source!r}: no such source (known: {', '.join(sorted(settings.sources))})")
        if ns.source not in names:
            raise UsageError(f"--source {ns.source!r}: has no [sources.reconcile] table (docs/configuration.md)")
        names = [ns.source]
    if not names:
        raise UsageError("no source has a [sources.reconcile] table: nothing to compare (docs/configuration.md)")
    key_envs = {s.name: s.secret_key_env or "" for s in settings.file.sources}
    for name in names:
        # checked before any pass: a pass without the key would record reconcile_failing in Redis, a
        # problem (and an alert) for everyone caused by this shell's environment
        if settings.sources[name].secret_key is None:
            raise UsageError(
                f"source {name}: {key_envs[name]} is not set (its secret_key_env): 2Checkout's API "
                "is signed with the account's secret key"
            )
    used = sorted({key_envs[name] for name in names} & set(filled))
    if used:
        print(
            f"relay: using the development secrets in {devsecrets.SECRETS_FILE} for {', '.join(used)}", file=sys.stderr
        )
    url = redis_url(settings)
    try:
        states = asyncio.run(_run(settings, names, url))
    except REDIS_ERRORS as exc:
        print(f"relay: cannot reach Redis at {safe_url(url)}: {exc or type(exc).__name__}", file=sys.stderr)
        return EXIT_UNREADABLE
    if ns.json:
        print(json_text(store.view(states)))
    else:
        print("\n".join(clean(line) for line in _text(settings, states)))
    if any(doc["error"] for doc in states.values()):
        return EXIT_UNREADABLE
    return EXIT_MISSING if any(doc["count"] for doc in states.values()) else EXIT_NONE


async def _run(settings: Settings, names: list[str], url: str) -> dict[str, dict[str, Any]]:
    redis = connect(url, timeout=settings.server.redis_timeout)
    who = f"cli:{_user()}@{socket.gethostname()}"
    try:
        await redis.ping()
        async with aiohttp.ClientSession() as session:
            return {name: await _one(redis, session, settings, name, who) for name in names}
    finally:
        await redis.aclose()


async def _one(redis: Redis, session: aiohttp.ClientSession, settings: Settings, name: str, who: str) -> dict[str, Any]:
    source = settings.sources[name]
    assert source.reconcile is not None
    deadline = time.monotonic() + WAIT_FOR_RUNNING_S
    while not await store.take_turn(redis, name, who, now=True):
        if time.monotonic() > deadline:
            doc = store.load(await redis.get(k.reconcile_state(name)))
            doc["error"] = {
                "http_status": None,
                "message": f"a pass by another process has run for over {WAIT_FOR_RUNNING_S:g} s; try again later",
                "since": None,
                "at": None,
            }
            return doc
        await asyncio.sleep(0.5)
    try:
        return await run_pass(redis, session, source)
    finally:
        await store.end_turn(redis, name, who, source.reconcile.interval_ms)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "?"


def _text(settings: Settings, states: dict[str, dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for name, doc in states.items():
        cfg = settings.sources[name].reconcile
        assert cfg is not None
        if doc["error"]:
            lines.append(f"source {name}: 2Checkout's order API could not be read: {store.error_text(doc)}")
            if doc["checked_at"] is None:
                lines.append("  no pass has read it yet: nothing is known about missing orders")
                continue
            lines.append("  the last pass that could read it found:")
        listed = f"{doc['orders']} listed in the last {cfg.lookback_hours:g} h, grace {cfg.grace_minutes:g} min"
        if not doc["count"]:
            lines.append(f"source {name}: no order missing ({listed})")
            continue
        lines.append(f"source {name}: {doc['count']} order(s) without their IPN ({listed})")
        for row in store.missing_rows(doc):
            lines.append(
                f"  {row['reference']:<12} {row['status']:<20} first seen {row['first_seen']}  "
                f"{store.order_link(row['reference'])}"
            )
        if doc["count"] > len(doc["missing"]):
            lines.append(f"  … and {doc['count'] - len(doc['missing'])} more")
        lines.append(
            "  reissue each from its order page in the 2Checkout control panel (the link above): "
            "it is then delivered as any IPN, and the next pass clears it"
        )
    return lines

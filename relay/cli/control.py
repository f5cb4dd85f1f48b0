"""Operator control from a shell: ``relay endpoints pause|resume|list``, ``relay retry``, ``relay cancel``,
``relay reload`` and ``relay audit``.

The same code as the admin API (``relay/store/control.py``, ``relay/store/reload.py``,
``relay/store/audit.py``), straight on Redis. Actions on a whole endpoint ask for confirmation with the
number of deliveries they touch, as bulk resend does; ``--yes`` skips it. Every action is audited as
``cli`` with the user and host it came from.
"""

from __future__ import annotations

import argparse

from redis.asyncio import Redis

from config.settings import Settings
from relay.cli.common import (
    Commands,
    Usage,
    cli_origin,
    common_options,
    confirm,
    known_to_redis,
    notification_id,
    positive,
    print_json,
    run_redis,
)
from relay.store import audit, reload
from relay.store import endpoints as registry
from relay.store.control import Control
from relay.timefmt import iso_millis

commands = Commands()


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="JSON for scripts")


def _hidden_config(p: argparse.ArgumentParser) -> None:
    common_options(p)


# -- relay endpoints ------------------------------------------------------------------------------


def _endpoints_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (
        ("pause", "hold an endpoint's deliveries (no attempts, no retries spent) until resumed"),
        ("resume", "send a paused endpoint's deliveries again (serial ones in receipt order)"),
    ):
        sp = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        sp.add_argument("name", metavar="NAME", help="the endpoint")
        sp.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
        _json(sp)
        _hidden_config(sp)
    ls = sub.add_parser("list", help="the configured endpoints, with their waiting work and pause state")
    _json(ls)
    _hidden_config(ls)


def _deliveries(n: int, adjective: str = "") -> str:
    """``1 delivery``, ``2 deliveries``: an operator reads these lines, "1 deliveries" is a typo to them."""
    return f"{n} {adjective}deliver{'y' if n == 1 else 'ies'}"


@commands.add("endpoints", "pause, resume or list endpoints", _endpoints_args)
def endpoints(ns: argparse.Namespace) -> int:
    return run_redis(ns, _endpoints)


async def _endpoints(ns: argparse.Namespace, settings: Settings, redis: Redis) -> int:
    control = Control(redis, settings)
    if ns.action == "list":
        return await _list_endpoints(ns, settings, control)
    # the running relay's endpoints (relay:endpoints) count, not only this file's: it may be edited
    # and not yet reloaded, and the action itself asks Redis (relay/store/control.py)
    name = await known_to_redis(redis, settings, ns.name, "NAME")
    counts = await control.counts(name)
    n = counts[ns.action]
    verb = "Pause" if ns.action == "pause" else "Resume"
    if n and not confirm(
        ns,
        f"{verb} {name}? {n} waiting deliver{'y' if n == 1 else 'ies'} "
        f"{'would wait as paused' if ns.action == 'pause' else 'would be sent again'}.",
        f"this {ns.action}s endpoint {name} with {_deliveries(n, 'waiting ')}",
    ):
        return 1
    if ns.action == "pause":
        result = await control.pause(name, cli_origin())
        text = (
            f"endpoint {name} was already paused"
            if result["already"]
            else f"paused {name}: {_deliveries(result['count'], 'waiting ')} now "
            f"{'waits' if result['count'] == 1 else 'wait'} as paused"
        )
    else:
        result = await control.resume(name, cli_origin())
        text = f"resumed {name}: {_deliveries(result['count'])} {'is' if result['count'] == 1 else 'are'} due again"
    print_json(result) if ns.json else print(text)
    return 0


async def _list_endpoints(ns: argparse.Namespace, settings: Settings, control: Control) -> int:
    paused = await control.paused()
    # this file's endpoints, then those the running workers have that it lacks (edited, not yet reloaded)
    modes = {name: ep.mode for name, ep in settings.endpoints.items()}
    for name, ep in (await registry.running(control.redis)).items():
        modes.setdefault(name, ep.mode)
    rows = []
    shown: dict[str, int] = {}  # the table's "waiting"
    for name, mode in modes.items():
        counts = await control.counts(name)
        info = paused.get(name)
        # paused: what waits as paused, and what a pause cut short left pending or retrying (it said 100
        # of 250 waiting in a fault run: the paused ones only)
        shown[name] = counts["resume"] + counts["pause"] if info is not None else counts["pause"]
        rows.append(
            {
                "endpoint": name,
                "mode": mode,
                "paused": info is not None,
                "paused_since": iso_millis(info["since"]) if info else None,
                "paused_by": info["by"] if info else None,
                "waiting": counts["pause"],
                "paused_deliveries": counts["resume"],
            }
        )
    if ns.json:
        print_json(rows)
        return 0
    from relay.cli.health import table

    print(
        "\n".join(
            table(
                ("endpoint", "mode", "state", "waiting", "paused since", "by"),
                [
                    (
                        str(r["endpoint"]),
                        str(r["mode"]),
                        "paused" if r["paused"] else "active",
                        str(shown[str(r["endpoint"])]),
                        str(r["paused_since"] or "-"),
                        str(r["paused_by"] or "-"),
                    )
                    for r in rows
                ],
            )
        )
    )
    return 0


# -- relay retry / cancel -------------------------------------------------------------------------


def _retry_args(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Retry now, skipping the backoff wait: one notification's retrying delivery (ID, optionally "
        "--endpoint), or every retrying delivery of --endpoint (asks for confirmation). On a serial "
        "endpoint the head is retried first, so the order of receipt holds."
    )
    p.add_argument("id", nargs="?", help="the notification")
    p.add_argument("--endpoint", help="the endpoint")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    _json(p)


@commands.add("retry", "retry waiting deliveries now (one, or every one of an endpoint)", _retry_args)
def retry(ns: argparse.Namespace) -> int:
    return run_redis(ns, _retry)


async def _retry(ns: argparse.Namespace, settings: Settings, redis: Redis) -> int:
    control = Control(redis, settings)
    if ns.id is None:
        if ns.endpoint is None:
            raise Usage("name a notification ID, --endpoint, or both")
        name = await known_to_redis(redis, settings, ns.endpoint)
        n = (await control.counts(name))["retry"]
        if n == 0:
            result = await control.retry(cli_origin(), endpoint=name)
        elif not confirm(
            ns,
            f"Retry {n} deliver{'y' if n == 1 else 'ies'} to {name} now?",
            f"this retries {_deliveries(n)} to {name} now",
        ):
            return 1
        else:
            result = await control.retry(cli_origin(), endpoint=name)
        print_json(result) if ns.json else print(
            f"{_deliveries(result['count'])} to {name} {'is' if result['count'] == 1 else 'are'} due now"
        )
        return 0
    if ns.endpoint is not None:
        await known_to_redis(redis, settings, ns.endpoint)
    result = await control.retry(cli_origin(), nid=notification_id(ns.id), endpoint=ns.endpoint)
    if ns.json:
        print_json(result)
    else:
        print(f"{ns.id}: due now at " + ", ".join(f"{ep} ({n})" for ep, n in result["endpoints"].items()))
    return 0


def _cancel_args(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Cancel a waiting (pending, retrying or paused) delivery: it leaves the queue as cancelled, "
        "with who cancelled it and when; it is not a failure, and can be resent later."
    )
    p.add_argument("id", help="the notification")
    p.add_argument("--endpoint", help="the endpoint (default: every waiting delivery of the notification)")
    _json(p)


@commands.add("cancel", "cancel a waiting delivery", _cancel_args)
def cancel(ns: argparse.Namespace) -> int:
    return run_redis(ns, _cancel)


async def _cancel(ns: argparse.Namespace, settings: Settings, redis: Redis) -> int:
    if ns.endpoint is not None:
        await known_to_redis(redis, settings, ns.endpoint)
    result = await Control(redis, settings).cancel(notification_id(ns.id), cli_origin(), endpoint=ns.endpoint)
    print_json(result) if ns.json else print(f"{ns.id}: cancelled to {', '.join(result['cancelled'])}")
    return 0


# -- relay reload ---------------------------------------------------------------------------------


def _reload_args(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Ask every running relay process (serve and worker) to re-read its config file, through "
        "Redis. Prints each one's outcome and config hash; exits 1 if any refused or did not answer."
    )
    p.add_argument(
        "--wait",
        type=positive,
        default=reload.DEFAULT_WAIT_S,
        help=f"seconds to wait for the answers (default {reload.DEFAULT_WAIT_S:g})",
    )
    _json(p)


@commands.add("reload", "reload the config in every running process, without a restart", _reload_args)
def reload_config(ns: argparse.Namespace) -> int:
    return run_redis(ns, _reload)


async def _reload(ns: argparse.Namespace, settings: Settings, redis: Redis) -> int:
    result = await reload.request_reload(redis, cli_origin(), wait_s=ns.wait)
    if ns.json:
        print_json(result)
    else:
        if not result["asked"]:
            print("no relay process is listening (none running, or none started since reload was added)")
        for a in result["answers"]:
            line = f"{a['process']:<28} {a['role']:<7} {a['outcome']:<9} config {a['hash']}"
            if a["outcome"] == "reloaded":
                # what changed, in the file's keys (not each process's internal bookkeeping)
                if a.get("changed"):
                    line += " changed " + ",".join(a["changed"])
                restart = a.get("changes", {}).get("needs_restart")
                if restart:
                    line += " (needs a restart for: " + ", ".join(restart) + ")"
            print(line)
            if a.get("error"):
                print("  " + a["error"].replace("\n", "\n  "))
        for name in result["silent"]:
            print(f"{name:<28} did not answer within {ns.wait:g} s")
        if result["answered"] < result["asked"]:
            print(f"{result['asked'] - result['answered']} process(es) received the request but did not answer")
    return 0 if result["ok"] else 1


# -- relay audit ----------------------------------------------------------------------------------


def _audit_args(p: argparse.ArgumentParser) -> None:
    p.description = "The audit log of operator actions, newest first."
    p.add_argument("--limit", default=str(audit.DEFAULT_LIMIT), help=f"at most this many (1-{audit.MAX_LIMIT})")
    p.add_argument("--action", help="only this action: " + ", ".join(audit.ACTIONS))
    _json(p)


@commands.add("audit", "show the audit log of operator actions", _audit_args)
def audit_log(ns: argparse.Namespace) -> int:
    return run_redis(ns, _audit)


async def _audit(ns: argparse.Namespace, settings: Settings, redis: Redis) -> int:
    entries = await audit.read(redis, limit=audit.parse_limit(ns.limit), action=audit.parse_action(ns.action))
    if ns.json:
        print_json(entries)
        return 0
    if not entries:
        print("no audit entries")
    for e in entries:
        when = iso_millis(e.get("at")) or "?"
        where = e.get("via", "?") + (f" ({e['address']})" if e.get("address") else "")
        extra = " ".join(
            f"{key}={','.join(map(str, e[key])) if isinstance(e[key], list) else e[key]}"
            for key in ("reason", "outcome", "refused", "hashes", "changed")
            if e.get(key)
        )
        print(
            f"{when}  {e.get('action', '?'):<7} {e.get('target', ''):<40} {e.get('count', 0):>6}  {where}  "
            f"{extra}".rstrip()
        )
    return 0

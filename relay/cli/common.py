"""What every command module shares: a table of its commands, and loading the settings once."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import math
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis

from config.settings import DEFAULT_CONFIG_PATH, Settings, load_settings
from relay.cli.output import json_text
from relay.store.audit import Origin
from relay.store.connection import REDIS_ERRORS, connect, redis_url, safe_url
from relay.store.queries import BadParam, BadRequest, QueryError

Command = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """A command used in a way it cannot run (exit 2), said in one line."""


class ListenError(Exception):
    """A listen address in use or not available (exit 3), said in one line."""


def require_redis_url(settings: Settings, command: str) -> str:
    """``relay serve`` and ``relay worker`` run against a shared Redis only: an embedded one would be
    private to this process, and the other machines would never see what it holds."""
    if not settings.redis_url:
        raise UsageError(
            f"relay {command} needs REDIS_URL (the Redis that every ingress and worker shares), e.g. "
            "REDIS_URL=redis://127.0.0.1:6379/0; to run everything locally with an embedded Redis, use `relay dev`"
        )
    return settings.redis_url


AddArgs = Callable[[argparse.ArgumentParser], None]


def _no_args(p: argparse.ArgumentParser) -> None:
    pass


@dataclass(frozen=True)
class Spec:
    name: str
    help: str
    run: Command
    add_args: AddArgs


@dataclass
class Commands:
    """The commands of one module, in the order they are listed by ``relay --help``."""

    specs: list[Spec] = field(default_factory=list)

    def add(self, name: str, help: str, args: AddArgs = _no_args) -> Callable[[Command], Command]:
        def register(fn: Command) -> Command:
            self.specs.append(Spec(name, help, fn, args))
            return fn

        return register


# the processes that run until stopped log what they do; every other command prints its result, and
# logs only what goes wrong (warning and above) unless --verbose
LONG_RUNNING = frozenset({"serve", "worker", "dev", "demo-sink"})
QUIET_LEVELS = ("warning", "error", "critical")


def common_options(p: argparse.ArgumentParser, *, shown: bool = False) -> None:
    """``--config`` and ``--verbose``, accepted after any (sub)command as before it."""
    default = None if shown else argparse.SUPPRESS
    p.add_argument(
        "--config",
        default=default,
        help=f"configuration file (default: $RELAY_CONFIG or {DEFAULT_CONFIG_PATH})" if shown else argparse.SUPPRESS,
    )
    p.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        default=False if shown else argparse.SUPPRESS,
        help="log what the command does (info and above) to stderr; by default an operator command "
        "logs only warnings and errors"
        if shown
        else argparse.SUPPRESS,
    )


def log_level(ns: argparse.Namespace, configured: str) -> str:
    if getattr(ns, "verbose", False) or getattr(ns, "command", None) in LONG_RUNNING:
        return configured
    return configured if configured.lower() in QUIET_LEVELS else "warning"


def settings_from(ns: argparse.Namespace, *, require_secrets: bool = True) -> Settings:
    from config.logs import configure_logging

    settings = load_settings(ns.config, require_secrets=require_secrets)  # None: config_path's default
    configure_logging(settings.logging.format, log_level(ns, settings.logging.level))
    return settings


def known_endpoint(settings: Settings, name: str, what: str = "--endpoint") -> str:
    """A configured endpoint's name; an unknown one is a usage error (exit 2) listing the configured ones."""
    if name not in settings.endpoints:
        known = ", ".join(sorted(settings.endpoints)) or "none"
        raise Usage(f"{what} {name!r}: is not a configured endpoint (known: {known})")
    return name


async def known_to_redis(redis: Redis, settings: Settings, name: str, what: str = "--endpoint") -> str:
    """An endpoint an action on deliveries may name: configured in this file, run by a worker
    (``relay:endpoints``: the file may be edited and not yet reloaded) or removed with its deliveries
    still kept, as the actions themselves decide (relay/store/control.py); else a usage error (exit 2)."""
    from relay import constants as k
    from relay.store.params import NAME

    if name in settings.endpoints:
        return name
    # a name no endpoint can have is not asked about: one from undecodable bytes cannot even be sent
    if NAME.fullmatch(name):
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hexists(k.EP_REGISTRY, name)
            pipe.hexists(k.EP_REMOVED, name)
            if any(await pipe.execute()):
                return name
    running = {n.decode() for n in await redis.hkeys(k.EP_REGISTRY)}  # type: ignore[misc]
    known = ", ".join(sorted(running | set(settings.endpoints))) or "none"
    raise Usage(f"{what} {name!r}: is not a configured endpoint (known: {known})")


def notification_id(nid: str) -> str:
    """A notification ID of the right form; anything else is a usage error (exit 2), not "not found"."""
    from relay.store.queries import NID

    if not NID.fullmatch(nid):
        raise Usage(f"ID {nid!r}: is not a notification id (ipn_, lcn_ or ins_ and 24 hex digits; a resend adds ~r<n>)")
    return nid


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):  # float() reads "nan" and "inf": nan > limit is never true, so no backlog ever
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def base_url(text: str) -> str:
    """relay send-test --url: an http:// or https:// URL with a host: anything else reached aiohttp as
    "cannot reach the relay"."""
    try:
        text.encode()
    except UnicodeEncodeError:  # bytes that are not UTF-8 in the argument
        raise argparse.ArgumentTypeError(f"invalid --url {text!r}: not UTF-8") from None
    try:
        parts = urlsplit(text)  # raises ValueError for brackets holding no IPv6 address, or left open
        parts.port  # noqa: B018  (raises ValueError for a port outside 0 … 65535 or not a number)
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"invalid --url {text!r}: expected http://host:port or https://host")
    return text


def message_type(text: str) -> str:
    """relay send-test --message-type: 1 to 64 printable characters, as a 2Checkout message type is
    (COMPLETE, REFUND, ORDER_CREATED)."""
    # a surrogate (bytes that are not UTF-8 in the argument) is not printable: it could not be sent
    if not (0 < len(text) <= 64 and text.isprintable()):
        raise argparse.ArgumentTypeError(f"invalid --message-type {text!r}: expected 1 to 64 printable characters")
    return text


# -- commands that talk to Redis -----------------------------------------------------------------

Action = Callable[[argparse.Namespace, Settings, Redis], Awaitable[int]]


# a bad argument: printed as one line, exit 2 (one class, whether raised inside run_redis or before it)
Usage = UsageError


def run_redis(ns: argparse.Namespace, action: Action) -> int:
    """Load the settings, connect to Redis and run ``action``; errors become one line and an exit code
    (0 done, 1 not found / refused / Redis unreachable, 2 bad arguments)."""
    settings = settings_from(ns, require_secrets=False)
    return asyncio.run(_with_redis(ns, settings, action))


async def _with_redis(ns: argparse.Namespace, settings: Settings, action: Action) -> int:
    url = redis_url(settings)
    redis = connect(url, timeout=settings.server.redis_timeout)
    try:
        try:
            await redis.ping()
        except REDIS_ERRORS as exc:
            print(f"relay: cannot reach Redis at {safe_url(url)}: {exc or type(exc).__name__}", file=sys.stderr)
            return 1
        try:
            return await action(ns, settings, redis)
        except BadParam as exc:
            print(f"relay: {_option(exc.param)} {exc.value!r}: {exc.reason}", file=sys.stderr)
            return 2
        except (BadRequest, Usage) as exc:
            print(f"relay: {exc}", file=sys.stderr)
            return 2
        except QueryError as exc:
            print(f"relay: {exc.message}", file=sys.stderr)
            return 1
        except BrokenPipeError:
            raise  # the reader of our output left: relay.cli.main ends quietly (exit 141)
        except REDIS_ERRORS as exc:
            print(f"relay: Redis at {safe_url(url)} failed: {exc or type(exc).__name__}", file=sys.stderr)
            return 1
    finally:
        await redis.aclose()


def _option(param: str) -> str:
    name = param.removeprefix("filter.")
    return "ID" if name == "id" else "--" + name.replace("_", "-")


def print_json(doc: Any) -> None:
    # stored values come from outside: control characters are escaped even where json.dumps leaves them
    print(json_text(doc))


def confirm(ns: argparse.Namespace, question: str, what: str) -> bool:
    """Ask before a bulk action, as bulk resend does: ``--yes`` skips it; without a terminal it is refused."""
    if getattr(ns, "yes", False):
        return True
    if not sys.stdin.isatty():
        raise Usage(f"{what}; add --yes to confirm (stdin is not a terminal, so there is no one to ask)")
    answer = input(f"{question} [y/N] ")
    if answer.strip().lower() in ("y", "yes"):
        return True
    print("aborted; nothing was changed", file=sys.stderr)
    return False


def cli_origin() -> Origin:
    """Who the audit log says an action came from: ``cli`` with user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        user = "?"
    return Origin("cli", f"{user}@{socket.gethostname()}")

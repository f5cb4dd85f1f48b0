"""The ``relay`` command line. Each command module lists its commands; each command loads the settings
once and passes them down.

=============================  ===========================================================
module                         commands
=============================  ===========================================================
relay/cli/run.py               serve, worker, dev, demo-sink
relay/cli/health.py            health, check-endpoints
relay/cli/sendtest.py          send-test
relay/cli/notifications.py     notifications, resend
relay/cli/control.py           endpoints (pause, resume, list), retry, cancel, reload, audit
relay/cli/reconcile.py         reconcile
=============================  ===========================================================

Exit codes (README.md, "Command line"): 0 done; 1 Redis unreachable or refusing, or another runtime failure
reported in one line; 2 a configuration or usage error (a bad key or value, a malformed REDIS_URL,
``relay serve``/``relay worker`` without REDIS_URL); 3 a listen address already in use or not
available; 130 interrupted (Ctrl-C); 141 the reader of the output went away (``relay health | head``),
as for any Unix tool stopped by SIGPIPE, with no message.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from config.settings import ConfigError
from relay.cli import control, health, notifications, reconcile, run, sendtest
from relay.cli.common import ListenError, UsageError, common_options
from relay.store.connection import BadRedisURL, RedisUnavailable

EXIT_RUNTIME = 1
EXIT_CONFIG = 2
EXIT_LISTEN = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

GROUPS = (
    run.commands,
    health.commands,
    sendtest.commands,
    notifications.commands,
    control.commands,
    reconcile.commands,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay", description="Webhook relay for 2Checkout IPN, LCN and INS.")
    common_options(parser, shown=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        for spec in group.specs:
            p = sub.add_parser(spec.name, help=spec.help, description=spec.help)
            common_options(p)
            spec.add_args(p)
            p.set_defaults(func=spec.run)
    return parser


# `relay health` follows the monitoring-plugin convention (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN):
# when it cannot evaluate (bad config, bad arguments) it must not look like CRITICAL
UNKNOWN_EXIT = {"health": 3}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args if a in UNKNOWN_EXIT), None)
    parser = build_parser()
    try:
        ns = parser.parse_args(args)
    except SystemExit as exc:
        if exc.code == 2 and command is not None:  # argparse's usage error
            return UNKNOWN_EXIT[command]
        raise
    if not hasattr(ns, "config"):
        ns.config = None
    try:
        code = int(ns.func(ns))
        sys.stdout.flush()  # here, not at exit: a closed pipe is then caught below
        return code
    except BrokenPipeError:
        # the reader left (`relay health | head -3`): nothing more to say, and nowhere to say it;
        # stdout goes to /dev/null so the interpreter's own flush at exit stays quiet too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (ConfigError, UsageError, BadRedisURL) as exc:  # a clear one-line message instead of a traceback
        print(f"relay: {exc}", file=sys.stderr)
        return UNKNOWN_EXIT.get(ns.command, EXIT_CONFIG)
    except ListenError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return EXIT_LISTEN
    except RedisUnavailable as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED

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
=============================  ===========================================================
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from config.settings import ConfigError
from relay.cli import control, health, notifications, run, sendtest
from relay.store.connection import RedisUnavailable

GROUPS = (run.commands, health.commands, sendtest.commands, notifications.commands, control.commands)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay", description="Webhook relay for 2Checkout IPN, LCN and INS.")
    parser.add_argument("--config", help="configuration file (default: $RELAY_CONFIG or config/relay.toml)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        for spec in group.specs:
            p = sub.add_parser(spec.name, help=spec.help, description=spec.help)
            p.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
            spec.add_args(p)
            p.set_defaults(func=spec.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not hasattr(ns, "config"):
        ns.config = None
    try:
        return int(ns.func(ns))
    except (ConfigError, RedisUnavailable) as exc:  # a clear one-line message instead of a traceback
        print(f"relay: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    except KeyboardInterrupt:
        return 130

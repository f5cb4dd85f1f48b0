"""What every command module shares: a table of its commands, and loading the settings once."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from config.settings import Settings, load_settings

Command = Callable[[argparse.Namespace], int]
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


def settings_from(ns: argparse.Namespace, *, require_secrets: bool = True) -> Settings:
    from config.logs import configure_logging

    path = ns.config or os.environ.get("RELAY_CONFIG") or "config/relay.toml"
    settings = load_settings(path, require_secrets=require_secrets)
    configure_logging(settings.file.logging.format, settings.file.logging.level)
    return settings


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value

"""Every way in to the CLI answers --help: the ``relay`` script, ``python -m relay`` and
``python -m relay.cli``, for every command and every sub-action (found from the parser itself, so a
new command is covered without editing this list). Run as subprocesses from a directory with no
configuration: --help must need neither a config file nor Redis."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from relay.cli import build_parser

RELAY = str(Path(sys.executable).with_name("relay"))


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for action in parser._actions:  # argparse has no public way to list subcommands
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((*prefix, name))
                found += _commands(sub, (*prefix, name))
    return found


COMMANDS = _commands(build_parser())


def _help(argv: list[str], cwd: Path) -> str:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": str(Path(sys.executable).parent), "HOME": str(cwd)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


def test_the_parser_lists_every_command_group() -> None:
    assert {c[0] for c in COMMANDS} >= {"serve", "worker", "dev", "demo-sink", "health", "check-endpoints",
                                        "send-test", "notifications", "resend"}
    assert ("notifications", "list") in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_relay_command_help(command: tuple[str, ...], tmp_path: Path) -> None:
    out = _help([RELAY, *command, "--help"], tmp_path)
    assert out.startswith(f"usage: relay {' '.join(command)} ")


@pytest.mark.parametrize("module", ["relay", "relay.cli"])
def test_python_m_help(module: str, tmp_path: Path) -> None:
    assert _help([sys.executable, "-m", module, "--help"], tmp_path).startswith("usage: relay ")
    out = _help([sys.executable, "-m", module, "health", "--help"], tmp_path)
    assert out.startswith("usage: relay health ")

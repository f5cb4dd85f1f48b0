"""Every way in to the CLI answers --help: the ``relay`` script, ``python -m relay`` and
``python -m relay.cli``, for every command and every sub-action (found from the parser itself, so a
new command is covered without editing this list). --help must need neither a config file nor Redis, so
the calls run in a fresh interpreter started from a directory with no configuration and a bare
environment. One interpreter runs them all (each entry point run as ``python -m`` or the script would run
it, via runpy): about 25 interpreters used to start only to print a usage line."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from relay.cli import build_parser

RELAY = str(Path(sys.executable).with_name("relay"))

#: run in the child: each case is (how, target, argv); answers {exit code, stdout, stderr} per case
_CHILD = r"""
import contextlib, io, json, runpy, sys
out = []
for how, target, argv in json.loads(sys.stdin.read()):
    stdout, stderr = io.StringIO(), io.StringIO()
    code = None
    sys.argv = [target if how == "script" else "-m", *argv]
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            if how == "script":
                runpy.run_path(target, run_name="__main__")
            else:
                runpy.run_module(target, run_name="__main__", alter_sys=True)
        except SystemExit as exit:
            code = exit.code
    out.append({"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()})
print(json.dumps(out))
"""


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for action in parser._actions:  # argparse has no public way to list subcommands
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((*prefix, name))
                found += _commands(sub, (*prefix, name))
    return found


COMMANDS = _commands(build_parser())
CASES: list[tuple[str, str, list[str]]] = [
    *(("script", RELAY, [*command, "--help"]) for command in COMMANDS),
    *(("module", module, argv) for module in ("relay", "relay.cli") for argv in (["--help"], ["health", "--help"])),
]


@pytest.fixture(scope="module")
def helps(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str, tuple[str, ...]], str]:
    """Each case's --help output, after checking it exited 0 and wrote nothing to stderr."""
    cwd = tmp_path_factory.mktemp("no-config")
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=json.dumps(CASES),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": str(Path(sys.executable).parent), "HOME": str(cwd)},
    )
    assert proc.returncode == 0, proc.stderr
    results: list[dict[str, Any]] = json.loads(proc.stdout)
    assert len(results) == len(CASES)
    found = {}
    for (how, target, argv), result in zip(CASES, results, strict=True):
        assert result["code"] == 0, (argv, result)
        assert result["stderr"] == "", (argv, result["stderr"])
        found[how, target, tuple(argv)] = result["stdout"]
    return found


def test_the_parser_lists_every_command_group() -> None:
    assert {c[0] for c in COMMANDS} >= {
        "serve",
        "worker",
        "dev",
        "demo-sink",
        "health",
        "check-endpoints",
        "send-test",
        "notifications",
        "resend",
    }
    assert ("notifications", "list") in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_relay_command_help(command: tuple[str, ...], helps: dict[tuple[str, str, tuple[str, ...]], str]) -> None:
    assert helps["script", RELAY, (*command, "--help")].startswith(f"usage: relay {' '.join(command)} ")


@pytest.mark.parametrize("module", ["relay", "relay.cli"])
def test_python_m_help(module: str, helps: dict[tuple[str, str, tuple[str, ...]], str]) -> None:
    assert helps["module", module, ("--help",)].startswith("usage: relay ")
    assert helps["module", module, ("health", "--help")].startswith("usage: relay health ")

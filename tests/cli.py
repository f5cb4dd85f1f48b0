"""``relay`` commands run in the test process: ``relay.cli.main(argv)`` with its own environment, working
directory, stdin, stdout and stderr, as a child interpreter would have them, for about 1/100th of the cost
of starting one (an interpreter importing the relay takes ~1 s on a loaded 2-core machine).

For a test about what a command prints and its exit code. A test about the process itself (signals, a
closed pipe, ``serve``/``worker``/``dev``, start-up before the CLI's own handlers run) starts a real one
(tests/procs.py, or subprocess).

What the interpreter would do is done here too: an exception that escapes ``main`` is printed as a
traceback on stderr with exit 1, so a test asserting "no traceback" can still fail. Only the thread that
runs the command has its output captured: log lines an in-process worker or ingress writes meanwhile go
where they went. Calls are serialised (one environment, one working directory at a time), each in a
thread of its own (the command runs its own event loop); ``run_cli`` blocks the caller as subprocess.run
does, so a test that serves on its own event loop what the command talks to awaits ``cli_async``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import structlog
from structlog._config import BoundLoggerLazyProxy

import config.logs
from tests.support import TEST_ENV

_lock = threading.RLock()


@dataclass
class Done:
    """A finished command, named like subprocess.CompletedProcess's fields."""

    returncode: int
    stdout: str
    stderr: str


class _PerThread(io.TextIOBase):
    """A sys.stdout/stderr/stdin stand-in: the command's thread gets its own stream, others the original."""

    def __init__(self, original: TextIO) -> None:
        self.original = original
        self.streams: dict[int, TextIO] = {}

    def _target(self) -> TextIO:
        return self.streams.get(threading.get_ident(), self.original)

    def write(self, s: str) -> int:
        return self._target().write(s)

    def read(self, size: int | None = -1) -> str:
        return self._target().read(size)

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
        return self._target().readline(size)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return self._target().isatty()

    def fileno(self) -> int:
        return self._target().fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target(), "encoding", "utf-8") or "utf-8"


def _forget_cached_loggers() -> None:
    """structlog caches a module's logger on first use with the configuration of that moment; the CLI
    configures logging per command, so each command (and the test process after it) starts uncached."""
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in ("relay", "workers", "config"):
            for value in list(vars(module).values()):
                if isinstance(value, BoundLoggerLazyProxy):
                    vars(value).pop("bind", None)


@contextlib.contextmanager
def _logging_restored() -> Iterator[None]:
    """The command configures process-wide logging: put the test process's back afterwards."""
    structlog_config = structlog.get_config()
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("", "aiohttp.access", "arq.worker")}
    handlers = root.handlers[:]
    real = config.logs.configure_logging

    def configure(*args: Any) -> None:
        real(*args)
        structlog.configure(cache_logger_on_first_use=False)
        _forget_cached_loggers()

    config.logs.configure_logging = configure  # type: ignore[assignment]
    try:
        yield
    finally:
        config.logs.configure_logging = real  # type: ignore[assignment]
        structlog.configure(**structlog_config)
        root.handlers[:] = handlers
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        _forget_cached_loggers()


@contextlib.contextmanager
def _loop_policy_restored() -> Iterator[None]:
    """``relay serve`` and ``relay worker`` install uvloop's policy once past their checks: a test of a
    check that no longer stops them must not leave it to the rest of the session."""
    policy = asyncio.get_event_loop_policy()
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(policy)


@contextlib.contextmanager
def _environment(env: Mapping[str, str], cwd: Path | None) -> Iterator[None]:
    saved, here = dict(os.environ), os.getcwd()
    os.environ.clear()
    os.environ.update(env)
    if cwd is not None:
        os.chdir(cwd)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        os.chdir(here)


@contextlib.contextmanager
def _streams(out: TextIO, err: TextIO, stdin: TextIO) -> Iterator[None]:
    """This thread's sys.stdout, sys.stderr and sys.stdin, for the duration."""
    saved = sys.stdout, sys.stderr, sys.stdin
    me = threading.get_ident()
    proxies = [_PerThread(s) for s in saved]  # type: ignore[arg-type]
    for proxy, stream in zip(proxies, (out, err, stdin), strict=True):
        proxy.streams[me] = stream
    sys.stdout, sys.stderr, sys.stdin = proxies  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr, sys.stdin = saved


def run_cli(
    *argv: str,
    env: Mapping[str, str] | None = None,
    redis_url: str | None = None,
    cwd: Path | None = None,
    drop: tuple[str, ...] = (),
    stdin: str | TextIO = "",
) -> Done:
    """Run ``relay *argv`` here. Its environment is the test process's with TEST_ENV, ``redis_url`` as
    REDIS_URL (none given: none at all), ``env`` over them and the names in ``drop`` removed; stdin reads
    ``stdin`` and is not a terminal, as with ``subprocess.run(..., stdin=DEVNULL)``, unless ``stdin`` is an
    open file (a pseudo-terminal's, say)."""
    from relay.cli import main

    full = {n: v for n, v in os.environ.items() if n != "REDIS_URL"} | TEST_ENV
    if redis_url is not None:
        full["REDIS_URL"] = redis_url
    full = {n: v for n, v in (full | dict(env or {})).items() if n not in drop}
    return run_main(main, argv, env=full, cwd=cwd, stdin=stdin)


def run_main(
    main: Callable[[list[str]], int],
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: str | TextIO = "",
) -> Done:
    """Run a command line's ``main(argv)`` here, as a child interpreter would run it (``env``: its whole
    environment, the test process's if None)."""
    out, err = io.StringIO(), io.StringIO()
    codes: list[int] = []

    def command() -> None:  # in a thread of its own: the command runs its own event loop
        with _streams(out, err, io.StringIO(stdin) if isinstance(stdin, str) else stdin):
            try:
                codes.append(main(list(argv)))
            except SystemExit as exc:  # argparse's --help and usage errors
                codes.append(exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1))
                if isinstance(exc.code, str):
                    print(exc.code, file=sys.stderr)
            except BaseException:  # as the interpreter would: a traceback and exit 1
                traceback.print_exc(file=err)
                codes.append(1)

    with (
        _lock,
        _environment(dict(os.environ) if env is None else env, cwd),
        _logging_restored(),
        _loop_policy_restored(),
    ):
        thread = threading.Thread(target=command, name=f"{' '.join(argv)[:40]}")
        thread.start()
        thread.join(120)
        assert not thread.is_alive(), f"{' '.join(argv)} did not finish within 120 s"
    return Done(codes[0], out.getvalue(), err.getvalue())


async def cli_async(*argv: str, **kwargs: Any) -> Done:
    """``run_cli`` in a thread, for a test whose event loop serves what the command talks to."""
    return await asyncio.to_thread(run_cli, *argv, **kwargs)

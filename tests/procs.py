"""Real relay processes for tests that need separate processes (ordering across workers, SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.support import TEST_ENV


class RelayProcess:
    def __init__(self, config: Path, redis_url: str, *args: str, env: dict[str, str] | None = None,
                 prefix: tuple[str, ...] = (), preexec_fn: Callable[[], None] | None = None) -> None:
        """``prefix``: a wrapper command, e.g. ``("faketime", "-f", "+10m")``; ``preexec_fn`` runs in the
        child before exec (e.g. to lower its descriptor limit)."""
        self.log = config.parent / f"relay-{'-'.join(args)}-{time.monotonic_ns()}.log"
        full_env = {**os.environ, **TEST_ENV, "REDIS_URL": redis_url, **(env or {})}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([*prefix, sys.executable, "-m", "relay", "--config", str(config), *args],
                                         env=full_env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=preexec_fn,
                                         # its own process group: a wrapper (faketime forks the relay as its
                                         # child) must not leave the relay running against the session's Redis
                                         start_new_session=True)

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        if self.proc.poll() is None:
            self._signal_group(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(5)
        # a wrapper may be gone already while the relay it started still runs
        self._signal_group(signal.SIGKILL)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

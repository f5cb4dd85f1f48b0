"""The one process harness of the suite: a real ``python -m relay`` child process, its output in a log
file. Used wherever a test needs separate processes (ordering across workers, SIGKILL, relay dev, the
fault scenarios' cluster in tests/faults/harness.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.support import TEST_ENV


class RelayProcess:
    def __init__(
        self,
        config: Path,
        redis_url: str | None,
        *args: str,
        env: dict[str, str] | None = None,
        prefix: tuple[str, ...] = (),
        preexec_fn: Callable[[], None] | None = None,
        cwd: Path | None = None,
    ) -> None:
        """``redis_url``: the REDIS_URL it gets, or None for none at all (the config's redis section then
        decides, as for ``relay dev``); ``prefix``: a wrapper command, e.g. ``("faketime", "-f", "+10m")``;
        ``preexec_fn`` runs in the child before exec (e.g. to lower its descriptor limit); ``cwd``: where it
        runs and its log goes (``relay dev`` keeps its .relay/ there)."""
        self.args = args
        self.log = (cwd or config.parent) / f"relay-{'-'.join(args)}-{time.monotonic_ns()}.log"
        if redis_url is None:  # nothing of the session's Redis or admin token leaks in
            base = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RELAY_ADMIN_TOKEN")}
        else:
            base = {**os.environ, "REDIS_URL": redis_url}
        full_env = {**base, **TEST_ENV, **(env or {})}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [*prefix, sys.executable, "-m", "relay", "--config", str(config), *args],
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=preexec_fn,
                cwd=cwd,
                # its own process group: a wrapper (faketime forks the relay as its
                # child) must not leave the relay running against the session's Redis
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        if self.proc.poll() is None:
            self._signal_group(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(5)
        # a wrapper may be gone already while the relay it started still runs
        self._signal_group(signal.SIGKILL)

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log events called ``name`` this process wrote, each with ``at`` (epoch seconds)."""
        out: list[dict[str, Any]] = []
        for line in self.output().splitlines():
            if f'"{name}"' not in line:
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if doc.get("event") == name and "timestamp" in doc:
                doc["at"] = datetime.fromisoformat(doc["timestamp"].replace("Z", "+00:00")).timestamp()
                out.append(doc)
        return out

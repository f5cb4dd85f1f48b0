"""``relay serve --processes N``: N ingress processes on one port, so more cores take more load.

This process, the supervisor, serves nothing and binds nothing: it starts N ``relay serve --member I``
processes, the *members*, each of which runs the public listener with SO_REUSEPORT on the same
address (the kernel spreads the connections over them) and the same config. Member 0 also runs the
admin listener. Each member is a whole ``relay serve``: its own Redis connection, its own reloader
(so ``relay reload`` counts N answers), its own connection cap.

Why not bind here and hand the socket down: one shared listening socket leaves the balancing to
whichever process wakes first, and on Linux that is lopsided under load; SO_REUSEPORT gives each
member its own accept queue and spreads connections by their addresses. The supervisor still checks
first that the addresses are free (``_probe``), so a port in use is one line and exit 3, as with one
process, and a second ``relay serve --processes`` on the same port (which SO_REUSEPORT alone would let
join the first) is refused the same way.

/metrics must be the sum over the members, not the one member the kernel picked:
prometheus_client's multiprocess mode. The supervisor makes a private directory and passes it as
``PROMETHEUS_MULTIPROC_DIR``; every member writes its counters there, and /metrics reads them all
(relay/server.py, ``Member``). A member that dies leaves its files, so the sums never go backwards
when it is replaced. The directory is removed at exit.

Signals: SIGTERM and SIGINT stop every member gracefully (each finishes its in-flight requests; a
second signal kills them at once); SIGHUP is passed on to every member, each of which reloads its
config (a member still starting gets it once it says it is ready: before, the signal would end it).
A member that dies unexpectedly is restarted after a back-off (0.5 s, doubling to 30 s; back to 0.5 s
once a member has run a minute). A member that stops because its supervisor is gone
(SIGKILL) notices within a second and stops too.
"""

from __future__ import annotations

import errno
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from types import FrameType

import structlog

from config.settings import Settings

logger = structlog.get_logger()

START_TIMEOUT_S = 60.0
# above aiohttp's 60 s for in-flight requests to finish (AppRunner's shutdown_timeout)
STOP_TIMEOUT_S = 75.0
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
# a member that ran this long before it died starts again from the first back-off
STABLE_S = 60.0
TICK_S = 0.1


def supervise(settings: Settings, count: int, *, host: str | None, port: int | None) -> int:
    """Run ``count`` members until SIGTERM or SIGINT; the exit code of ``relay serve``."""
    public = (host or settings.server.host, port or settings.server.port)
    _probe(*public)
    admin = settings.admin
    if admin.port:
        _probe(admin.host, admin.port)
    metrics_dir = tempfile.mkdtemp(prefix="relay-metrics-")
    structlog.contextvars.bind_contextvars(pid=os.getpid())
    try:
        return _Supervisor(settings, count, host, port, metrics_dir).run(metrics_dir)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _probe(host: str, port: int) -> None:
    """Bind the address as a plain listener would (no SO_REUSEPORT) and let it go at once: an address
    in use by anything, another relay's members included, fails here with the error asyncio gives."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    for family, kind, proto, _, address in dict.fromkeys(infos):
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                reason = (exc.strerror or str(exc)).lower()
                raise OSError(
                    exc.errno or errno.EADDRINUSE, f"error while attempting to bind on address {address!r}: {reason}"
                ) from None


@dataclass
class _Member:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    ready_fd: int | None = None  # the read end of the member's readiness pipe
    ready: bool = False
    started: float = 0.0
    failures: int = 0
    restart_at: float = 0.0
    hup: bool = False  # a SIGHUP to pass on once it is ready (before, SIGHUP would end it)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


class _Supervisor:
    def __init__(self, settings: Settings, count: int, host: str | None, port: int | None, metrics_dir: str) -> None:
        self.count = count
        self.members = [_Member(i) for i in range(count)]
        self.env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
        self.command = [sys.executable, "-m", "relay", "--config", str(settings.config_path), "serve"]
        if host:
            self.command += ["--host", host]
        if port:
            self.command += ["--port", str(port)]
        self.stopping = False
        self.kill_now = False
        self.hup = False

    # -- signals: the handlers only set flags; the loop acts on them within TICK_S

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            self.kill_now = True  # a second Ctrl-C or SIGTERM: do not wait for in-flight requests
        self.stopping = True

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self.hup = True

    def run(self, metrics_dir: str) -> int:
        previous = {
            sig: signal.signal(sig, handler)
            for sig, handler in (
                (signal.SIGTERM, self._on_stop),
                (signal.SIGINT, self._on_stop),
                (signal.SIGHUP, self._on_hup),
            )
        }
        try:
            code = self._start_all()
            if code is None:
                logger.info(
                    "serve_processes_started",
                    processes=self.count,
                    pids=[m.proc.pid for m in self.members if m.proc is not None],
                    metrics_dir=metrics_dir,
                )
                self._watch()
                code = 0
            return code
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _start(self, m: _Member) -> int:
        """Start the member; its pid."""
        read_fd, write_fd = os.pipe()
        try:
            m.proc = subprocess.Popen(
                [*self.command, "--member", str(m.index), "--ready-fd", str(write_fd)],
                env=self.env,
                pass_fds=(write_fd,),
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        os.set_blocking(read_fd, False)
        m.ready_fd, m.ready, m.started, m.hup = read_fd, False, time.monotonic(), False
        return m.proc.pid

    def _close(self, m: _Member) -> None:
        if m.ready_fd is not None:
            os.close(m.ready_fd)
            m.ready_fd = None

    def _poll_ready(self) -> None:
        """Wait up to TICK_S for a member to say it listens (or for a signal); note who did."""
        fds = [m.ready_fd for m in self.members if m.ready_fd is not None and not m.ready]
        if not fds:
            time.sleep(TICK_S)
            return
        readable, _, _ = select.select(fds, [], [], TICK_S)
        for m in self.members:
            if m.ready_fd in readable:
                try:
                    data = os.read(m.ready_fd, 64)
                except BlockingIOError:
                    continue
                if data:
                    m.ready = True
                    if m.hup and m.alive():
                        assert m.proc is not None
                        m.hup = False
                        m.proc.send_signal(signal.SIGHUP)
                self._close(m)  # one message, or EOF: the member closed it (or died)

    def _start_all(self) -> int | None:
        """Member 0 first (it also binds the admin listener, so a start-up failure is said once),
        then the others together. None when all listen, else the exit code."""
        for batch in (self.members[:1], self.members[1:]):
            for m in batch:
                self._start(m)
            deadline = time.monotonic() + START_TIMEOUT_S
            while not all(m.ready for m in batch):
                if self.stopping:
                    return 0
                for m in batch:
                    assert m.proc is not None
                    code = m.proc.poll()
                    if code is not None and not m.ready:
                        return self._failed_to_start(m, code)
                if time.monotonic() > deadline:
                    late = [m.index for m in batch if not m.ready]
                    print(
                        f"relay: serve process {late[0]} did not start listening within {START_TIMEOUT_S:g} s",
                        file=sys.stderr,
                    )
                    return 1
                self._poll_ready()
        return None

    def _failed_to_start(self, m: _Member, code: int) -> int:
        if code in (2, 3):  # a configuration or listen error: the member said it in one line already
            return code
        print(
            f"relay: serve process {m.index} stopped with {_exit_text(code)} before it was listening", file=sys.stderr
        )
        return code if code > 0 else 1

    def _watch(self) -> None:
        """Until SIGTERM or SIGINT: pass SIGHUP on, and restart a member that died."""
        while not self.stopping:
            if self.hup:
                self.hup = False
                alive = [m for m in self.members if m.alive()]
                for m in alive:
                    assert m.proc is not None
                    if m.ready:
                        m.proc.send_signal(signal.SIGHUP)
                    else:  # still starting: it may have read the config before the change
                        m.hup = True
                logger.info("config_reload_forwarded", processes=len(alive))
            now = time.monotonic()
            for m in self.members:
                if m.proc is None:
                    if now >= m.restart_at:
                        logger.info("serve_process_restarted", proc=m.index, new_pid=self._start(m))
                    continue
                code = m.proc.poll()
                if code is None or self.stopping:  # stopping: a Ctrl-C reaches the members too
                    continue
                ran = now - m.started
                if m.ready and ran >= STABLE_S:
                    m.failures = 0
                delay = min(BACKOFF_FIRST_S * 2**m.failures, BACKOFF_MAX_S)
                m.failures += 1
                logger.error(
                    "serve_process_died",
                    proc=m.index,
                    dead_pid=m.proc.pid,
                    exit=_exit_text(code),
                    ran_s=round(ran, 1),
                    restart_in_s=delay,
                )
                self._close(m)
                m.proc, m.ready, m.restart_at = None, False, now + delay
            self._poll_ready()

    def _stop_all(self) -> None:
        """SIGTERM to every member, then wait for them to finish their in-flight requests."""
        running = [m for m in self.members if m.alive()]
        for m in running:
            assert m.proc is not None
            m.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while any(m.alive() for m in running):
            if self.kill_now or time.monotonic() > deadline:
                for m in running:
                    if m.alive():
                        assert m.proc is not None
                        logger.warning(
                            "serve_process_killed",
                            proc=m.index,
                            member_pid=m.proc.pid,
                            reason="second signal" if self.kill_now else "did not stop in time",
                        )
                        m.proc.kill()
                break
            time.sleep(TICK_S)
        for m in self.members:
            if m.proc is not None:
                try:
                    code = m.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    code = None
                if code not in (0, None, -signal.SIGTERM, -signal.SIGKILL):
                    logger.warning("serve_process_stopped", proc=m.index, member_pid=m.proc.pid, exit=_exit_text(code))
            self._close(m)

"""``relay dev``: an embedded Redis, the ingress, workers and the demo endpoint, watched as one.

What it promises (README, "Quick start"):

- a port already taken is found before anything starts: one line naming the port and how to change
  it, exit 3, never a traceback;
- "listening" is said once every listener accepts connections, never before;
- a child that dies (the embedded redis-server included) is reported at once, by name and exit
  status, and everything else is stopped: ``relay dev`` exits 1 (3 when it was ``relay serve``
  unable to listen), rather than run on half alive;
- the admin token is generated like the other development secrets when it is unset, so the
  dashboard is on, and its login URL is printed.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from config.settings import Settings, config_path, http_base
from relay.cli import devsecrets
from relay.cli.common import ListenError, settings_from

DEMO_SINK_PORT = 9001  # what config/relay.toml's demo endpoint posts to
READY_TIMEOUT_S = 60.0  # a child that has not opened its port by then is reported as stuck
WATCH_INTERVAL_S = 0.2
EXIT_CHILD_DIED = 1
EXIT_LISTEN = 3


@dataclass
class Child:
    name: str  # as the operator knows it: "relay serve", "relay worker 1", "embedded redis-server"
    proc: subprocess.Popen[bytes]


@dataclass(frozen=True)
class Port:
    host: str
    port: int
    what: str  # "the ingress"
    remedy: str  # how to get round it: "change [server] port in config/relay.toml"


def say(text: str) -> None:
    print(f"relay dev: {text}", file=sys.stderr, flush=True)


def run(ns: argparse.Namespace) -> int:
    """``relay dev``: start Redis (unless ``REDIS_URL``), the ingress, the workers and the demo sink; watch them.

    Long on purpose: every child is started, watched and stopped inside one try/finally, so that no
    exit path (a dead child, Ctrl-C, SIGTERM, a port taken) can leave one running.
    """
    from relay.store.connection import answers_ping, redis_url, start_embedded, stop_embedded

    # SIGTERM (a process manager, `timeout`) must run the cleanup below like Ctrl-C does, or the
    # children and the embedded redis-server would outlive us
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    env = dict(os.environ)
    config = config_path(ns.config, env)
    generated = devsecrets.fill_missing(config, env)
    os.environ.update(env)
    settings = settings_from(ns)
    for var in generated:
        say(f"{var} was not set; using a generated development value (kept in {devsecrets.SECRETS_FILE})")
    ports = _ports(settings, config, demo_sink=not ns.no_demo_sink)
    for p in ports:
        _check_free(p)
    if not settings.redis_url:
        _check_redis_port(settings, config)
    embedded = None if settings.redis_url else start_embedded(settings)
    # the children are `relay serve` and `relay worker`, which need REDIS_URL: the embedded one's
    env.setdefault("REDIS_URL", redis_url(settings))
    exe = [sys.executable, "-m", "relay"]
    cfg = ["--config", str(settings.config_path)]
    children: list[Child] = []
    if embedded is not None:
        children.append(Child("embedded redis-server", embedded))
    # a Redis another relay dev started (same data directory) is not our child: watch that it answers
    shared_redis = None if settings.redis_url or embedded is not None else settings.redis.port
    try:
        if not ns.no_demo_sink:
            children.append(
                Child("demo sink", subprocess.Popen([*exe, "demo-sink", "--port", str(DEMO_SINK_PORT)], env=env))
            )
        children.append(Child("relay serve", subprocess.Popen([*exe, "serve", *cfg], env=env)))
        workers = ns.workers
        for i in range(workers):
            name = "relay worker" if workers == 1 else f"relay worker {i + 1}"
            children.append(Child(name, subprocess.Popen([*exe, "worker", *cfg], env=env)))

        def alive() -> int | None:
            code = _died(children)
            if code is None and shared_redis is not None and not answers_ping(shared_redis):
                say(
                    f"the Redis on port {shared_redis} (started by another relay dev) stopped answering; "
                    "stopping everything"
                )
                return EXIT_CHILD_DIED
            return code

        code = _wait_listening(ports, alive)
        if code is not None:
            return code
        _announce(settings, ports)
        while (code := alive()) is None:  # until a child dies, or Ctrl-C / SIGTERM
            time.sleep(WATCH_INTERVAL_S)
        return code
    except KeyboardInterrupt:
        return 0
    finally:
        # a second SIGTERM or Ctrl-C while we stop (`timeout make run` sends two: timeout's to the
        # group and make's own it forwards) must not cut this short: the embedded redis-server has a
        # session of its own, no group signal reaches it, and it would outlive us holding its port
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _stop([c for c in children if c.proc is not embedded])
        stop_embedded(embedded)


def _ports(settings: Settings, config: Path, *, demo_sink: bool) -> list[Port]:
    server, admin = settings.server, settings.admin
    ports = [Port(server.host, server.port, "the ingress", f"change [server] port in {config}")]
    if admin.port:
        ports.append(Port(admin.host, admin.port, "the admin API and dashboard", f"change [admin] port in {config}"))
    if demo_sink:
        ports.append(Port("127.0.0.1", DEMO_SINK_PORT, "the demo endpoint", "run relay dev --no-demo-sink"))
    return ports


def _check_free(p: Port) -> None:
    """Bind ``p`` as the child will (SO_REUSEADDR, as asyncio does) and let go: taken is exit 3."""
    try:
        infos = socket.getaddrinfo(p.host, p.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ListenError(
            f"cannot listen on {p.host}:{p.port} ({p.what}): the address does not resolve ({exc.strerror}); {p.remedy}"
        ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ListenError(
                    f"port {p.port} ({p.what}) is already in use: stop what holds it, or {p.remedy}"
                ) from None
            raise ListenError(f"cannot listen on {p.host}:{p.port} ({p.what}): {exc.strerror}; {p.remedy}") from None


def _check_redis_port(settings: Settings, config: Path) -> None:
    """The embedded Redis's port held by something that is not a Redis: redis-server would only log it."""
    from relay.store.connection import answers_ping

    port = settings.redis.port
    if answers_ping(port):
        return  # a Redis: start_embedded reuses it if it is ours, and says so if not
    _check_free(Port("127.0.0.1", port, "the embedded Redis", f"change [redis] port in {config}, or set REDIS_URL"))


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _died(children: list[Child]) -> int | None:
    """The exit code for ``relay dev`` once a child has died (said in one line), None while all run."""
    for c in children:
        code = c.proc.poll()
        if code is None:
            continue
        say(f"{c.name} (pid {c.proc.pid}) {_describe_exit(code)}; stopping everything")
        # relay serve exits 3 when it cannot listen (a port taken since the check): say so as we do
        return EXIT_LISTEN if code == EXIT_LISTEN and c.name == "relay serve" else EXIT_CHILD_DIED
    return None


def _accepts(p: Port) -> bool:
    host = "127.0.0.1" if p.host in ("0.0.0.0", "") else ("::1" if p.host == "::" else p.host)
    try:
        with socket.create_connection((host, p.port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_listening(ports: list[Port], alive: Callable[[], int | None]) -> int | None:
    """Wait until every port accepts a connection; an exit code if a child died first."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    waiting = list(ports)
    while waiting:
        code = alive()
        if code is not None:
            return code
        waiting = [p for p in waiting if not _accepts(p)]
        if not waiting:
            return None
        if time.monotonic() > deadline:
            say(
                f"{waiting[0].what} did not start listening on port {waiting[0].port} within "
                f"{READY_TIMEOUT_S:g} s; stopping everything"
            )
            return EXIT_CHILD_DIED
        time.sleep(0.1)
    return None


def _announce(settings: Settings, ports: list[Port]) -> None:
    server, admin = settings.server, settings.admin
    say(
        f"listening on {http_base(server.host, server.port)}/ipn (and /lcn, /ins); try `relay send-test` in "
        "another terminal; Ctrl-C stops everything"
    )
    base = http_base(admin.host, admin.port) if admin.port else http_base(server.host, server.port)
    token = settings.admin_token
    if token is None:
        say(f"admin API and dashboard are off: {settings.server.admin_token_env} is empty")
    elif devsecrets.stored(settings.server.admin_token_env) == token.reveal():
        # the generated development token: shown, so the login works by copy and paste
        say(f"dashboard: {base}/dashboard/login (token {token.reveal()}, kept in {devsecrets.SECRETS_FILE})")
    else:
        # the operator's own token is never printed
        say(f"dashboard: {base}/dashboard/login (log in with the token in {settings.server.admin_token_env})")


def _stop(children: list[Child]) -> None:
    for c in children:
        if c.proc.poll() is None:
            c.proc.send_signal(signal.SIGTERM)
    for c in children:
        try:
            c.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            c.proc.kill()
            c.proc.wait(5)

"""The long-running commands: ``relay serve``, ``relay worker``, ``relay dev`` and ``relay demo-sink``."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from config.settings import Settings, parse_processes, process_count
from relay.cli.common import Commands, ListenError, UsageError, require_redis_url, settings_from

commands = Commands()


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # optional: plain asyncio works, just slower
        return
    import asyncio

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _port(text: str) -> int:
    """A TCP port, 1 … 65535, as ``[server] port`` takes: the event loop would bind 99999 modulo 65536."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: expected a number 1 … 65535") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: expected a number 1 … 65535")
    return port


def _processes(text: str) -> int | str:
    try:
        return parse_processes("auto" if text == "auto" else int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid --processes value {text!r}: expected 1 … 64, or 0 or auto for one per CPU") from None


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="listen address (default: [server] host)")
    p.add_argument("--port", type=_port, help="listen port (default: [server] port)")
    p.add_argument("--processes", type=_processes, metavar="N",
                   help="ingress processes sharing the port, 1 … 64; 0 or auto: one per CPU (default: "
                        "[server] processes, 1)")
    # set by the supervisor of --processes N on the processes it starts (relay/cli/supervise.py)
    p.add_argument("--member", type=int, help=argparse.SUPPRESS)
    p.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)


@commands.add("serve", "run the ingress and the admin listener (the Procfile's web: process)", _serve_args)
def serve(ns: argparse.Namespace) -> int:
    import asyncio

    from relay.store.connection import check_url

    settings = settings_from(ns)
    check_url(require_redis_url(settings, "serve"))
    count = process_count(ns.processes if ns.processes is not None else settings.server.processes)
    if ns.member is None and count > 1:
        from relay.cli.supervise import supervise

        with _listen_errors(settings, ns):
            return supervise(settings, count, host=ns.host, port=ns.port)
    from relay.server import Member
    from relay.server import serve as run_listeners

    member = None
    if ns.member is not None:
        import structlog

        metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not metrics_dir:
            raise UsageError("relay serve --member is started by relay serve --processes N, not by hand")
        member = Member(ns.member, metrics_dir, ns.ready_fd)
        # every log line of a member says which one it is (and its pid, as `relay reload` names it)
        structlog.contextvars.bind_contextvars(proc=ns.member, pid=os.getpid())
    _use_uvloop()
    with _listen_errors(settings, ns):
        asyncio.run(run_listeners(settings, host=ns.host, port=ns.port, member=member))
    return 0


@contextlib.contextmanager
def _listen_errors(settings: Settings, ns: argparse.Namespace) -> Iterator[None]:
    """A listen address that does not resolve, is in use or is not available: one line, exit 3."""
    try:
        yield
    except socket.gaierror as exc:  # an OSError whose errno is the resolver's (EAI_*), not errno's
        admin = settings.file.admin
        hosts = f"host {ns.host or settings.server.host!r}" + (f", [admin] host {admin.host!r}" if admin.port else "")
        reason = exc.strerror or exc
        raise ListenError(f"cannot listen: a listen address does not resolve ({reason}): {hosts}") from None
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            # asyncio's and uvloop's message already names the address ("error while attempting to
            # bind on address ('127.0.0.1', 8080): address already in use")
            raise ListenError(f"cannot listen: {exc.strerror or exc}") from None
        raise


@commands.add("worker", "run a delivery worker (the Procfile's worker: process)")
def worker(ns: argparse.Namespace) -> int:
    from relay.store.connection import check_url
    from workers.main import run

    settings = settings_from(ns)
    check_url(require_redis_url(settings, "worker"))
    _use_uvloop()
    run(settings)
    return 0


def _dev_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=1, help="worker processes to start (default 1)")
    p.add_argument("--no-demo-sink", action="store_true", help="do not start the demo endpoint on :9001")


@commands.add("dev", "run Redis (embedded), the ingress, workers and a demo endpoint together", _dev_args)
def dev(ns: argparse.Namespace) -> int:
    from relay.cli import devsecrets
    from relay.store.connection import redis_url, start_embedded, stop_embedded

    # SIGTERM (a process manager, `timeout`) must run the cleanup below like Ctrl-C does, or the
    # children and the embedded redis-server would outlive us
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    env = dict(os.environ)
    generated = devsecrets.fill_missing(Path(ns.config or env.get("RELAY_CONFIG") or "config/relay.toml"), env)
    os.environ.update(env)
    settings = settings_from(ns)
    for var in generated:
        print(f"relay dev: {var} was not set; using a generated development value "
              f"(kept in {devsecrets.SECRETS_FILE})", file=sys.stderr)
    embedded = None if settings.redis_url else start_embedded(settings)
    # the children are `relay serve` and `relay worker`, which need REDIS_URL: the embedded one's
    env.setdefault("REDIS_URL", redis_url(settings))
    exe = [sys.executable, "-m", "relay"]
    cfg = ["--config", str(settings.config_path)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if not ns.no_demo_sink:
            procs.append(subprocess.Popen([*exe, "demo-sink"], env=env))
        procs.append(subprocess.Popen([*exe, "serve", *cfg], env=env))
        for _ in range(max(1, ns.workers)):
            procs.append(subprocess.Popen([*exe, "worker", *cfg], env=env))
        admin = settings.file.admin
        print(f"relay dev: listening on http://{settings.server.host}:{settings.server.port}/ipn "
              "(and /lcn, /ins); try `relay send-test` in another terminal; Ctrl-C stops everything",
              file=sys.stderr)
        if admin.port:
            print(f"relay dev: admin API and dashboard on http://{admin.host}:{admin.port}/dashboard "
                  f"(set {settings.server.admin_token_env} to turn them on)", file=sys.stderr)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        return next((p.returncode for p in procs if p.returncode), 0) or 0
    except KeyboardInterrupt:
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        stop_embedded(embedded)


def _sink_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=9001)


@commands.add("demo-sink", "run a demo endpoint that prints every notification it receives", _sink_args)
def demo_sink(ns: argparse.Namespace) -> int:
    from relay.cli.demo_sink import run

    run(ns.host, ns.port)
    return 0

"""The long-running commands: ``relay serve``, ``relay worker``, ``relay dev`` and ``relay demo-sink``."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import socket
from collections.abc import Iterator

from config.settings import ADMIN_APART, Settings, admin_clash, parse_processes, process_count
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
            f"invalid --processes value {text!r}: expected 1 … 64, or 0 or auto for one per CPU"
        ) from None


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="listen address (default: [server] host)")
    p.add_argument("--port", type=_port, help="listen port (default: [server] port)")
    p.add_argument(
        "--processes",
        type=_processes,
        metavar="N",
        help="ingress processes sharing the port, 1 … 64; 0 or auto: one per CPU (default: [server] processes, 1)",
    )
    # set by the supervisor of --processes N on the processes it starts (relay/cli/supervise.py)
    p.add_argument("--member", type=int, help=argparse.SUPPRESS)
    p.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)


@commands.add("serve", "run the ingress and the admin listener (the Procfile's web: process)", _serve_args)
def serve(ns: argparse.Namespace) -> int:
    import asyncio

    from relay.store.connection import check_url

    settings = settings_from(ns)
    check_url(require_redis_url(settings, "serve"))
    host, port = ns.host or settings.server.host, ns.port or settings.server.port
    if (ns.port or ns.host) and admin_clash(host, port, settings.file.admin):  # the file's own pair: as it loaded
        raise UsageError(f"--port {port}: is [admin] port too (on {host}); {ADMIN_APART}")
    count = process_count(ns.processes if ns.processes is not None else settings.server.processes)
    if ns.member is None and count > 1:
        from relay.cli.supervise import supervise

        with _listen_errors(_serve_hosts(settings, ns)):
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
    with _listen_errors(_serve_hosts(settings, ns)):
        asyncio.run(run_listeners(settings, host=ns.host, port=ns.port, member=member))
    return 0


def _serve_hosts(settings: Settings, ns: argparse.Namespace) -> str:
    admin = settings.admin
    return f"host {ns.host or settings.server.host!r}" + (f", [admin] host {admin.host!r}" if admin.port else "")


@contextlib.contextmanager
def _listen_errors(hosts: str) -> Iterator[None]:
    """A listen address that does not resolve, is in use or is not available: one line, exit 3.
    ``hosts`` names the host settings in play, for the one case the OS error does not name them."""
    try:
        yield
    except socket.gaierror as exc:  # an OSError whose errno is the resolver's (EAI_*), not errno's
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


def _workers(text: str) -> int:
    """1 … 64 worker processes: 0 or -1 used to start one anyway, silently."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= 64:
        raise argparse.ArgumentTypeError(f"invalid --workers value {text!r}: expected a number 1 … 64")
    return n


def _dev_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workers", type=_workers, default=1, metavar="N", help="worker processes to start, 1 … 64 (default 1)"
    )
    p.add_argument("--no-demo-sink", action="store_true", help="do not start the demo endpoint on :9001")


@commands.add(
    "dev", "run Redis (embedded), the ingress, workers and a demo endpoint together, watching them", _dev_args
)
def dev(ns: argparse.Namespace) -> int:
    from relay.cli.dev import run as run_dev

    return run_dev(ns)


def _sink_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=9001)


@commands.add("demo-sink", "run a demo endpoint that prints every notification it receives", _sink_args)
def demo_sink(ns: argparse.Namespace) -> int:
    from relay.cli.demo_sink import run

    with _listen_errors(f"--host {ns.host!r}"):
        run(ns.host, ns.port)
    return 0

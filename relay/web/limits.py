"""Time and connection limits for a listener, so idle or dribbling clients cannot lock 2Checkout out.

aiohttp alone closes an idle keep-alive connection after ``keepalive_timeout`` but, depending on its
version, has no limit on how long a request's headers may take to arrive, and no cap on how many
connections it holds. Each held connection costs a file descriptor; once the process runs out,
``accept()`` fails with EMFILE and asyncio stops accepting for a second at a time, so a real IPN
waits in the kernel's backlog with the attackers. Hence, per listener:

- a **header timeout**: from a connection's opening (or the first byte after a finished request)
  to the end of the request's headers;
- an **idle timeout** between requests on a kept-alive connection;
- a **cap** on open connections. At the cap, a new connection does not wait and is not refused:
  the connection that has been waiting longest without a request in progress is closed to make
  room. Only when every connection is running a request is the newcomer answered ``503``.

A connection counts as busy from the moment its request reaches the app (``started``, called by
the app's middleware) until the answer is ready; a request body is bounded by ``server.body_timeout`` in
the ingress. ``raise_nofile`` lifts the descriptor soft limit to the hard one at start-up, since
systemd's default soft limit (1,024) is far below what the cap needs.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import cast

import structlog
from aiohttp import web

from config.settings import http_base

logger = structlog.get_logger()

# descriptors kept free of the connection caps: Redis pools, log files, the listening sockets
RESERVED_FDS = 128
BACKLOG = 1024
_BUSY_ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 59\r\n\r\n"
    b"busy: every connection is running a request; retry shortly\n"
)


def raise_nofile() -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit to its hard limit; return (before, after) soft limits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            logger.warning("nofile_not_raised", soft=soft, hard=hard, error=str(exc))
            return soft, soft
        return soft, target
    return soft, soft


def connection_cap(configured: int, listeners: int, soft_limit: int) -> int:
    """The per-listener cap: the configured one, unless the descriptor limit cannot hold it."""
    if soft_limit == resource.RLIM_INFINITY:
        return configured
    return max(16, min(configured, (soft_limit - RESERVED_FDS) // max(1, listeners)))


class _Conn(asyncio.Protocol):
    """Wraps aiohttp's protocol for one connection and keeps the times the guard needs."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.admitted = False
        # when the current wait began, and whether it waits for headers (True) or idles (False)
        self.since = time.monotonic()
        self.in_headers = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if not self.guard.admit(self):
            self.transport.write(_BUSY_ANSWER)
            self.transport.close()
            return
        self.admitted = True
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self.admitted:
            return
        if not self.busy and not self.in_headers:
            # the first byte of the next request: from now on it has header_timeout to finish
            self.guard.waiting(self, in_headers=True)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.forget(self)
        if self.admitted:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()


class ConnectionGuard:
    """The connections of one listener, in the order their current wait began (oldest first)."""

    def __init__(self, *, role: str, cap: int, header_timeout: float, idle_timeout: float) -> None:
        self.role = role
        self.cap = cap
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self._conns: OrderedDict[asyncio.Transport, _Conn] = OrderedDict()
        self._sweeper: asyncio.TimerHandle | None = None
        self.counts = {"evicted": 0, "refused": 0, "header_timeout": 0, "idle_timeout": 0}

    def __len__(self) -> int:
        return len(self._conns)

    def factory(self, make: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _Conn(self, make())

    def admit(self, conn: _Conn) -> bool:
        assert conn.transport is not None
        if len(self._conns) >= self.cap and not self._evict_one():
            self.counts["refused"] += 1
            return False
        self._conns[conn.transport] = conn
        self._schedule()
        return True

    def _evict_one(self) -> bool:
        for transport, conn in self._conns.items():
            if not conn.busy:
                self.counts["evicted"] += 1
                self._drop(transport, conn)
                return True
        return False

    def _drop(self, transport: asyncio.Transport, conn: _Conn) -> None:
        # forget it now, so the cap counts it as gone; abort: nothing is owed to this client
        self._conns.pop(transport, None)
        transport.abort()

    def waiting(self, conn: _Conn, *, in_headers: bool) -> None:
        conn.since, conn.in_headers = time.monotonic(), in_headers
        if conn.transport is not None and conn.transport in self._conns:
            self._conns.move_to_end(conn.transport)

    def forget(self, conn: _Conn) -> None:
        if conn.transport is not None:
            self._conns.pop(conn.transport, None)

    def started(self, transport: asyncio.BaseTransport | None) -> _Conn | None:
        conn = self._conns.get(cast(asyncio.Transport, transport))
        if conn is not None:
            conn.busy = True
        return conn

    def finished(self, conn: _Conn) -> None:
        conn.busy = False
        self.waiting(conn, in_headers=False)

    def _schedule(self) -> None:
        if self._sweeper is None:
            tick = min(1.0, self.header_timeout / 4, self.idle_timeout / 4)
            self._sweeper = asyncio.get_running_loop().call_later(tick, self._sweep)

    def _sweep(self) -> None:
        """Close every connection whose wait for headers or for its next request ran out."""
        self._sweeper = None
        now = time.monotonic()
        expired = [
            (t, c)
            for t, c in self._conns.items()
            if not c.busy and now - c.since > (self.header_timeout if c.in_headers else self.idle_timeout)
        ]
        for transport, conn in expired:
            self.counts["header_timeout" if conn.in_headers else "idle_timeout"] += 1
            self._drop(transport, conn)
        if self._conns:
            self._schedule()

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None


GUARD = web.AppKey("connection_guard", ConnectionGuard)


def started(request: web.Request) -> _Conn | None:
    """Mark the request's connection busy until ``conn.guard.finished(conn)`` (the middleware,
    relay/web/middleware.py, calls it once the answer is ready): a busy connection is never timed out
    or evicted. None: the request came through no guarded listener (tests, the test client)."""
    # the guard is on the listener's app: request.config_dict (a new ChainMapProxy each access) only
    # when the route belongs to a sub-app
    guard = request.app.get(GUARD)
    if guard is None:
        guard = request.config_dict.get(GUARD)
    return guard.started(request.transport) if guard is not None else None


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a ``ConnectionGuard`` (aiohttp's TCPSite, plus the guard)."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard, *, reuse_port: bool = False
    ) -> None:
        """``reuse_port``: SO_REUSEPORT, so the processes of ``relay serve --processes N`` each listen
        on the same port and the kernel spreads the connections over them."""
        super().__init__(runner, backlog=BACKLOG)
        self._host, self._port, self.guard, self._reuse_port = host, port, guard, reuse_port

    @property
    def name(self) -> str:
        return http_base(self._host, self._port)

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self.guard.factory(server),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
            reuse_port=self._reuse_port or None,
        )

    async def stop(self) -> None:
        self.guard.stop()
        logger.info("connections_closed", role=self.guard.role, cap=self.guard.cap, **self.guard.counts)
        await super().stop()

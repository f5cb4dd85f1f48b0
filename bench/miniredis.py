"""The cheapest way to keep one pipelined Redis connection busy, for bench.clients to weigh against redis-py.

An asyncio Protocol that writes commands packed by ``hiredis.pack_command`` and parses replies with
``hiredis.Reader``; replies come back in the order the commands were sent, so the waiting futures are
kept in a FIFO. Concurrent callers share the one connection (their commands are pipelined on it).

What it does about faults, and no more: the connection is opened on the first call and again on the
first call after it was lost; a lost connection fails every waiting call with ``ConnectionError``; a
server that stops answering fails them with ``TimeoutError`` after ``timeout`` s (one timer per
connection, not one per call); the registered scripts are loaded (pipelined, before anything else) on
every connect, so EVALSHA does not meet NOSCRIPT after a restart of a non-persistent Redis.

No TLS, unix sockets, AUTH, SELECT, Sentinel or RESP3: a benchmark, not a client for the relay.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import hiredis

Arg = str | bytes | int | float


class ReplyError(Exception):
    """An error reply (``-ERR ...``) from Redis; the connection stays usable."""


def pack(args: Sequence[Arg]) -> bytes:
    packed: bytes = hiredis.pack_command(cast(Any, tuple(args)))  # its stub takes 1-tuples only
    return packed


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: MiniRedis) -> None:
        self.owner = owner
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.lost: BaseException | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, only alike
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:  # garbage on the wire: nothing after it can be trusted
                self._fail(ConnectionError(f"Redis protocol error: {exc}"))
                if self.transport is not None:
                    self.transport.abort()
                return
            if reply is False:
                return
            if not waiting:  # a reply nobody asked for: the stream is out of step
                self._fail(ConnectionError("Redis sent a reply nobody was waiting for"))
                if self.transport is not None:
                    self.transport.abort()
                return
            future, _ = waiting.popleft()
            if future.done():  # its caller was cancelled: the reply is dropped, the order is kept
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(ReplyError(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"Redis connection lost: {exc or 'closed by the server'}"))

    def _fail(self, exc: BaseException) -> None:
        if self.lost is None:
            self.lost = exc
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(exc)
        if self.owner.protocol is self:
            self.owner.protocol = None

    def send(self, data: bytes, count: int) -> list[asyncio.Future[Any]]:
        if self.transport is None or self.lost is not None:
            raise ConnectionError(f"Redis connection lost: {self.lost}")
        loop = self.owner.loop
        now = loop.time()
        futures = [loop.create_future() for _ in range(count)]
        self.waiting.extend((f, now) for f in futures)
        self.transport.write(data)
        if self.timer is None:
            self.timer = loop.call_at(now + self.owner.timeout, self._check)
        return futures

    def _check(self) -> None:
        """The oldest waiting call is older than ``timeout``: give up on the connection."""
        self.timer = None
        if not self.waiting:
            return
        oldest = self.waiting[0][1]
        loop = self.owner.loop
        if loop.time() - oldest >= self.owner.timeout:
            self._fail(TimeoutError(f"Redis did not answer within {self.owner.timeout:g} s"))
            if self.transport is not None:
                self.transport.abort()
        else:
            self.timer = loop.call_at(oldest + self.owner.timeout, self._check)


class MiniRedis:
    def __init__(self, host: str, port: int, *, timeout: float = 2.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.loop = asyncio.get_running_loop()
        self.protocol: _Protocol | None = None
        self.scripts: dict[str, bytes] = {}  # sha -> source
        self._connecting: asyncio.Future[_Protocol] | None = None

    def register_script(self, source: str | bytes) -> str:
        body = source.encode() if isinstance(source, str) else source
        sha = hashlib.sha1(body).hexdigest()
        self.scripts[sha] = body
        return sha

    async def _connection(self) -> _Protocol:
        if self.protocol is not None:
            return self.protocol
        if self._connecting is None:  # one connect at a time; concurrent callers wait for it
            self._connecting = self.loop.create_future()
            try:
                protocol = await self._connect()
            except BaseException as exc:
                self._connecting.set_exception(ConnectionError(f"cannot connect to Redis: {exc}"))
                self._connecting.exception()  # retrieved: no "never retrieved" warning if nobody waits
                self._connecting = None
                raise ConnectionError(f"cannot connect to Redis: {exc}") from exc
            self._connecting.set_result(protocol)
            self._connecting = None
            return protocol
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> _Protocol:
        started = time.monotonic()
        _, protocol = await asyncio.wait_for(
            self.loop.create_connection(lambda: _Protocol(self), self.host, self.port), self.timeout
        )
        if self.scripts:
            loads = [pack(("SCRIPT", "LOAD", body)) for body in self.scripts.values()]
            replies = protocol.send(b"".join(loads), len(loads))
            await asyncio.wait_for(asyncio.gather(*replies), max(0.1, self.timeout - (time.monotonic() - started)))
        self.protocol = protocol
        return protocol

    async def execute(self, *args: Arg) -> Any:
        protocol = self.protocol or await self._connection()
        [future] = protocol.send(pack(args), 1)
        return await future

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Send all commands in one write; the replies, or the first error reply raised (all are read)."""
        protocol = self.protocol or await self._connection()
        futures = protocol.send(b"".join([pack(c) for c in commands]), len(commands))
        replies = await asyncio.gather(*futures, return_exceptions=True)
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return replies

    async def evalsha(self, sha: str, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        return await self.execute("EVALSHA", sha, len(keys), *keys, *args)

    async def close(self) -> None:
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.close()
        self.protocol = None

"""ack_after = "fsync" is decided again after a reconnect: a failover to a Redis that cannot honour it
is refused (503), and one that can is used again, without restarting the ingress.

A small TCP proxy stands for the failover: the client's address stays, the server behind it changes
(as a DNS or virtual-IP failover does). This Redis 7.0 has no WAITAOF, so "fsync" means appendonly
with appendfsync always; the second server fsyncs only every second.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from relay.store.ingest import NotDurable, Store, notification_id
from tests.support import RedisServer, ipn_fields, signed_body


class SwitchingProxy:
    """Forwards 127.0.0.1:port to ``target``; ``switch`` cuts every open connection and retargets."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def switch(self, target: int) -> None:
        self.target = target
        for w in self.writers:
            w.close()
        self.writers.clear()

    async def stop(self) -> None:
        self.switch(self.target)
        if self.server:
            self.server.close()


@pytest.fixture
async def servers() -> AsyncIterator[tuple[RedisServer, RedisServer]]:
    always = RedisServer(appendonly=True, extra=["--appendfsync", "always"]).start()
    everysec = RedisServer(appendonly=True, extra=["--appendfsync", "everysec"]).start()
    yield always, everysec
    always.cleanup()
    everysec.cleanup()


async def ingest(store: Store, i: int) -> None:
    body = signed_body(ipn_fields(f"8{i:05d}"))
    await store.ingest(
        nid=notification_id("default", "ipn", body),
        source="default",
        channel="ipn",
        body=body,
        content_type="application/x-www-form-urlencoded",
        algo="md5",
        facts={},
    )


async def test_fsync_mode_is_decided_again_after_a_failover(servers: tuple[RedisServer, RedisServer]) -> None:
    always, everysec = servers
    proxy = SwitchingProxy(always.port)
    port = await proxy.start()
    redis = Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=2)
    store = Store(redis, retention_ms=60_000, ack_after="fsync")
    try:
        assert await store.check_durability() == "appendfsync-always"
        await ingest(store, 1)

        proxy.switch(everysec.port)  # failover to a server that fsyncs once a second
        outcomes: list[str] = []
        for i in range(2, 6):
            try:
                await ingest(store, i)
                outcomes.append("stored")
            except NotDurable:
                outcomes.append("not durable")
            except RedisError:
                outcomes.append("connection lost")
        # at most the write that met the cut connection fails otherwise; none is acknowledged as durable
        assert "stored" not in outcomes, outcomes
        assert outcomes[-1] == "not durable", outcomes

        proxy.switch(always.port)  # and back: no restart needed
        for i in range(6, 9):
            with contextlib.suppress(RedisError):
                await ingest(store, i)
        await ingest(store, 9)
        assert store._fsync_via == "appendfsync-always"
    finally:
        await redis.aclose()
        await proxy.stop()

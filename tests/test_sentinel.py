"""REDIS_URL may name a Sentinel-managed primary; the relay follows it through a failover."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from config.settings import Settings
from relay import constants as k
from relay.server import create_app
from relay.store.connection import RedisUnavailable, parse_sentinel_url, wait_for_ping
from relay.store.ingest import notification_id
from tests.support import RedisServer, close_worker, free_port, ipn_fields, signed_body, wait_for
from workers.main import create_worker

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_parse_sentinel_url() -> None:
    t = parse_sentinel_url("redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2/relay/2")
    assert t is not None
    assert t.sentinels == [("10.0.0.1", 26379), ("10.0.0.2", 26379)]
    assert (t.service, t.db, t.password) == ("relay", 2, "s3cret")
    assert parse_sentinel_url("redis://localhost:6379/0") is None
    with pytest.raises(RedisUnavailable, match="expected redis\\+sentinel://"):
        parse_sentinel_url("redis+sentinel://host:1")


class Sentinel:
    def __init__(self, primary_port: int) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="relay-sentinel-"))
        conf = self.dir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"sentinel monitor relay 127.0.0.1 {primary_port} 1\n"
            "sentinel down-after-milliseconds relay 1000\nsentinel failover-timeout relay 5000\n"
        )
        self.proc = subprocess.Popen(
            ["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if not wait_for_ping(self.port):
            raise RuntimeError("sentinel did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def cluster() -> Iterator[tuple[RedisServer, RedisServer, Sentinel]]:
    primary = RedisServer().start()
    replica = RedisServer(extra=["--replicaof", "127.0.0.1", str(primary.port)]).start()
    sentinel = Sentinel(primary.port)
    yield primary, replica, sentinel
    sentinel.stop()
    replica.cleanup()
    primary.cleanup()


@pytest.mark.slow  # a real Sentinel failover (~20 s here): in make test, not in make check
async def test_ingress_and_worker_through_sentinel_and_a_failover(
    cluster: tuple[RedisServer, RedisServer, Sentinel],
    aiohttp_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    sink: Callable[..., Any],
) -> None:
    primary, replica, sentinel = cluster
    s = await sink()
    url = f"redis+sentinel://127.0.0.1:{sentinel.port}/relay"
    # with async replication a write acknowledged by the old primary just before its demotion is lost in
    # the resync; ack_after = "replica" is what makes every receipt survive a failover
    endpoints = [{"name": "e", "url": s.url, "retry_delays": [0.1] * 20}]
    settings = make_settings(
        env={"REDIS_URL": url},
        endpoints=endpoints,
        extra='[server]\nack_after = "replica"\nack_timeout = 0.5\nredis_timeout = 1\n',
    )
    sent = Redis.from_url(f"redis://127.0.0.1:{sentinel.port}")
    await wait_for(lambda: sent.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "relay"), 10)
    await wait_for(lambda: _replica_synced(replica), 10)
    client = await aiohttp_client(create_app(settings))
    worker = create_worker(settings, handle_signals=False)
    task = asyncio.create_task(worker.async_run())
    try:
        assert (await client.post("/ipn", data=signed_body(ipn_fields("1")), headers=FORM)).status == 200
        await wait_for(lambda: len(s.received) == 1, 10)
        await sent.execute_command("SENTINEL", "FAILOVER", "relay")
        await wait_for(lambda: _is_primary(replica), 20)
        # the ingress may answer 503 for a moment during the switch; 2Checkout would retry
        body = signed_body(ipn_fields("2"))

        async def accepted() -> bool:
            return (await client.post("/ipn", data=body, headers=FORM)).status == 200

        await wait_for(accepted, 20, interval=0.2)
        # at least once: a copy written to the old primary before its demotion (never acknowledged)
        # may have been delivered too, under the same webhook-id
        await wait_for(
            lambda: (
                {r.headers["webhook-id"] for r in s.received}
                == {f"{notification_id('default', 'ipn', b)}:e" for b in (signed_body(ipn_fields("1")), body)}
            ),
            30,
        )
        r = Redis.from_url(replica.url)
        assert await r.zcard(k.IDX_ALL) == 2  # both acknowledged notifications live on the new primary
        await r.aclose()
        old = Redis.from_url(primary.url)
        await wait_for(lambda: _role_and_count(old), 30)
        await old.aclose()
    finally:
        await close_worker(worker)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sent.aclose()


async def _replication(server: RedisServer) -> dict[str, Any]:
    # a server drops its client connections when its role changes: treat that as "not yet"
    r = Redis.from_url(server.url)
    try:
        return dict(await r.info("replication"))
    except (RedisError, OSError):
        return {}
    finally:
        await r.aclose()


async def _replica_synced(server: RedisServer) -> bool:
    return (await _replication(server)).get("master_link_status") == "up"


async def _is_primary(server: RedisServer) -> bool:
    return (await _replication(server)).get("role") == "master"


async def _role_and_count(r: Redis) -> bool:
    # the demoted primary resyncs from the new one and ends up with both notifications too
    try:
        return bool((await r.info("replication")).get("role") == "slave" and await r.zcard(k.IDX_ALL) == 2)
    except (RedisError, OSError):
        return False

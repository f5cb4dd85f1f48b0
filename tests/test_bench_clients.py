"""bench.clients: the minimal client's packing and parsing against a real Redis, and a quick run of the bench."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bench.clients import ingest_call, script_source
from bench.miniredis import MiniRedis, ReplyError
from tests.support import RedisServer

ROOT = Path(__file__).resolve().parents[1]

NESTED = """
return {tonumber(ARGV[1]), {ARGV[2], {ARGV[3], ''}}, redis.call('GET', KEYS[1]), false}
"""


async def test_minimal_client_round_trips_binary_nested_and_error_replies(
    redis: Redis, redis_server: RedisServer
) -> None:
    mini = MiniRedis("127.0.0.1", redis_server.port)
    body = bytes(range(256)) * 6 + b"\r\n$-1\r\n*3"  # protocol bytes inside a value must stay data
    try:
        assert await mini.execute("SET", "k", body) == b"OK"
        assert await redis.get("k") == body
        sha = mini.register_script(NESTED)
        await redis.script_load(NESTED)
        assert await mini.evalsha(sha, ["k"], [42, "é", body]) == [42, [b"\xc3\xa9", [body, b""]], body, None]
        with pytest.raises(ReplyError, match="WRONGTYPE"):
            await mini.pipeline([("LPUSH", "k", "x")])
        assert await mini.execute("PING") == b"PONG"  # an error reply leaves the connection usable
    finally:
        await mini.close()


async def test_minimal_client_keeps_replies_in_order_for_concurrent_callers(
    redis: Redis, redis_server: RedisServer
) -> None:
    mini = MiniRedis("127.0.0.1", redis_server.port)
    try:
        singles = [mini.execute("INCRBY", f"c{i % 7}", i) for i in range(200)]
        piped = [mini.pipeline([("ECHO", f"p{i}-{j}") for j in range(5)]) for i in range(40)]
        results = await asyncio.gather(*singles, *piped)
        expected: dict[int, int] = {}
        for i, value in enumerate(results[:200]):
            expected[i % 7] = expected.get(i % 7, 0) + i
            assert value == expected[i % 7]
        assert results[200:] == [[f"p{i}-{j}".encode() for j in range(5)] for i in range(40)]
    finally:
        await mini.close()


async def test_minimal_client_loads_its_scripts_on_every_connect(redis: Redis, redis_server: RedisServer) -> None:
    """The ingest call as bench.clients sends it: a Redis that lost its scripts does not answer NOSCRIPT."""
    mini = MiniRedis("127.0.0.1", redis_server.port)
    sha = mini.register_script(script_source())
    try:
        keys, args = ingest_call("n-test-1", b"x" * 1500, 1_700_000_000_000)
        assert await mini.evalsha(sha, keys, args) == 1
        await redis.script_flush()
        await redis.client_kill_filter(skipme=True, _type="normal")  # drops mini's connection
        await asyncio.sleep(0.1)
        keys, args = ingest_call("n-test-2", b"y" * 1500, 1_700_000_000_000)
        assert await mini.evalsha(sha, keys, args) == 2  # reconnects, loads the script, then runs it
    finally:
        await mini.close()


@pytest.mark.slow  # a bench run: not in make check's fast tier
def test_quick_clients_bench_runs_green() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.clients",
            "--quick",
            "--calls",
            "64",
            "--seconds",
            "0.3",
            "--only",
            "minimal,redis-py relay-path",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "minimal" in proc.stdout and "redis-py relay-path" in proc.stdout
    assert "killed_mid_pipeline" in proc.stdout and "NOT one of those" not in proc.stdout

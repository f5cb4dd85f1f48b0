"""relay.store.connection.connect: hiredis packs the commands, and the bytes on the wire are redis-py's."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from relay.store.connection import connect, hiredis_packing
from tests.support import RedisServer

VALUES = ["plain", "Müller 😀", b"\x00\xff raw", 7, -12, 2.5, 1e20, ""]


async def test_commands_round_trip_through_hiredis_packing(redis_server: RedisServer, redis: Redis) -> None:
    client = connect(redis_server.url)
    try:
        for i, value in enumerate(VALUES):
            await client.set(f"k{i}", value)
        async with client.pipeline(transaction=True) as pipe:
            pipe.hset("h", mapping={"name": "Müller", "n": 3})
            pipe.incrby("c", 5)
            assert await pipe.execute() == [2, 5]
        # a command name with a space is two arguments, as redis-py sends it
        assert await client.execute_command("CONFIG GET", "maxmemory") == {"maxmemory": "0"}
        assert await client.evalsha(await client.script_load("return ARGV[1]"), 0, "Müller") == "Müller".encode()
        conn = client.connection_pool.make_connection()
        assert type(conn).__name__ == "HiredisConnection"
        assert "hiredis" not in type(Connection(host="x")).__name__.lower()
    finally:
        await client.aclose()
    # what the stock client reads back is what was written: same encoding of str, int and float
    for i, value in enumerate(VALUES):
        expected = value if isinstance(value, bytes) else str(value).encode()
        assert await redis.get(f"k{i}") == expected, value
    assert await redis.hgetall("h") == {b"name": "Müller".encode(), b"n": b"3"}


def test_packing_matches_redis_py_byte_for_byte() -> None:
    stock = Connection(host="x")
    packed = hiredis_packing(Redis(host="x")).connection_pool.make_connection()
    for args in (
        ("SET", "k", "Müller"),
        (b"EVALSHA", "abc", 2, "k1", "k2", 1.5, b"\x00", -3),
        ("CONFIG GET", "maxmemory"),
        ("HSET", "h", "f", 1e20),
    ):
        assert b"".join(packed.pack_command(*args)) == b"".join(stock.pack_command(*args)), args


async def test_a_value_redis_cannot_take_is_a_data_error_naming_the_command(redis_server: RedisServer) -> None:
    client = connect(redis_server.url)
    try:
        with pytest.raises(DataError, match="SET"):
            await client.set("k", None)  # type: ignore[arg-type]
        with pytest.raises(DataError):
            await client.set("k", True)  # type: ignore[arg-type]
        assert await client.ping()  # the connection is still usable
    finally:
        await client.aclose()

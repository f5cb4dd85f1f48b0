"""Ingress hardening: allowlists behind trusted proxies, key rotation, channel switches, limits,
durability modes, and the INS replay flag."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from config import networks
from config.settings import Settings
from relay import constants as k
from relay.server import create_app
from relay.store.ingest import notification_id
from tests.support import RedisServer, free_port, ins_body, ipn_fields, signed_body, wait_for

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
Client = Callable[..., Any]


def test_client_address_honours_forwarded_for_only_from_trusted_proxies() -> None:
    trusted = networks.parse_networks(["10.0.0.0/8"])
    assert str(networks.client_address("10.0.0.5", "91.220.121.7", trusted)) == "91.220.121.7"
    # a client-supplied entry left of the proxy's is ignored: the right-most untrusted hop counts
    assert str(networks.client_address("10.0.0.5", "1.2.3.4, 91.220.121.7, 10.0.0.9", trusted)) == "91.220.121.7"
    # an untrusted peer cannot claim an address
    assert str(networks.client_address("8.8.8.8", "91.220.121.7", trusted)) == "8.8.8.8"
    assert networks.client_address("10.0.0.5", "garbage", trusted) is None
    preset = networks.parse_networks(["2checkout"])
    assert networks.allowed(networks.client_address("91.220.121.7", None, ()), preset)
    assert not networks.allowed(networks.client_address("8.8.8.8", None, ()), preset)
    with pytest.raises(ValueError, match="'nope' is not a network"):
        networks.parse_networks(["nope"])


async def test_allowlist_with_trusted_proxy(
    aiohttp_client: Client, make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings(
        extra='[server]\ntrusted_proxies = ["127.0.0.1/32"]\n',
        sources=[{"name": "default", "secret_key_env": "TCO_SECRET_KEY", "allow_networks": ["2checkout"]}],
    )
    client = await aiohttp_client(create_app(settings))
    body = signed_body(ipn_fields())
    resp = await client.post("/ipn", data=body, headers=FORM)
    assert resp.status == 403 and "network_not_allowed" in await resp.text()
    resp = await client.post("/ipn", data=body, headers={**FORM, "X-Forwarded-For": "6.6.6.6, 91.220.121.7"})
    assert resp.status == 200
    resp = await client.post("/ipn", data=body, headers={**FORM, "X-Forwarded-For": "91.220.121.7, 6.6.6.6"})
    assert resp.status == 403
    assert await redis.zcard(k.IDX_ALL) == 1


async def test_key_rotation_accepts_both_and_names_the_failing_keys(
    aiohttp_client: Client, make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings(
        env={"TCO_SECRET_KEY": "new-key", "TCO_OLD": "old-key"},
        sources=[{"name": "default", "secret_key_env": "TCO_SECRET_KEY", "secret_key_previous_env": "TCO_OLD"}],
    )
    client = await aiohttp_client(create_app(settings))
    for key in ("new-key", "old-key"):
        body = signed_body(ipn_fields(key), secret=key, algos=("md5",))
        resp = await client.post("/ipn", data=body, headers=FORM)
        assert resp.status == 200, await resp.text()
        receipt = await resp.text()
        # the receipt is signed with the key that verified
        import hashlib
        import hmac

        date = receipt[len("<EPAYMENT>") : len("<EPAYMENT>") + 14]
        values = ("40898000", "Müller Tool – 東京 Edition", "20240102030011", date)
        src = "".join(f"{len(v.encode())}{v}" for v in values)
        assert hmac.new(key.encode(), src.encode(), hashlib.md5).hexdigest() in receipt
    assert (await redis.hget(k.notification(notification_id("default", "ipn", body)), "key")) == b"previous"
    resp = await client.post("/ipn", data=signed_body(ipn_fields(), secret="stolen"), headers=FORM)
    text = await resp.text()
    assert resp.status == 400
    fp = hashlib.sha256(b"new-key").hexdigest()[:8]
    assert f"current (fingerprint {fp})" in text and "previous (fingerprint" in text
    assert "new-key" not in text and "old-key" not in text


async def test_source_channels_switch_ins_off(
    aiohttp_client: Client, make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings(
        sources=[
            {
                "name": "default",
                "secret_key_env": "TCO_SECRET_KEY",
                "ins_secret_word_env": "TCO_INS_SECRET_WORD",
                "seller_id": "1817037",
                "channels": ["ipn", "lcn"],
            }
        ]
    )
    client = await aiohttp_client(create_app(settings))
    resp = await client.post("/ins", data=ins_body(), headers=FORM)
    assert resp.status == 404 and "does not accept INS" in await resp.text()
    assert (await client.get("/ins")).status == 404
    assert await redis.dbsize() == 0


async def test_ins_replay_with_same_triple_and_type_is_flagged_and_forwarded_as_such(
    aiohttp_client: Client, make_settings: Callable[..., Settings], redis: Redis
) -> None:
    client = await aiohttp_client(create_app(make_settings()))
    first = ins_body(message_type="FRAUD_STATUS_CHANGED")
    replay = first.replace(b"message_id=101", b"message_id=999")
    other_type = ins_body(message_type="REFUND_ISSUED")
    for body in (first, replay, other_type):
        assert (await client.post("/ins", data=body, headers=FORM)).status == 200
    flags = [
        await redis.hget(k.notification(notification_id("default", "ins", b)), "flag")
        for b in (first, replay, other_type)
    ]
    assert flags == [None, b"ins_replay_suspect", None]
    import tempfile
    from pathlib import Path

    from config.settings import load_settings
    from tests.support import TEST_ENV, write_config
    from workers.forward import Claimed, build

    ep = load_settings(
        write_config(Path(tempfile.mkdtemp()) / "r.toml", endpoints=[{"name": "e", "url": "http://x/"}]), TEST_ENV
    ).endpoints["e"]
    _, headers = build(ep, Claimed("n", 1, b"", "", "default", "ins", 0, "", "ins_replay_suspect"), 0)
    assert headers["Relay-Flags"] == "ins_replay_suspect"


async def test_slow_upload_gets_408(make_settings: Callable[..., Settings], redis: Redis) -> None:
    from aiohttp import web

    settings = make_settings(extra="[server]\nbody_timeout = 0.3\n")
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /ipn HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 1000\r\n\r\nREFNO=1"
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.read(200), 5)
        # closed for good before the cleanup: aiohttp otherwise lingers up to 10 s reading the unsent body
        writer.close()
        await writer.wait_closed()
        assert head.startswith(b"HTTP/1.1 408"), head
    finally:
        await runner.cleanup()
    # nothing stored from a rejected request: only the source's refusal is counted (for health)
    keys = await redis.keys("*")
    assert len(keys) == 2 and k.source_lastrej("default").encode() in keys
    assert any(key.startswith(b"relay:src:default:rej:") for key in keys), keys


async def test_huge_header_is_refused_by_the_parser(
    aiohttp_client: Client, make_settings: Callable[..., Settings], redis: Redis
) -> None:
    client = await aiohttp_client(create_app(make_settings()))
    # the test server uses aiohttp's defaults (8190); relay serve passes [server] max_header_bytes the same way
    resp = await client.post("/ipn", data=signed_body(ipn_fields()), headers={**FORM, "X-Big": "a" * 10000})
    assert resp.status == 400
    assert await redis.dbsize() == 0


async def test_ack_after_fsync_on_a_redis_without_waitaof_needs_appendfsync_always(
    aiohttp_client: Client, make_settings: Callable[..., Settings]
) -> None:
    everysec = RedisServer(appendonly=True, extra=["--appendfsync", "everysec"]).start()
    always = RedisServer(appendonly=True, extra=["--appendfsync", "always"]).start()
    try:
        body = signed_body(ipn_fields())
        for server, expected in ((everysec, 503), (always, 200)):
            settings = make_settings(env={"REDIS_URL": server.url}, extra='[server]\nack_after = "fsync"\n')
            client = await aiohttp_client(create_app(settings))
            resp = await client.post("/ipn", data=body, headers=FORM)
            r = Redis.from_url(server.url)
            version = tuple(int(x) for x in (await r.info("server"))["redis_version"].split(".")[:2])
            await r.aclose()
            if version >= (7, 2):
                expected = 200  # WAITAOF confirms the fsync whatever appendfsync says
            assert resp.status == expected, await resp.text()
    finally:
        everysec.cleanup()
        always.cleanup()


async def test_ack_after_replica_waits_for_replicas(
    aiohttp_client: Client, make_settings: Callable[..., Settings]
) -> None:
    # a replica syncs at once: a diskless primary otherwise waits 5 s (repl-diskless-sync-delay) for more
    primary = RedisServer(extra=["--repl-diskless-sync-delay", "0"]).start()
    replica = RedisServer().start()
    try:
        body = signed_body(ipn_fields())
        settings = make_settings(
            env={"REDIS_URL": primary.url},
            extra='[server]\nack_after = "replica"\nack_timeout = 0.3\nredis_timeout = 0.5\n',
        )
        client = await aiohttp_client(create_app(settings))
        resp = await client.post("/ipn", data=body, headers=FORM)
        assert resp.status == 503  # no replica attached: not acknowledged
        r = Redis.from_url(replica.url)
        await r.replicaof("127.0.0.1", primary.port)

        async def linked() -> bool:
            return bool((await r.info("replication")).get("master_link_status") == "up")

        await wait_for(linked, 10, what="the replica never linked to the primary")
        await r.aclose()
        resp = await client.post("/ipn", data=body, headers=FORM)
        assert resp.status == 200, await resp.text()
    finally:
        replica.cleanup()
        primary.cleanup()

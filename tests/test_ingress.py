"""The public door, through the real app and a real redis-server."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from config.settings import Settings
from relay import constants as k
from relay import protocol
from relay.server import create_app
from relay.store import body as stored_body
from relay.store.ingest import notification_id
from tests.support import SECRET_KEY, RedisServer, ins_body, ipn_fields, signed_body, vectors, write_config

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
Client = Callable[..., Any]


@pytest.fixture
async def client(aiohttp_client: Client, make_settings: Callable[..., Settings], redis: Redis) -> TestClient:
    settings = make_settings(
        sources=[
            {
                "name": "default",
                "secret_key_env": "TCO_SECRET_KEY",
                "ins_secret_word_env": "TCO_INS_SECRET_WORD",
                "seller_id": "1817037",
            },
            {"name": "eu-shop", "secret_key_env": "TCO_SECRET_KEY", "min_signature": "sha256"},
        ]
    )
    return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]


async def _keys(redis: Redis) -> set[bytes]:
    """Every key, but a refused source's counters (relay:src:*, for health): those are no notification."""
    return {key for key in await redis.keys("*") if not key.startswith(b"relay:src:")}


async def test_signed_ipn_is_stored_and_queued_for_its_fanout_then_acknowledged(
    client: TestClient, redis: Redis
) -> None:
    v = next(v for v in vectors("synthetic.json")["vectors"] if v["id"] == "synthetic-ipn-multibyte-utf8")
    resp = await client.post("/ipn", data=v["body"].encode(), headers=FORM)
    text = await resp.text()
    assert resp.status == 200, text
    m = re.fullmatch(r'<sig algo="sha3-256" date="(\d{14})">([0-9a-f]{64})</sig>\n', text)
    assert m, text
    # an independent computation of the receipt
    src = "".join(f"{len(x.encode())}{x}" for x in ("40898000", "Müller Tool – 東京 Edition", "20240102030011", m[1]))
    import hashlib
    import hmac

    assert m[2] == hmac.new(SECRET_KEY.encode(), src.encode(), hashlib.sha3_256).hexdigest()

    nid = notification_id("default", "ipn", v["body"].encode())
    n = await redis.hgetall(k.notification(nid))
    assert await stored_body.read(redis, nid) == v["body"].encode()
    assert n[b"ref"] == b"230000001" and n[b"status"] == b"COMPLETE" and n[b"test"] == b"1"
    assert n[b"email"] == b"jurgen.muller@example.com" and n[b"algo"] == b"sha3-256"
    # queued for the workers' batched fan-out (workers/fanout.py) by seq, and no ARQ job: ARQ's queue
    # holds only the workers' cron jobs
    assert await redis.zscore(k.FANOUT, nid) == int(n[b"seq"])
    assert await redis.zcard(k.QUEUE_NAME) == 0 and not [key async for key in redis.scan_iter("arq:*")]
    assert await redis.zscore(k.idx_ref("230000001"), nid) is not None


async def test_the_ingest_script_is_sent_by_sha_and_reloaded_after_a_script_flush(
    client: TestClient, redis: Redis
) -> None:
    """Each batch is EVALSHA alone (no SCRIPT EXISTS round trip before it); a Redis that lost its
    scripts (restart, failover, SCRIPT FLUSH) gets the script loaded again and the batch re-sent."""

    async def calls(command: str) -> int:
        stats = await redis.info("commandstats")
        return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))

    first = await client.post("/ipn", data=signed_body(ipn_fields("230000301")), headers=FORM)
    assert first.status == 200, await first.text()
    exists_before = await calls("script|exists")
    for n in range(5):
        resp = await client.post("/ipn", data=signed_body(ipn_fields(f"23000031{n}")), headers=FORM)
        assert resp.status == 200, await resp.text()
    assert await calls("script|exists") == exists_before
    await redis.script_flush()
    resp = await client.post("/ipn", data=signed_body(ipn_fields("230000320")), headers=FORM)
    assert resp.status == 200, await resp.text()
    nid = notification_id("default", "ipn", signed_body(ipn_fields("230000320")))
    assert await redis.hget(k.notification(nid), "ref") == b"230000320"
    assert await redis.zcard(k.IDX_ALL) == 7


@pytest.mark.parametrize(
    "algos,expected",
    [
        (("md5",), r"<EPAYMENT>\d{14}\|[0-9a-f]{32}</EPAYMENT>"),
        (("md5", "sha256"), r'<sig algo="sha256" date="\d{14}">[0-9a-f]{64}</sig>'),
        (("md5", "sha256", "sha3-256"), r'<sig algo="sha3-256" date="\d{14}">[0-9a-f]{64}</sig>'),
    ],
)
async def test_receipt_matches_strongest_signature(client: TestClient, algos: tuple[str, ...], expected: str) -> None:
    resp = await client.post("/ipn", data=signed_body(ipn_fields(), algos=algos), headers=FORM)
    assert resp.status == 200
    assert re.fullmatch(expected, (await resp.text()).strip())


def _emptied(body: bytes, *names: str) -> bytes:
    """The signed body with each named signature field sent empty (``SIGNATURE_SHA3_256=``)."""
    for name in names:
        body, n = re.subn(rb"(^|&)" + name.encode() + rb"=[0-9a-f]*", rb"\1" + name.encode() + b"=", body)
        assert n == 1, (name, body)
    return body


@pytest.mark.parametrize(
    ("channel", "empty", "algo", "expected"),
    [
        ("ipn", ("SIGNATURE_SHA3_256",), "sha256", r'<sig algo="sha256" date="(\d{14})">([0-9a-f]{64})</sig>'),
        (
            "ipn",
            ("SIGNATURE_SHA3_256", "SIGNATURE_SHA2_256"),
            "md5",
            r"<EPAYMENT>(\d{14})\|([0-9a-f]{32})</EPAYMENT>",
        ),
        ("lcn", ("SIGNATURE_SHA3_256",), "sha256", r'<sig algo="sha256" date="(\d{14})">([0-9a-f]{64})</sig>'),
    ],
    ids=["ipn-sha3-empty", "ipn-sha3-sha2-empty", "lcn-sha3-empty"],
)
async def test_an_empty_signature_counts_as_absent_and_the_next_one_decides(
    client: TestClient, redis: Redis, channel: str, empty: tuple[str, ...], algo: str, expected: str
) -> None:
    """2Checkout's plugins and node SDK fall back past an empty signature field (docs/protocol.md):
    the strongest non-empty one is verified, and the receipt is signed with it."""
    if channel == "ipn":
        fields = ipn_fields("230000501")
    else:
        lcn = next(v for v in vectors("synthetic.json")["vectors"] if v["kind"] == "lcn")
        fields = [(key, value) for key, value in urllib.parse.parse_qsl(lcn["body"], keep_blank_values=True)]
        fields = [
            (key, value) for key, value in fields if key not in {"HASH", "SIGNATURE_SHA2_256", "SIGNATURE_SHA3_256"}
        ]
    body = _emptied(signed_body(fields), *empty)
    resp = await client.post(f"/{channel}", data=body, headers=FORM)
    text = await resp.text()
    assert resp.status == 200, text
    m = re.fullmatch(expected, text.strip())
    assert m, text
    parsed = protocol.parse_form(body)
    receipt = protocol.ipn_receipt if channel == "ipn" else protocol.lcn_receipt
    assert text.strip() == receipt(parsed, SECRET_KEY.encode(), algo, m[1])
    nid = notification_id("default", channel, body)
    assert await redis.hget(k.notification(nid), "algo") == algo.encode()


@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        # a non-empty strongest signature still decides, wrong though a weaker one is right
        (
            "/ipn",
            signed_body(ipn_fields(), algos=("md5", "sha256"))
            + b"&SIGNATURE_SHA3_256="
            + protocol.hmac_hex("sha3-256", b"another key", b"x").encode(),
            "signature_mismatch",
        ),
        # the source's min_signature holds for what is left once the empty one is set aside
        (
            "/ipn/eu-shop",
            _emptied(signed_body(ipn_fields(), algos=("md5", "sha256")), "SIGNATURE_SHA2_256"),
            "signature_too_weak",
        ),
        (
            "/ipn",
            _emptied(signed_body(ipn_fields()), "HASH", "SIGNATURE_SHA2_256", "SIGNATURE_SHA3_256"),
            "missing_signature",
        ),
    ],
    ids=["wrong-sha3-beside-good-sha2", "min-signature", "all-empty"],
)
async def test_an_empty_signature_weakens_no_check(
    client: TestClient, redis: Redis, path: str, body: bytes, reason: str
) -> None:
    resp = await client.post(path, data=body, headers=FORM)
    text = await resp.text()
    assert resp.status == 400 and f"rejected: {reason}" in text, text
    assert await _keys(redis) <= {k.REJECTS.encode()}


async def test_lcn_and_ins(client: TestClient, redis: Redis) -> None:
    v = next(v for v in vectors("synthetic.json")["vectors"] if v["kind"] == "lcn")
    resp = await client.post("/lcn", data=v["body"].encode(), headers=FORM)
    body = await resp.text()
    assert resp.status == 200 and body.startswith('<sig algo="sha3-256"'), body
    date = re.search(r'date="(\d+)"', body)
    assert date
    fields = protocol.parse_form(v["body"].encode())
    assert body.strip() == protocol.lcn_receipt(fields, SECRET_KEY.encode(), "sha3-256", date[1])
    for ins in (v for v in vectors("synthetic.json")["vectors"] if v["kind"] == "ins"):
        resp = await client.post("/ins", data=ins["body"].encode(), headers=FORM)
        assert resp.status == 200 and (await resp.text()).strip() == "OK"
    assert await redis.zcard(k.idx_channel("ins")) == 10


async def test_duplicate_body_gives_one_notification(client: TestClient, redis: Redis) -> None:
    body = signed_body(ipn_fields())
    for _ in range(3):
        resp = await client.post("/ipn", data=body, headers=FORM)
        assert resp.status == 200 and "<sig" in await resp.text()
    assert await redis.zcard(k.IDX_ALL) == 1
    assert await redis.zcard(k.FANOUT) == 1
    assert int(await redis.get(k.SEQ)) == 1
    # the same body on another source is another notification (another URL, another secret)
    resp = await client.post("/ipn/eu-shop", data=body, headers=FORM)
    assert resp.status == 200
    assert await redis.zcard(k.IDX_ALL) == 2


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "reason"),
    [
        ("/ipn", b"REFNO=1&HASH=0123456789abcdef0123456789abcdef", FORM, 400, "signature_mismatch"),
        ("/ipn", b"REFNO=1", FORM, 400, "missing_signature"),
        ("/ipn", b"REFNO=%ff", FORM, 400, "invalid_utf8"),
        ("/ipn", b"", FORM, 400, "empty_body"),
        ("/ipn", b"{}", {"Content-Type": "application/json"}, 415, "unsupported_media_type"),
        ("/ipn/eu-shop", signed_body(ipn_fields(), algos=("md5",)), FORM, 400, "signature_too_weak"),
        ("/ins/eu-shop", ins_body(), FORM, 400, "channel_disabled"),
        ("/ins", ins_body(word="wrong"), FORM, 400, "signature_mismatch"),
    ],
)
async def test_rejections_are_clear_and_store_nothing(
    client: TestClient, redis: Redis, path: str, body: bytes, headers: dict[str, str], status: int, reason: str
) -> None:
    resp = await client.post(path, data=body, headers=headers)
    assert resp.status == status
    assert f"rejected: {reason}" in await resp.text()
    keys = await _keys(redis)
    assert keys <= {k.REJECTS.encode()}, keys
    if status == 400:
        assert reason.encode() in await redis.lindex(k.REJECTS, 0)


async def test_tampered_copy_is_rejected(client: TestClient, redis: Redis) -> None:
    body = signed_body(ipn_fields())
    tampered = body.replace(b"REFNO=230000001", b"REFNO=230000002")
    resp = await client.post("/ipn", data=tampered, headers=FORM)
    assert resp.status == 400
    assert await _keys(redis) == {k.REJECTS.encode()}


async def test_body_over_limit_is_413(client: TestClient, redis: Redis) -> None:
    resp = await client.post("/ipn", data=b"A=" + b"x" * 300_000, headers=FORM)
    assert resp.status == 413
    assert "body_too_large" in await resp.text()
    assert await _keys(redis) == set()


async def test_routes_methods_and_sources(client: TestClient) -> None:
    for path in ("/ipn", "/lcn", "/ins", "/ipn/eu-shop", "/lcn/eu-shop"):
        assert (await client.get(path)).status == 200
        assert (await client.head(path)).status == 200
    resp = await client.get("/ipn/nope")
    assert resp.status == 404 and "unknown source 'nope'" in await resp.text()
    assert (await client.post("/ipn/nope", data=b"a=1", headers=FORM)).status == 404
    resp = await client.put("/ipn", data=b"a=1")
    assert resp.status == 405 and "not allowed" in await resp.text()
    assert (await client.delete("/ins/eu-shop")).status == 405
    assert (await client.get("/other")).status == 404


async def test_healthz_and_metrics(client: TestClient) -> None:
    assert (await client.get("/healthz")).status == 200
    await client.post("/ipn", data=signed_body(ipn_fields()), headers=FORM)
    await client.post("/ipn", data=b"REFNO=1", headers=FORM)
    text = await (await client.get("/metrics")).text()
    assert 'relay_notifications_accepted_total{channel="ipn",duplicate="false",source="default"} 1.0' in text
    assert 'relay_notifications_rejected_total{channel="ipn",reason="missing_signature",source="default"} 1.0' in text
    assert "relay_ack_latency_seconds_bucket" in text


async def test_redis_down_gives_503_and_nothing_half_written(
    aiohttp_client: Client, make_settings: Callable[..., Settings], tmp_path: Any
) -> None:
    server = RedisServer(appendonly=True).start()
    try:
        settings = make_settings(env={"REDIS_URL": server.url}, extra="[server]\nredis_timeout = 0.3\n")
        client = await aiohttp_client(create_app(settings))
        first = signed_body(ipn_fields("1"))
        assert (await client.post("/ipn", data=first, headers=FORM)).status == 200
        server.stop()
        resp = await client.post("/ipn", data=signed_body(ipn_fields("2")), headers=FORM)
        assert resp.status == 503 and "<sig" not in await resp.text()
        assert (await client.get("/healthz")).status == 503
        server.start()  # same port and data dir: the AOF is replayed
        r = Redis.from_url(server.url)
        try:
            nid1 = notification_id("default", "ipn", first)
            assert await r.exists(k.notification(nid1))
            assert await r.zcard(k.IDX_ALL) == 1 and await r.zcard(k.FANOUT) == 1
            assert int(await r.get(k.SEQ)) == 1
        finally:
            await r.aclose()
        # and the relay recovers by itself
        assert (await client.post("/ipn", data=signed_body(ipn_fields("3")), headers=FORM)).status == 200
    finally:
        server.cleanup()


def test_write_config_roundtrip(tmp_path: Any) -> None:
    # guards the helper the other tests rely on
    from config.settings import load_settings
    from tests.support import TEST_ENV

    s = load_settings(
        write_config(tmp_path / "x.toml", endpoints=[{"name": "a", "url": "http://h/x", "headers": {"X": "y"}}]),
        TEST_ENV,
    )
    assert s.endpoints["a"].headers["X"].reveal() == "y"

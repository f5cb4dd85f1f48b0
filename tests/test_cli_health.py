"""``relay health``, ``relay check-endpoints`` and ``relay send-test`` through the real CLI entry point.

The commands run ``asyncio.run`` themselves, so tests that also serve an ingress or a worker on this
event loop call them in a thread.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiohttp import web
from redis.asyncio import Redis

from config.settings import load_settings
from relay import constants as k
from relay import protocol
from relay.cli import main
from relay.cli.sendtest import build, verify_receipt
from relay.server import create_app
from tests.support import (
    INS_WORD,
    SECRET_KEY,
    TEST_ENV,
    RedisServer,
    Sink,
    free_port,
    write_config,
)

Capsys = pytest.CaptureFixture[str]


@pytest.fixture(autouse=True)
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_server: RedisServer) -> None:
    for var, value in TEST_ENV.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.chdir(tmp_path)  # .relay/dev-secrets.json is looked up in the working directory
    # the CLI configures process-wide logging; keep the test process's logging as it is
    monkeypatch.setattr("config.logs.configure_logging", lambda *args: None)


def config(tmp_path: Path, endpoints: list[dict[str, Any]], extra: str = "") -> str:
    return str(write_config(tmp_path / "relay.toml", endpoints=endpoints, extra=extra))


def cli(*argv: str) -> Any:
    return asyncio.to_thread(main, list(argv))


# -- relay health ---------------------------------------------------------------------------------


async def test_health_table_and_exit_0_when_healthy(tmp_path: Path, redis: Redis, capsys: Capsys) -> None:
    now = int(time.time() * 1000)
    await redis.zadd(k.WORKERS, {"host:1": now})
    await redis.zadd(k.ep_state("demo", "delivered"), {"n1": now})
    await redis.hset(k.STATS, "demo|last_ok", now - 3000)
    cfg = config(tmp_path, [{"name": "demo", "url": "http://127.0.0.1:9/hook"}])

    assert await cli("--config", cfg, "health") == 0
    out = capsys.readouterr().out
    assert out.startswith("relay health: healthy\n\n")
    assert "workers  1 alive; last seen: host:1" in out
    header, row = out.strip().splitlines()[-2:]
    assert header.split() == [
        "endpoint",
        "pending",
        "in_flight",
        "retrying",
        "failed",
        "resolved",
        "delivered",
        "failing",
        "1h",
        "failing",
        "24h",
        "oldest",
        "last",
        "ok",
        "last",
        "fail",
    ]
    assert row.split()[:7] == ["demo", "0", "0", "0", "0", "0", "1"]
    assert "0.0% of 1" in row
    assert "3 s ago" in row


async def test_health_json_and_exit_2_with_problems(tmp_path: Path, redis: Redis, capsys: Capsys) -> None:
    now = int(time.time() * 1000)
    await redis.zadd(k.ep_state("demo", "pending"), {"n1": now - 20_000})
    cfg = config(tmp_path, [{"name": "demo", "url": "http://127.0.0.1:9/hook"}])

    assert await cli("--config", cfg, "health", "--json", "--max-pending-age", "10") == 2
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "unhealthy"
    assert [p["kind"] for p in report["problems"]] == ["no_worker", "backlog_too_old"]
    backlog = report["problems"][1]
    assert (backlog["endpoint"], backlog["limit_s"]) == ("demo", 10.0)
    assert 20 <= backlog["oldest_age_s"] < 60
    assert backlog["since"].endswith("Z")

    assert await cli("--config", cfg, "health", "--max-pending-age", "10") == 2
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "relay health: UNHEALTHY"
    assert lines[1].startswith("  no_worker         no live worker")
    assert lines[2].startswith("  backlog_too_old   endpoint demo: a delivery has waited 20 s")
    assert "(since 20" in lines[2]

    # the opposite: a live worker and no old work is healthy, exit 0
    await redis.zadd(k.WORKERS, {"host:1": int(time.time() * 1000)})
    await redis.zadd(k.ep_state("demo", "pending"), {"n1": int(time.time() * 1000)})
    assert await cli("--config", cfg, "health", "--max-pending-age", "10") == 0


async def test_health_redis_unreachable_exits_2(
    tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("REDIS_URL", f"redis://:pw@127.0.0.1:{port}/0")
    cfg = config(tmp_path, [])
    assert await cli("--config", cfg, "health") == 2
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == "relay health: UNHEALTHY"
    assert captured.out.splitlines()[1].startswith(
        f"  redis_unreachable  Redis at redis://:***@127.0.0.1:{port}/0 is unreachable (ConnectionError"
    )
    assert captured.err == ""
    assert await cli("--config", cfg, "health", "--json") == 2
    report = json.loads(capsys.readouterr().out)
    assert report["problems"][0]["kind"] == "redis_unreachable"


def test_health_bad_config_or_arguments_exit_3(tmp_path: Path, capsys: Capsys) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('[[sources]]\nname = "default"\nsecret_key_env = "X"\nsurprise = 1\n')
    assert main(["--config", str(path), "health"]) == 3
    assert "source 'default': surprise: unknown key" in capsys.readouterr().err
    assert main(["--config", str(path), "health", "--max-pending-age", "soon"]) == 3
    assert "'soon' is not a number" in capsys.readouterr().err
    # float() reads these: nan disabled backlog_too_old (no age is > nan), inf too
    for text in ("nan", "inf"):
        assert main(["--config", str(path), "health", "--max-pending-age", text]) == 3
        assert f"{text!r} is not a finite number" in capsys.readouterr().err
    # other commands keep argparse's and the config's usual 2
    assert main(["--config", str(path), "check-endpoints"]) == 2


# -- relay check-endpoints ------------------------------------------------------------------------


@pytest.fixture
async def get_server() -> AsyncIterator[Callable[..., Any]]:
    """An HTTP server answering GET with a given status, or never answering."""
    runners: list[web.AppRunner] = []

    async def start(status: int | None) -> str:
        async def handle(request: web.Request) -> web.Response:
            if status is None:
                await asyncio.sleep(3600)
            return web.Response(status=status or 200, text="listener")

        app = web.Application()
        app.router.add_get("/{tail:.*}", handle)
        runner = web.AppRunner(app, handler_cancellation=True)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return f"http://127.0.0.1:{port}/hook"

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_check_endpoints_table_and_exit_codes(
    tmp_path: Path, get_server: Callable[..., Any], capsys: Capsys
) -> None:
    ok, missing, hang = await get_server(200), await get_server(404), await get_server(None)
    post_only = await get_server(405)
    closed = f"http://127.0.0.1:{free_port()}/hook"
    cfg = config(
        tmp_path,
        [
            {"name": "good", "url": ok},
            {"name": "missing", "url": missing},
            {"name": "slow", "url": hang, "timeout": 0.3},
            {"name": "down", "url": closed},
            {"name": "postonly", "url": post_only},
        ],
    )

    assert await cli("--config", cfg, "check-endpoints") == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["endpoint", "url", "status", "ms", "verdict"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["good"].split()[2] == "200" and rows["good"].endswith("ok")
    assert rows["missing"].endswith("expected HTTP 200, got 404")
    assert rows["slow"].endswith("no answer within 0.3 s")
    assert "ClientConnectorError" in rows["down"]
    assert rows["postonly"].split()[2] == "405" and "ok (reachable; answers GET with 405" in rows["postonly"]

    assert await cli("--config", cfg, "check-endpoints", "--json") == 1
    results = {r["endpoint"]: r for r in json.loads(capsys.readouterr().out)}
    assert (results["good"]["ok"], results["good"]["status"]) == (True, 200)
    assert (results["down"]["ok"], results["down"]["status"]) == (False, None)

    assert (results["postonly"]["ok"], results["postonly"]["status"]) == (True, 405)

    only_up = config(tmp_path, [{"name": "good", "url": ok}, {"name": "postonly", "url": post_only}])
    assert await cli("--config", only_up, "check-endpoints") == 0


# -- relay send-test ------------------------------------------------------------------------------


@pytest.fixture
async def stack(
    tmp_path: Path, redis: Redis, redis_server: RedisServer, start_worker: Callable[..., Any]
) -> AsyncIterator[Callable[..., Any]]:
    """A real ingress on a free port and one in-process ARQ worker, for a config written from args."""
    runners: list[web.AppRunner] = []

    async def start(endpoints: list[dict[str, Any]], env: dict[str, str] | None = None) -> str:
        port = free_port()
        path = config(tmp_path, endpoints, extra=f"[server]\nport = {port}\n")
        settings = load_settings(path, {**TEST_ENV, "REDIS_URL": redis_server.url, **(env or {})})
        runner = web.AppRunner(create_app(settings))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        start_worker(settings)
        return path

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("channel", "marker", "receipt"),
    [
        ("ipn", ("TEST_ORDER", "1"), "IPN read receipt verified (sha3-256)"),
        ("lcn", ("TEST", "1"), "LCN read receipt verified (sha3-256)"),
        ("ins", ("demo", "Y"), "INS answer OK"),
    ],
)
async def test_send_test_delivers_a_signed_test_notification(
    channel: str,
    marker: tuple[str, str],
    receipt: str,
    stack: Callable[..., Any],
    sink: Callable[..., Any],
    capsys: Capsys,
) -> None:
    target: Sink = await sink([200])
    cfg = await stack([{"name": "demo", "url": target.url}])

    assert await cli("--config", cfg, "send-test", "--channel", channel) == 0
    out = capsys.readouterr().out
    assert receipt in out
    assert "demo: delivered after 1 attempt(s): HTTP 200" in out
    assert out.rstrip().endswith("all delivered")
    assert len(target.received) == 1
    fields = parse_qs(target.received[0].body.decode(), keep_blank_values=True)
    assert fields[marker[0]] == [marker[1]]
    assert target.received[0].headers["Relay-Channel"] == channel

    assert await cli("--config", cfg, "health") == 0
    assert "relay health: healthy" in capsys.readouterr().out


async def test_send_test_reports_a_failing_endpoint_and_exits_1(
    stack: Callable[..., Any], sink: Callable[..., Any], capsys: Capsys
) -> None:
    good: Sink = await sink([200])
    bad: Sink = await sink([400])
    cfg = await stack([{"name": "good", "url": good.url}, {"name": "bad", "url": bad.url}])
    assert await cli("--config", cfg, "send-test", "--message-type", "REFUND", "--timeout", "10") == 1
    out = capsys.readouterr().out
    assert "good: delivered after 1 attempt(s): HTTP 200" in out
    assert "bad: failed after 1 attempt(s): HTTP 400" in out
    assert out.rstrip().endswith("not all delivered")
    assert parse_qs(good.received[0].body.decode())["MESSAGE_TYPE"] == ["REFUND"]


async def test_send_test_names_the_filter_that_skipped_an_endpoint(
    stack: Callable[..., Any], sink: Callable[..., Any], capsys: Capsys
) -> None:
    """The TEST IPN's product is RELAY-TEST: a ``match`` on other products skips it, and says which key did."""
    target: Sink = await sink([200])
    cfg = await stack(
        [
            {"name": "licensing", "url": target.url, "match": {"order.items[].code": ["PRO"]}},
            {"name": "all", "url": target.url},
        ]
    )
    assert await cli("--config", cfg, "send-test") == 0  # a filter's skip is what the configuration asks for
    out = capsys.readouterr().out
    assert "licensing: skipped: match order.items[].code: RELAY-TEST is not one of PRO" in out
    assert "all: delivered after 1 attempt(s)" in out and len(target.received) == 1


async def test_send_test_uses_dev_secrets_when_env_is_unset(
    tmp_path: Path, stack: Callable[..., Any], sink: Callable[..., Any], capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    dev = {"TCO_SECRET_KEY": "dev-key-from-relay-dev", "TCO_INS_SECRET_WORD": "dev-word"}
    (tmp_path / ".relay").mkdir()
    (tmp_path / ".relay" / "dev-secrets.json").write_text(json.dumps(dev))
    target: Sink = await sink([200])
    cfg = await stack([{"name": "demo", "url": target.url}], env=dev)
    for var in dev:
        monkeypatch.delenv(var)

    assert await cli("--config", cfg, "send-test") == 0
    captured = capsys.readouterr()
    assert "IPN read receipt verified" in captured.out
    # only what signed this IPN: the INS word in the same file is not named
    assert captured.err.strip().endswith("dev-secrets.json for TCO_SECRET_KEY"), captured.err


async def test_send_test_when_the_relay_is_not_running(tmp_path: Path, capsys: Capsys) -> None:
    cfg = config(tmp_path, [], extra=f"[server]\nport = {free_port()}\n")
    assert await cli("--config", cfg, "send-test", "--channel", "lcn") == 1
    assert "cannot reach the relay at http://127.0.0.1:" in capsys.readouterr().out


async def test_send_test_counts_a_filtered_delivery_as_expected(
    stack: Callable[..., Any], sink: Callable[..., Any], capsys: Capsys
) -> None:
    good: Sink = await sink([200])
    refunds: Sink = await sink([200])
    cfg = await stack(
        [{"name": "good", "url": good.url}, {"name": "refunds", "url": refunds.url, "test_orders": False}]
    )
    assert await cli("--config", cfg, "send-test", "--timeout", "10") == 0
    out = capsys.readouterr().out
    assert "refunds: skipped" in out
    assert out.rstrip().endswith("all delivered (1 skipped by endpoint filters, as configured)")
    assert refunds.received == [] and len(good.received) == 1


def test_send_test_without_the_secret_is_a_config_error(
    tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TCO_SECRET_KEY")
    assert main(["--config", config(tmp_path, []), "send-test"]) == 2
    assert (
        "TCO_SECRET_KEY is not set (source 'default', secret_key_env): it signs the test IPN" in capsys.readouterr().err
    )


def test_built_notifications_verify_as_the_ingress_checks_them(tmp_path: Path) -> None:
    source = load_settings(config(tmp_path, []), TEST_ENV).sources["default"]
    key = SECRET_KEY.encode()
    names = {name for name, _ in protocol.SIGNATURE_FIELDS}
    for channel in ("ipn", "lcn"):
        body = build(channel, source)
        fields = protocol.parse_form(body)
        for name, algo in protocol.SIGNATURE_FIELDS:  # each of the three signatures verifies on its own
            alone = {f: v for f, v in fields.items() if f == name or f not in names}
            assert protocol.verify_signed(alone, [key], "md5") == (algo, 0)
        assert build(channel, source) != body  # unique, so the relay never drops one as a repeat
    ins = protocol.parse_form(build("ins", source, "REFUND_ISSUED"))
    assert protocol.verify_ins(ins, source.seller_id or "", [INS_WORD]) == 0
    assert ins["message_type"] == ["REFUND_ISSUED"]


def test_receipt_verification_rejects_a_wrong_receipt(tmp_path: Path) -> None:
    from relay.cli.sendtest import SendTestError

    source = load_settings(config(tmp_path, []), TEST_ENV).sources["default"]
    body = build("ipn", source)
    fields = protocol.parse_form(body)
    right = protocol.ipn_receipt(fields, SECRET_KEY.encode(), "md5", "20240102030405")
    assert verify_receipt("ipn", source, body, right) == "IPN read receipt verified (md5)"
    with pytest.raises(SendTestError, match="does not verify"):
        verify_receipt("ipn", source, body, right.replace("20240102030405", "20240102030406"))
    with pytest.raises(SendTestError, match="no read receipt"):
        verify_receipt("ipn", source, body, "OK")


async def test_check_endpoints_shows_no_credential_of_a_url(
    tmp_path: Path, get_server: Callable[..., Any], capsys: Capsys
) -> None:
    """It printed each URL whole, a password in it or a token in its query too, into a terminal or a
    cron job's mail (relay health, the alerts and the dashboard name the host alone)."""
    base = await get_server(200)
    url = base.replace("http://", "http://billing:s3cretpw@") + "?api_token=abc123xyz&tenant=eu"
    cfg = config(tmp_path, [{"name": "good", "url": url}])
    assert await cli("--config", cfg, "check-endpoints") == 0
    out = capsys.readouterr().out
    assert await cli("--config", cfg, "check-endpoints", "--json") == 0
    out += capsys.readouterr().out
    assert "s3cretpw" not in out and "abc123xyz" not in out, out
    assert "billing:***@127.0.0.1" in out and "api_token=***&tenant=eu" in out, out

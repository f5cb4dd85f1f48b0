"""One CLI convention (README, "Command line"), with `relay` commands (run in the test process by
tests/cli.py) on a real Redis: an unknown name or a bad argument exits 2 in every command; operator
commands print their result and log only warnings unless --verbose; queue figures are in an operator's
words; send-test prints changes only."""

# the fixtures are imported from test_api, so test arguments "redefine" them by design

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from config.settings import Settings
from relay import constants as k
from relay.cli.sendtest import follow
from tests.cli import run_cli
from tests.support import RedisServer, wait_for, write_config
from tests.test_api import (  # noqa: F401  (fixtures used by name)
    api_settings,
    client,
    ingest,
    sinks,
    worker,
)

NID = "ipn_" + "0" * 24


def relay(config: Path, redis_url: str, *args: str) -> tuple[int, str, str]:
    done = run_cli("--config", str(config), *args, redis_url=redis_url)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize(
    "args, named",
    [
        (("endpoints", "pause", "nope", "--yes"), "NAME 'nope'"),
        (("endpoints", "resume", "nope", "--yes"), "NAME 'nope'"),
        (("retry", "--endpoint", "nope", "--yes"), "--endpoint 'nope'"),
        (("retry", NID, "--endpoint", "nope"), "--endpoint 'nope'"),
        (("cancel", NID, "--endpoint", "nope"), "--endpoint 'nope'"),
        (("resend", NID, "--endpoint", "nope"), "'nope'"),
        (("notifications", "list", "--endpoint", "nope"), "--endpoint 'nope'"),
        (("notifications", "show", "order-42"), "ID 'order-42'"),
        (("retry", "order-42"), "ID 'order-42'"),
        (("cancel", "order-42"), "ID 'order-42'"),
        (("resend", "order-42"), "ID 'order-42'"),
        # --ids took a malformed id as "not found": queued 0, skipped, exit 0
        (("resend", "--ids", f"{NID},order-42"), "ID 'order-42'"),
        (("resend", "--ids", NID, "--endpoint", "nope"), "--endpoint 'nope'"),
    ],
)
def test_an_unknown_name_or_a_bad_argument_exits_2_everywhere(
    tmp_path: Path, redis_server: RedisServer, args: tuple[str, ...], named: str
) -> None:
    config = write_config(tmp_path / "relay.toml", endpoints=[{"name": "billing", "url": "http://127.0.0.1:9/h"}])
    code, out, err = relay(config, redis_server.url, *args)
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and "Traceback" not in err and named in lines[0], err


async def test_resend_prints_its_result_and_no_log_line_unless_verbose(
    client: TestClient, api_settings: Settings, redis_server: RedisServer
) -> None:
    nid = await ingest(client, "4242")
    code, out, err = relay(api_settings.config_path, redis_server.url, "resend", nid)
    assert code == 0, err
    assert err == "", err  # the resend_queued log line is not for the operator's terminal
    assert out.startswith("queued ") and f"(resend of {nid})" in out and len(out.splitlines()) == 1, out
    code, out, err = relay(api_settings.config_path, redis_server.url, "resend", nid, "--verbose")
    assert code == 0 and "resend_queued" in err and "resend_queued" not in out, (out, err)


async def test_health_counts_what_waits_in_operator_words(
    redis: Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "relay.toml", endpoints=[{"name": "billing", "url": "http://127.0.0.1:9/h"}])
    now = int(time.time() * 1000)
    await redis.zadd(k.FANOUT, {"ipn_x": now})
    await redis.zadd(k.ep_state("billing", "pending"), {"n1": now, "n2": now})
    await redis.zadd(k.ep_state("billing", "retrying"), {"n3": now})
    # the sweeper's cron job in ARQ's queue is the scheduler's business, not waiting work
    await redis.zadd(k.QUEUE_NAME, {"cron:sweep": now + 5_000})
    code, out, err = relay(config, redis_server.url, "health")
    assert "waiting  1 notification awaiting fan-out, 3 deliveries waiting to be sent" in out, out
    assert "ARQ" not in out and "job" not in out, out


async def test_send_test_prints_a_waiting_retry_once_not_its_countdown(redis: Redis) -> None:
    nid = "ipn_" + "1" * 24
    now = int(time.time() * 1000)
    await redis.hset(k.notification(nid), "eps", "billing")
    await redis.hset(
        k.delivery(nid, "billing"),
        mapping={"state": "retrying", "attempts": 1, "last": "HTTP 500", "next": now + 30_000},
    )
    out = io.StringIO()
    await follow(redis, nid, 1.2, out)  # a second boundary passes: a countdown would show
    lines = [line for line in out.getvalue().splitlines() if "billing" in line]
    assert len(lines) == 1 and "retrying after attempt 1: HTTP 500, next try in" in lines[0], out.getvalue()


async def test_one_delivery_is_counted_in_the_singular(
    client: TestClient, api_settings: Settings, redis: Redis, redis_server: RedisServer, worker: object
) -> None:
    """`relay endpoints resume` said "1 deliveries are due again" (the dashboard's "30 deliverys" fixed, not this)."""
    config = api_settings.config_path
    code, out, err = relay(config, redis_server.url, "endpoints", "pause", "billing", "--yes")
    assert code == 0 and out.strip() == "paused billing: 0 waiting deliveries now wait as paused", (out, err)
    nid = await ingest(client, "5151")

    async def paused() -> bool:
        return await redis.hget(k.delivery(nid, "billing"), "state") == b"paused"

    await wait_for(paused, 15)
    code, out, err = relay(config, redis_server.url, "endpoints", "resume", "billing", "--yes")
    assert code == 0 and out.strip() == "resumed billing: 1 delivery is due again", (out, err)


def test_send_test_names_only_the_development_secret_it_signs_with(tmp_path: Path) -> None:
    """It listed every variable of the dev secrets file (RELAY_ADMIN_TOKEN, RELAY_DEMO_SIGNING_SECRET, the
    INS word) for an IPN signed with TCO_SECRET_KEY alone, as relay reconcile did before."""
    from tests.support import free_port

    config = write_config(tmp_path / "relay.toml", endpoints=[{"name": "billing", "url": "http://127.0.0.1:9/h"}])
    (tmp_path / ".relay").mkdir()
    secrets = {
        "TCO_SECRET_KEY": "k1",
        "TCO_INS_SECRET_WORD": "w1",
        "RELAY_ADMIN_TOKEN": "t" * 32,
        "RELAY_DEMO_SIGNING_SECRET": "whsec_x",
    }
    (tmp_path / ".relay" / "dev-secrets.json").write_text(__import__("json").dumps(secrets))
    env = {"REDIS_URL": "redis://127.0.0.1:9/0"}
    closed = f"http://127.0.0.1:{free_port()}"
    for channel, used in (("ipn", "TCO_SECRET_KEY"), ("ins", "TCO_INS_SECRET_WORD")):
        proc = run_cli(
            *("--config", str(config), "send-test", "--channel", channel, "--url", closed, "--timeout", "1"),
            env=env,
            cwd=tmp_path,
            drop=tuple(secrets),
        )
        assert proc.returncode == 1, (proc.stdout, proc.stderr)  # nothing listens there: cannot reach the relay
        note = proc.stderr.splitlines()[0]
        assert note == f"send-test: using the development secrets in .relay/dev-secrets.json for {used}", note


@pytest.mark.parametrize(
    ("host", "shown"),
    [("::1", "[::1]"), ("fd00::5", "[fd00::5]"), ("::", "[::1]"), ("0.0.0.0", "127.0.0.1"), ("127.0.0.1", "127.0.0.1")],
)
def test_urls_built_from_a_listen_host_bracket_an_ipv6_one(tmp_path: Path, host: str, shown: str) -> None:
    """[server] host = "::1" made send-test post to http://::1:8080/ipn ('cannot reach the relay':
    not a URL), and the log's listening line and the alerts' dashboard link the same."""
    from config.settings import load_settings
    from relay.alerting.texts import dashboard
    from relay.cli.sendtest import listener_url
    from tests.support import TEST_ENV

    config = write_config(
        tmp_path / "relay.toml", admin={"port": 8081, "host": host}, extra=f'[server]\nhost = "{host}"\n'
    )
    settings = load_settings(config, TEST_ENV)
    assert listener_url(settings, "ipn", "default", None) == f"http://{shown}:{settings.server.port}/ipn"
    listen = host if ":" not in host else f"[{host}]"
    assert dashboard(settings) == f"http://{listen}:8081/dashboard"

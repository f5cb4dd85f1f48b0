"""Issue 23 end to end: no failure hides behind a small count, and every problem alerts. Real
``relay serve`` and ``relay worker`` processes, real endpoints, a real webhook receiving the alerts,
and the real ``relay`` command line."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from relay import constants as k
from relay.alerting.watch import HostMark
from tests.conftest import SYSTEM_TMP
from tests.procs import RelayProcess
from tests.support import RedisServer, Sink, free_port, ipn_fields, signed_body, wait_for, write_config
from tests.test_truth import TOKEN, Stack
from tests.test_truth import Endpoint as Endpoint503

pytestmark = pytest.mark.slow  # real serve/worker processes end to end (~2 min here): make test, not make check

SMALL = 0.3  # [alerts] check_seconds: how often relay serve checks for no_worker


class Endpoint(Endpoint503):
    """test_truth's endpoint, answering ``status`` (not 503) while down."""

    def __init__(self, down: bool = False, status: int = 503) -> None:
        super().__init__(down=down)
        self.status = status

    async def handle(self, request: web.Request) -> web.Response:
        answer = await super().handle(request)
        return web.Response(status=self.status, text="down") if answer.status == 503 else answer


class AlertStack(Stack):
    hook: Sink
    env: dict[str, str]

    def alerts(self, kind: str | None = None) -> list[dict[str, Any]]:
        sent = [json.loads(r.body) for r in self.hook.received]
        return [a for a in sent if kind is None or a["kind"] == kind]

    async def card(self, endpoint: str) -> str:
        """The state the dashboard's card of ``endpoint`` shows (data-state), after logging in."""
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.post(f"{self.base}/dashboard/login", data={"token": TOKEN}) as resp:
                assert resp.status == 200, await resp.text()
            async with http.get(f"{self.base}/dashboard/") as resp:
                page = await resp.text()
        match = re.search(rf'data-endpoint="{endpoint}" data-state="(\w+)"', page)
        assert match, page
        return match.group(1)

    def health(self) -> tuple[int, dict[str, Any]]:
        code, out = self.cli("health", "--json")
        return code, json.loads(out)


@pytest.fixture
async def stack(
    tmp_path: Path, redis_server: RedisServer, redis: Redis, sink: Callable[..., Any]
) -> AsyncIterator[Callable[..., Any]]:
    stacks: list[AlertStack] = []
    endpoints_started: list[Endpoint] = []

    async def start(
        endpoints: dict[str, Endpoint],
        *,
        ep_options: dict[str, Any] | None = None,
        sources: list[dict[str, Any]] | None = None,
        worker: bool = True,
        alerts: str = "",
    ) -> AlertStack:
        for ep in endpoints.values():
            await ep.start()
            endpoints_started.append(ep)
        hook = await sink([200])
        port = free_port()
        eps = [
            {"name": name, "url": ep.url, "retry_delays": [0.05], **(ep_options or {})}
            for name, ep in endpoints.items()
        ]
        extra = (
            f'[server]\nport = {port}\nadmin_token_env = "RELAY_ADMIN_TOKEN"\n'
            f'[alerts]\nwebhook_url_env = "ALERT_HOOK"\ncheck_seconds = {SMALL}\n{alerts}'
        )
        path = write_config(tmp_path / "relay.toml", endpoints=eps, sources=sources, extra=extra)
        env = {"RELAY_ADMIN_TOKEN": TOKEN, "ALERT_HOOK": hook.url}
        if worker:
            procs = await _worker_then_serve(path, redis_server.url, env, redis)
        else:
            procs = [RelayProcess(path, redis_server.url, "serve", env=env)]
        s = AlertStack(path, f"http://127.0.0.1:{port}", redis_server.url, procs)
        stacks.append(s)  # every process it holds is stopped at the end, added ones too
        s.hook = hook
        s.env = env

        async def up() -> bool:
            try:
                async with aiohttp.ClientSession() as http, http.get(f"{s.base}/healthz") as resp:
                    return resp.status == 200 and (not worker or await redis.zcard(k.WORKERS) > 0)
            except aiohttp.ClientError:
                return False

        await wait_for(up, timeout=30, interval=0.1)
        return s

    yield start
    for stack_ in stacks:
        for proc in stack_.procs:
            proc.stop()
    for ep in endpoints_started:
        if ep.runner:
            await ep.runner.cleanup()


async def _worker_then_serve(path: Path, url: str, env: dict[str, str], redis: Redis) -> list[RelayProcess]:
    """``[serve, worker]``, the worker started first and beating before relay serve starts: serve's
    first checks (every SMALL s) saw no worker whenever the worker started a few checks later than it,
    which under load it did, and sent a no_worker no test caused."""
    worker = RelayProcess(path, url, "worker", env=env)
    try:
        await wait_for(lambda: redis.zcard(k.WORKERS), timeout=30, interval=0.1)
    except AssertionError:
        worker.stop()
        raise
    return [RelayProcess(path, url, "serve", env=env), worker]


async def test_three_given_up_deliveries_fail_the_endpoint_until_resent(
    stack: Callable[..., Any], redis: Redis
) -> None:
    """Done when: one endpoint with 3 given-up deliveries and no other traffic makes relay health exit 1
    with endpoint_failing and its card say Failing; after a delivered resend of all three it is
    healthy again. (min_deliveries = 10 used to hide them: "4 of 4 failing" under "Healthy".)"""
    erp = Endpoint(down=True)
    s: AlertStack = await stack({"erp": erp}, ep_options={"concurrent": True})
    for i in range(3):
        assert await s.post("/ipn", signed_body(ipn_fields(f"2310{i:05d}"))) == 200
    await wait_for(lambda: _count(redis, "erp", "failed", 3), timeout=30, interval=0.1)

    code, out = s.cli("health")
    assert code == 1 and out.startswith("relay health: DEGRADED\n  endpoint_failing  endpoint erp "), out
    code, report = s.health()
    (problem,) = report["problems"]
    assert (problem["kind"], problem["failed"], problem["attempted"], problem["causes"]) == (
        "endpoint_failing",
        3,
        3,
        ["given_up"],
    )
    assert problem["min_deliveries"] == 10  # not reached, and it does not matter
    assert await s.card("erp") == "failing"
    # the alert says to resend them (they are no longer retrying)
    await wait_for(lambda: s.alerts("endpoint_failing"), timeout=30, interval=0.2)
    text = s.alerts("endpoint_failing")[0]["text"]
    assert "3 given up: once erp is fixed, relay resend --endpoint erp --state failed resends them" in text
    assert "relay retry --endpoint" not in text
    assert "Last error: HTTP 503 at 20" in text and "Z. Nothing waits for it now.\n" in text  # was "- since receipt"

    erp.down = False
    code, out = s.cli("resend", "--endpoint", "erp", "--state", "failed", "--yes")
    assert code == 0, out

    async def healthy() -> bool:
        code, report = s.health()
        return code == 0 and report["endpoints"]["erp"]["resolved"] == 3

    await wait_for(healthy, timeout=30, interval=0.2)
    assert await s.card("erp") == "healthy"
    await wait_for(lambda: s.alerts("endpoint_recovered"), timeout=30, interval=0.2)


async def _count(redis: Redis, ep: str, state: str, n: int) -> bool:
    return int(await redis.zcard(k.ep_state(ep, state))) == n


async def test_a_serial_endpoint_answering_500_fails_at_once_and_pausing_it_announces_nothing(
    stack: Callable[..., Any], redis: Redis
) -> None:
    """Done when: a serial endpoint answering 500 is endpoint_failing after its head's first failed
    attempt, its card says Failing and an alert names the HTTP 500; pausing it sends no recovery, and
    resuming continues the incident (same since)."""
    erp = Endpoint(down=True, status=500)
    # long retry delays: the head keeps waiting for its second attempt while the test looks
    s: AlertStack = await stack({"erp": erp}, ep_options={"concurrent": False, "retry_delays": [600, 600]})
    for i in range(3):
        assert await s.post("/ipn", signed_body(ipn_fields(f"2311{i:05d}"))) == 200
    await wait_for(lambda: _count(redis, "erp", "retrying", 1), timeout=30, interval=0.1)
    assert erp.posts == 1  # one attempt of the head, nothing else sent

    code, report = s.health()
    assert code == 1, report
    (problem,) = report["problems"]
    assert (problem["kind"], problem["causes"], problem["held_back"], problem["last_error"]) == (
        "endpoint_failing",
        ["head_retrying"],
        2,
        "HTTP 500",
    )
    assert "holding back 2 notifications behind it; last error HTTP 500" in problem["message"]
    since = problem["since"]
    assert await s.card("erp") == "failing"

    # the worker's alert job names the HTTP 500 and says to retry now, not to resend
    await wait_for(lambda: s.alerts("endpoint_failing"), timeout=30, interval=0.2)
    (alert,) = s.alerts("endpoint_failing")
    assert alert["last_error"] == "HTTP 500" and "Last error: HTTP 500" in alert["text"]
    assert alert["since"] == since and alert["held_back"] == 2
    assert "relay retry --endpoint erp" in alert["text"] and "/dashboard/endpoints/erp/retry" in alert["text"]
    assert "resend" not in alert["text"]

    code, out = s.cli("endpoints", "pause", "erp", "--yes")
    assert code == 0, out
    code, report = s.health()
    assert code == 0 and report["endpoints"]["erp"]["paused"] is True
    code, out = s.cli("health")
    assert re.search(r"^erp PAUSED ", out, re.M), out
    # the alert job runs again after the pause: it keeps the open incident (its TTL refreshed from
    # the short one set here) instead of announcing a recovery
    opened = k.alert_open("ep:erp")
    assert await redis.pexpire(opened, 600_000)
    await wait_for(lambda: _ttl_above(redis, opened, 700_000), timeout=30, interval=0.2)
    assert s.alerts("endpoint_recovered") == []

    code, out = s.cli("endpoints", "resume", "erp", "--yes")
    assert code == 0, out
    code, report = s.health()
    assert code == 1 and report["problems"][0]["since"] == since  # the same incident goes on
    assert s.alerts("endpoint_recovered") == [] and len(s.alerts("endpoint_failing")) == 1


async def _ttl_above(redis: Redis, key: str, ms: int) -> bool:
    return int(await redis.pttl(key)) > ms


async def test_stopping_every_worker_makes_an_ingress_send_no_worker(stack: Callable[..., Any], redis: Redis) -> None:
    s: AlertStack = await stack({"erp": Endpoint()})
    assert s.alerts() == []
    worker = s.procs[1]
    worker.stop()
    await wait_for(lambda: s.alerts("no_worker"), timeout=30, interval=0.1)
    (alert,) = s.alerts("no_worker")
    assert "no relay worker is alive: nothing is delivered" in alert["text"]
    assert await redis.get(k.ALERT_INGRESS_LEASE) is not None  # one relay serve holds the watch
    # a worker again: the incident ends with one recovery message
    s.procs.append(RelayProcess(s.config, s.redis_url, "worker", env=s.env))
    await wait_for(lambda: s.alerts("worker_recovered"), timeout=30, interval=0.1)
    assert len(s.alerts("no_worker")) == 1


async def test_an_outage_record_another_run_left_on_the_host_sends_no_recovery_here(
    stack: Callable[..., Any], redis: Redis, redis_server: RedisServer
) -> None:
    """The host's Redis outage record (one file per host and Redis URL) outlives the processes that
    wrote it, as it should in production; but a test run that left one behind (its Redis stopped
    for good) made a later run, whose Redis drew the same port, get a redis_recovered alert at its
    start. The session keeps those records in a temp directory of its own (tests/conftest.py)."""
    own = HostMark(redis_server.url).path
    stale = Path(SYSTEM_TMP) / own.relative_to(tempfile.gettempdir())
    assert stale != own
    stale.parent.mkdir(mode=0o700, exist_ok=True)
    existed = stale.exists()
    if not existed:
        stale.write_text(json.dumps({"since": 1.0, "sent": 2.0}))
    try:
        s: AlertStack = await stack({"erp": Endpoint()})
        await _checks(redis, 3)  # the first check would have sent the recovery
        assert s.alerts() == []
    finally:
        if not existed:
            stale.unlink(missing_ok=True)
    assert os.environ["TMPDIR"] != SYSTEM_TMP


async def _checks(redis: Redis, n: int) -> None:
    """Until the serve holding the alert lease has renewed it ``n`` times (once a check)."""
    renewals, last = 0, 0

    async def renewed() -> bool:
        nonlocal renewals, last
        ttl = int(await redis.pttl(k.ALERT_INGRESS_LEASE))
        renewals += ttl > last
        last = ttl
        return renewals >= n

    await wait_for(renewed, timeout=30, interval=0.05)


async def test_a_silent_source_raises_source_silent_and_the_next_notification_clears_it(
    stack: Callable[..., Any], redis: Redis
) -> None:
    # 12 s (fractions of an hour are allowed): longer than the alert job's 10 s, so its run after the
    # next notification sees the source cleared before it could fall silent again
    hours = 12 / 3600
    sources = [{"name": "default", "secret_key_env": "TCO_SECRET_KEY", "expect_within_hours": hours}]
    s: AlertStack = await stack({"erp": Endpoint()}, sources=sources)
    assert await s.post("/ipn", signed_body(ipn_fields("231200001"))) == 200

    async def silent() -> dict[str, Any] | None:
        code, report = s.health()
        return next((p for p in report["problems"] if p["kind"] == "source_silent"), None) if code == 1 else None

    problem = await wait_for(silent, timeout=30, interval=0.3)
    assert problem["source"] == "default" and problem["last_at"] is not None
    await wait_for(lambda: s.alerts("source_silent"), timeout=30, interval=0.2)
    assert "source default is silent" in s.alerts("source_silent")[0]["text"]

    assert await s.post("/ipn", signed_body(ipn_fields("231200002"))) == 200
    code, report = s.health()
    assert not [p for p in report["problems"] if p["kind"] == "source_silent"], report
    assert report["sources"]["default"]["silent"] is False
    await wait_for(lambda: s.alerts("source_recovered"), timeout=30, interval=0.2)
    assert s.alerts("source_recovered")[0]["problem"] == "source_silent"


async def test_refusals_below_the_threshold_are_an_info_line(stack: Callable[..., Any]) -> None:
    s: AlertStack = await stack({"erp": Endpoint()})
    for i in range(3):
        assert await s.post("/ipn", signed_body(ipn_fields(f"2313{i:05d}"), secret="an-old-key")) == 400
    code, out = s.cli("health")
    assert code == 0, out
    assert re.search(
        r"^info     source default: 3 of 3 requests refused in the last 15 min \(below the "
        r"alert threshold\); last signature_mismatch at 20",
        out,
        re.M,
    ), out
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post(f"{s.base}/dashboard/login", data={"token": TOKEN}) as resp:
            assert resp.status == 200
        async with http.get(f"{s.base}/dashboard/") as resp:
            page = await resp.text()
    assert "source default: 3 of 3 requests refused" in page
    status, api = await s.get_json("/api/health")
    assert status == 200 and api["status"] == "healthy" and api["notes"][0]["refused"] == 3


async def test_redis_unreachable_is_sent_once_per_host_and_recovers(tmp_path: Path, sink: Callable[..., Any]) -> None:
    server = RedisServer().start()
    hook = await sink([200])
    port = free_port()
    extra = f'[server]\nport = {port}\n[alerts]\nwebhook_url_env = "ALERT_HOOK"\ncheck_seconds = {SMALL}\n'
    path = write_config(
        tmp_path / "relay.toml", endpoints=[{"name": "erp", "url": "http://127.0.0.1:9/x"}], extra=extra
    )
    # two members, each with its own watcher, on one host (whose temp directory holds the host's record)
    env = {"ALERT_HOOK": hook.url, "TMPDIR": str(tmp_path)}
    procs = [RelayProcess(path, server.url, "serve", "--processes", "2", env=env)]
    try:

        async def up(p: int = port) -> bool:
            try:
                async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{p}/healthz") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(up, timeout=30, interval=0.1)
        server.stop()

        def kinds() -> list[str]:
            return [json.loads(r.body)["kind"] for r in hook.received]

        await wait_for(lambda: "redis_unreachable" in kinds(), timeout=30, interval=0.1)
        server.start()
        await wait_for(lambda: "redis_recovered" in kinds(), timeout=30, interval=0.1)
        assert kinds().count("redis_unreachable") == 1 and kinds().count("redis_recovered") == 1
        alert = next(json.loads(r.body) for r in hook.received if json.loads(r.body)["kind"] == "redis_unreachable")
        assert "Redis at redis://127.0.0.1:" in alert["text"] and "is unreachable" in alert["text"]
    finally:
        for proc in procs:
            proc.stop()
        server.cleanup()


async def test_a_worker_alone_on_its_host_reports_redis_unreachable_and_its_recovery(
    tmp_path: Path, sink: Callable[..., Any]
) -> None:
    server = RedisServer().start()
    hook = await sink([200])
    path = write_config(
        tmp_path / "relay.toml",
        endpoints=[{"name": "erp", "url": "http://127.0.0.1:9/x"}],
        extra='[alerts]\nwebhook_url_env = "ALERT_HOOK"\n',
    )
    worker = RelayProcess(path, server.url, "worker", env={"ALERT_HOOK": hook.url, "TMPDIR": str(tmp_path)})
    client = Redis.from_url(server.url)
    try:
        await wait_for(lambda: client.zcard(k.WORKERS), timeout=30, interval=0.1)
        server.stop()

        def kinds() -> list[str]:
            return [json.loads(r.body)["kind"] for r in hook.received]

        await wait_for(lambda: "redis_unreachable" in kinds(), timeout=60, interval=0.1)
        server.start()
        await wait_for(lambda: "redis_recovered" in kinds(), timeout=60, interval=0.1)
        assert kinds() == ["redis_unreachable", "redis_recovered"], worker.output()[-2000:]
    finally:
        await client.aclose()
        worker.stop()
        server.cleanup()


async def test_relay_serve_evaluates_health_only_when_a_worker_alert_may_be_due(
    stack: Callable[..., Any], redis: Redis
) -> None:
    """The lease holder ran the whole health evaluation (health.lua and all) at every check while
    workers were alive, for nothing: doubling the evaluations Redis serves. It evaluates only when no
    worker was seen at two checks in a row, or when a no_worker incident owes its recovery. Seen
    through the evaluation's own write: a source's watch record (relay:src:{src}:watched)."""
    sources = [{"name": "default", "secret_key_env": "TCO_SECRET_KEY", "expect_within_hours": 1}]
    sec, _ = await redis.time()
    await redis.zadd(k.WORKERS, {"elsewhere:1": int(sec) * 1000})  # a live worker's heartbeat, 30 s of life
    s: AlertStack = await stack({"erp": Endpoint()}, sources=sources, worker=False)
    await wait_for(lambda: redis.get(k.ALERT_INGRESS_LEASE), timeout=30, interval=0.05)
    renewals, last = 0, 0

    async def renewed() -> bool:  # the holder renews its lease at every check
        nonlocal renewals, last
        ttl = int(await redis.pttl(k.ALERT_INGRESS_LEASE))
        renewals += ttl > last
        last = ttl
        return renewals >= 5

    await wait_for(renewed, timeout=30, interval=0.05)
    assert await redis.exists(k.source_watched("default")) == 0
    # no worker any more: the holder evaluates, alerts, and its evaluation writes the watch record
    await redis.zrem(k.WORKERS, "elsewhere:1")
    await wait_for(lambda: s.alerts("no_worker"), timeout=30, interval=0.1)
    assert await redis.exists(k.source_watched("default")) == 1
    # a worker again: the open incident brings the evaluation back for the recovery
    sec, _ = await redis.time()
    await redis.zadd(k.WORKERS, {"elsewhere:1": int(sec) * 1000})
    await wait_for(lambda: s.alerts("worker_recovered"), timeout=30, interval=0.1)
    assert len(s.alerts("no_worker")) == 1 and len(s.alerts("worker_recovered")) == 1


async def test_a_repeated_alert_says_the_incident_s_first_since(stack: Callable[..., Any], redis: Redis) -> None:
    """A repeat (every frequency_hours while the problem lasts) carried the problem's since of the
    moment: with no worker known that is the time of the check, so each no_worker repeat named a
    later start than the first alert and than the recovery. It says the incident's recorded start."""
    s: AlertStack = await stack({"erp": Endpoint()}, alerts="frequency_hours = 0.0004\n")  # 1.44 s
    s.procs[1].stop()  # a clean stop: the worker leaves relay:workers, so none is known
    await wait_for(lambda: len(s.alerts("no_worker")) >= 2, timeout=30, interval=0.1)
    first, repeat = s.alerts("no_worker")[:2]
    assert first["last_worker"] is None and repeat["at"] > first["since"]
    assert repeat["since"] == first["since"], (first, repeat)
    s.procs.append(RelayProcess(s.config, s.redis_url, "worker", env=s.env))
    await wait_for(lambda: s.alerts("worker_recovered"), timeout=30, interval=0.1)
    assert s.alerts("worker_recovered")[0]["since"] == first["since"]


async def test_no_worker_is_not_announced_while_workers_reconnect_after_redis_was_unreachable(
    tmp_path: Path, sink: Callable[..., Any]
) -> None:
    """A worker that lost Redis starts again on its own backoff (1, 2, 4 … 30 s): once Redis was back,
    relay serve saw no heartbeat at two checks and sent no_worker ("start relay worker") about a worker
    that was alive and connected again seconds later. It gives the workers time to reconnect first."""
    server = RedisServer().start()
    hook = await sink([200])
    port = free_port()
    extra = f'[server]\nport = {port}\n[alerts]\nwebhook_url_env = "ALERT_HOOK"\ncheck_seconds = {SMALL}\n'
    path = write_config(
        tmp_path / "relay.toml", endpoints=[{"name": "erp", "url": "http://127.0.0.1:9/x"}], extra=extra
    )
    env = {"ALERT_HOOK": hook.url, "TMPDIR": str(tmp_path)}
    client = Redis.from_url(server.url)
    procs: list[RelayProcess] = []
    try:
        procs = await _worker_then_serve(path, server.url, env, client)
        server.stop()

        def kinds() -> list[str]:
            return [json.loads(r.body)["kind"] for r in hook.received]

        await wait_for(lambda: "redis_unreachable" in kinds(), timeout=30, interval=0.1)
        # the worker failed to start again once and now waits 2 s (then ARQ's connection retries)
        await wait_for(lambda: '"restart_in_s": 2.0' in procs[1].output(), timeout=30, interval=0.1)
        server.start()  # empty (no persistence): no heartbeat until the worker is back
        await wait_for(lambda: "redis_recovered" in kinds(), timeout=30, interval=0.1)
        await wait_for(lambda: client.zcard(k.WORKERS), timeout=60, interval=0.1)
        await wait_for(lambda: client.get(k.ALERT_INGRESS_LEASE), timeout=30, interval=0.1)
        assert kinds() == ["redis_unreachable", "redis_recovered"], kinds()
    finally:
        await client.aclose()
        for proc in procs:
            proc.stop()
        server.cleanup()


async def test_a_full_redis_is_one_outage_for_every_process_on_the_host(
    tmp_path: Path, sink: Callable[..., Any]
) -> None:
    """A full Redis (maxmemory, noeviction) answers reads and refuses every write: the ingress answers
    503 and a worker cannot start. relay serve's check read only TIME, so it saw Redis up and ended the
    host's outage record at every check, and the worker, failing to start each second, sent
    redis_unreachable each second (36 in 36 s, measured by hand). One alert, then one recovery."""
    server = RedisServer().start()
    hook = await sink([200])
    port = free_port()
    extra = f'[server]\nport = {port}\n[alerts]\nwebhook_url_env = "ALERT_HOOK"\ncheck_seconds = {SMALL}\n'
    path = write_config(
        tmp_path / "relay.toml", endpoints=[{"name": "erp", "url": "http://127.0.0.1:9/x"}], extra=extra
    )
    env = {"ALERT_HOOK": hook.url, "TMPDIR": str(tmp_path)}
    client = Redis.from_url(server.url)
    procs: list[RelayProcess] = []
    try:
        procs = await _worker_then_serve(path, server.url, env, client)
        await client.config_set("maxmemory-policy", "noeviction")
        await client.config_set("maxmemory", 1)  # every write refused from now on

        def kinds() -> list[str]:
            return [json.loads(r.body)["kind"] for r in hook.received]

        await wait_for(lambda: "redis_unreachable" in kinds(), timeout=30, interval=0.1)
        # the worker keeps failing to start again (about once a second); each failure was an alert
        lost = procs[1].output().count("worker_redis_lost")
        await wait_for(lambda: procs[1].output().count("worker_redis_lost") >= lost + 4, timeout=60, interval=0.2)
        assert kinds() == ["redis_unreachable"], kinds()
        await client.config_set("maxmemory", 0)
        await wait_for(lambda: "redis_recovered" in kinds(), timeout=60, interval=0.1)
        assert kinds() == ["redis_unreachable", "redis_recovered"], kinds()
    finally:
        await client.aclose()
        for proc in procs:
            proc.stop()
        server.cleanup()


async def test_a_worker_that_cannot_start_on_a_full_redis_backs_off(tmp_path: Path) -> None:
    """A full Redis lets a worker connect and create its engine, then refuses the start's writes: the
    worker counted that as "it had been running" and started again every second for as long as Redis
    stayed full. Its backoff grows as for any worker that cannot start."""
    server = RedisServer().start()
    path = write_config(tmp_path / "relay.toml", endpoints=[{"name": "erp", "url": "http://127.0.0.1:9/x"}])
    client = Redis.from_url(server.url)
    await client.config_set("maxmemory-policy", "noeviction")
    await client.config_set("maxmemory", 1)
    worker = RelayProcess(path, server.url, "worker", env={"TMPDIR": str(tmp_path)})
    try:
        await wait_for(lambda: '"restart_in_s": 4.0' in worker.output(), timeout=30, interval=0.1)
        await client.config_set("maxmemory", 0)
        await wait_for(lambda: client.zcard(k.WORKERS), timeout=30, interval=0.1)
    finally:
        await client.aclose()
        worker.stop()
        server.cleanup()

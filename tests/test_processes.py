"""`relay serve --processes N` as real processes: N members on one port (SO_REUSEPORT), /metrics summed
over them, signals passed on, a killed member replaced (relay/cli/supervise.py)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from redis.asyncio import Redis

from relay.store import audit
from relay.store.reload import live_processes
from relay.web.metrics import IngressMetrics
from tests.procs import RelayProcess
from tests.support import TEST_ENV, RedisServer, free_port, ipn_fields, signed_body, write_config

pytestmark = pytest.mark.slow  # real serve --processes members (~28 s): make test, not make check

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def _healthz(port: int, tries: int = 1) -> list[dict[str, object]]:
    """``tries`` /healthz answers, each on a new connection (the kernel picks a member per connection)."""
    answers = []
    for _ in range(tries):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
                answers.append(await resp.json())
    return answers


async def _members_up(port: int, proc: RelayProcess, count: int, timeout: float = 60) -> dict[int, int]:
    """Wait until every member answered /healthz; their pids by index."""
    seen: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        assert proc.proc.poll() is None, proc.output()[-3000:]
        assert time.monotonic() < deadline, f"members seen: {seen}\n{proc.output()[-3000:]}"
        try:
            for a in await _healthz(port, 8):
                seen[int(a["process"])] = int(a["pid"])  # type: ignore[call-overload]
        except aiohttp.ClientError:
            await asyncio.sleep(0.1)
    return seen


def _metric(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def _log(proc: RelayProcess) -> list[dict[str, object]]:
    """The JSON log lines of the supervisor and its members."""
    lines = []
    for line in proc.output().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            pass
    return [line for line in lines if isinstance(line, dict)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not reaped yet) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_two_members_share_the_port_and_metrics_are_their_sum(
    tmp_path: Path, redis_server: RedisServer, redis: Redis
) -> None:
    public, admin = free_port(), free_port()
    config = write_config(tmp_path / "relay.toml", admin={"port": admin}, extra=f"[server]\nport = {public}\n")
    proc = RelayProcess(config, redis_server.url, "serve", "--processes", "2", env={"RELAY_ADMIN_TOKEN": "t0ken"})
    try:
        pids = await _members_up(public, proc, 2)
        assert len(set(pids.values())) == 2 and proc.proc.pid not in pids.values()
        # before any notification, the same families as one process shows (HELP and TYPE, no sample
        # yet): the summed files held none of them, so rejected, accepted and ack latency were missing
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{admin}/metrics") as resp:
            scraped = set((await resp.text()).splitlines())
        one_process = generate_latest(IngressMetrics(CollectorRegistry()).registry).decode().splitlines()
        assert [line for line in one_process if line not in scraped] == [], sorted(scraped)
        # each member a live process of its own: `relay reload` will count both
        # (a member reports once its reloader subscribed, a moment after it listens)
        deadline = time.monotonic() + 20
        while True:
            names = {p["name"] for p in await live_processes(redis, int(time.time() * 1000))}
            if len(names) == 2 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert {name.rsplit(":", 1)[1] for name in names} == {str(pid) for pid in pids.values()}
        env = {**os.environ, **TEST_ENV, "REDIS_URL": redis_server.url}
        run = subprocess.run(
            [sys.executable, "-m", "relay", "--config", str(config), "reload", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        result = json.loads(run.stdout)
        assert run.returncode == 0 and result["asked"] == result["answered"] == 2, run.stdout + run.stderr
        assert {a["process"] for a in result["answers"]} == names

        sent = 120
        connector = aiohttp.TCPConnector(force_close=True)  # a new connection, so a fresh pick, each time
        async with aiohttp.ClientSession(connector=connector) as http:

            async def post(i: int) -> None:
                async with http.post(
                    f"http://127.0.0.1:{public}/ipn", data=signed_body(ipn_fields(f"{240000000 + i}")), headers=FORM
                ) as resp:
                    assert resp.status == 200 and (await resp.text()).startswith("<sig")

            for start in range(0, sent, 20):
                await asyncio.gather(*(post(i) for i in range(start, start + 20)))
            # a repeat is recognised as one across members: it is stored once
            for _ in range(4):
                await post(0)
            async with http.get(f"http://127.0.0.1:{admin}/metrics") as resp:
                text = await resp.text()
            async with http.get(
                f"http://127.0.0.1:{admin}/api/notifications?limit=500", headers={"Authorization": "Bearer t0ken"}
            ) as resp:
                items = (await resp.json())["items"]
        # the scrape is the sum over both members, whichever of them the kernel handed each POST
        assert _metric(text, "relay_notifications_received_total") == sent + 4, text
        accepted = {
            line.split(" ")[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("relay_notifications_accepted_total{")
        }
        assert sum(v for k, v in accepted.items() if 'duplicate="false"' in k) == sent, accepted
        assert sum(v for k, v in accepted.items() if 'duplicate="true"' in k) == 4, accepted
        assert _metric(text, "relay_ack_latency_seconds_count") == sent + 4, text
        assert len(items) == sent and len({item["id"] for item in items}) == sent
        # both members took notifications: each log line says which member wrote it
        served = {line["proc"] for line in _log(proc) if line.get("event") == "notification_accepted"}
        assert served == {0, 1}, proc.output()[-3000:]
    finally:
        proc.stop()
    assert proc.proc.returncode == 0, proc.output()[-3000:]
    for pid in pids.values():
        assert not _alive(pid)
    # the private metrics directory is gone with the supervisor
    started = [line for line in _log(proc) if line.get("event") == "serve_processes_started"]
    assert started and started[0]["pid"] == proc.proc.pid and "proc" not in started[0]
    assert not Path(started[0]["metrics_dir"]).exists()


async def test_sigterm_stops_every_member_gracefully(tmp_path: Path, redis_server: RedisServer) -> None:
    public = free_port()
    config = write_config(tmp_path / "relay.toml", extra=f"[server]\nport = {public}\n")
    proc = RelayProcess(config, redis_server.url, "serve", "--processes", "3")
    try:
        pids = await _members_up(public, proc, 3)
        os.kill(proc.proc.pid, signal.SIGTERM)  # the supervisor alone: it must pass the signal on itself
        assert proc.proc.wait(30) == 0, proc.output()[-3000:]
        for pid in pids.values():
            assert not _alive(pid), proc.output()[-3000:]
        # each member stopped its own listener (the graceful path, not a kill)
        closed = {line["proc"] for line in _log(proc) if line.get("event") == "connections_closed"}
        assert closed == {0, 1, 2}, proc.output()[-3000:]
        assert "serve_process_killed" not in proc.output()
    finally:
        proc.stop()


async def test_a_killed_member_is_replaced_and_the_port_keeps_answering(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    public = free_port()
    config = write_config(tmp_path / "relay.toml", extra=f"[server]\nport = {public}\n")
    proc = RelayProcess(config, redis_server.url, "serve", "--processes", "2")
    try:
        pids = await _members_up(public, proc, 2)
        os.kill(pids[1], signal.SIGKILL)
        # (connections the kernel had queued on the dying member are reset with it: README, "More load")
        deadline = time.monotonic() + 10
        while _alive(pids[1]) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        # the port keeps answering meanwhile: member 0 takes every connection
        for a in await _healthz(public, 10):
            assert a["status"] == "ok"
        deadline = time.monotonic() + 30
        while True:
            now = await _members_up(public, proc, 2)
            if now[1] != pids[1]:
                break
            assert time.monotonic() < deadline, proc.output()[-3000:]
            await asyncio.sleep(0.2)
        assert now[0] == pids[0]
        died = [line for line in _log(proc) if line.get("event") == "serve_process_died"]
        assert died and died[0]["proc"] == 1 and died[0]["exit"] == "signal SIGKILL", proc.output()[-3000:]
        assert '"serve_process_restarted"' in proc.output()
    finally:
        proc.stop()
    assert proc.proc.returncode == 0, proc.output()[-3000:]


def test_sighup_reaches_every_member(tmp_path: Path, redis_server: RedisServer) -> None:
    public = free_port()
    config = write_config(tmp_path / "relay.toml", extra=f"[server]\nport = {public}\n")
    proc = RelayProcess(config, redis_server.url, "serve", "--processes", "2")
    try:
        asyncio.run(_members_up(public, proc, 2))
        config.write_text(config.read_text() + "\n[health]\nmax_pending_age = 123\n")
        proc.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while len(re.findall(r'"config_reloaded"', proc.output())) < 2:
            assert time.monotonic() < deadline, proc.output()[-3000:]
            time.sleep(0.1)
        reloaded = {line["proc"] for line in _log(proc) if line.get("event") == "config_reloaded"}
        assert reloaded == {0, 1}
    finally:
        proc.stop()


@pytest.mark.parametrize("value", ["65", "-1", "many", "2.5"])
def test_a_bad_processes_value_is_a_usage_error(tmp_path: Path, redis_server: RedisServer, value: str) -> None:
    config = write_config(tmp_path / "relay.toml")
    env = {**os.environ, **TEST_ENV, "REDIS_URL": redis_server.url}
    run = subprocess.run(
        [sys.executable, "-m", "relay", "--config", str(config), "serve", "--processes", value],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and "--processes" in run.stderr and repr(value) in run.stderr, run.stderr


def test_a_bad_processes_key_is_a_configuration_error(tmp_path: Path, redis_server: RedisServer) -> None:
    config = write_config(tmp_path / "relay.toml", extra="[server]\nprocesses = 65\n")
    env = {**os.environ, **TEST_ENV, "REDIS_URL": redis_server.url}
    run = subprocess.run(
        [sys.executable, "-m", "relay", "--config", str(config), "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and "server.processes = 65" in run.stderr, run.stderr


def test_a_port_in_use_stops_the_supervisor_in_one_line_exit_3(tmp_path: Path, redis_server: RedisServer) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "relay.toml", extra=f"[server]\nport = {port}\n")
        env = {**os.environ, **TEST_ENV, "REDIS_URL": redis_server.url}
        run = subprocess.run(
            [sys.executable, "-m", "relay", "--config", str(config), "serve", "--processes", "2"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    lines = [line for line in run.stderr.splitlines() if line.startswith("relay:")]
    assert run.returncode == 3, run.stderr
    assert len(lines) == 1 and str(port) in lines[0] and "address already in use" in lines[0], run.stderr
    assert "Traceback" not in run.stderr


async def test_a_second_group_on_the_same_port_is_refused(tmp_path: Path, redis_server: RedisServer) -> None:
    # SO_REUSEPORT alone would let a second `relay serve --processes` join the first one's port
    public = free_port()
    config = write_config(tmp_path / "relay.toml", extra=f"[server]\nport = {public}\n")
    first = RelayProcess(config, redis_server.url, "serve", "--processes", "2")
    try:
        await _members_up(public, first, 2)
        env = {**os.environ, **TEST_ENV, "REDIS_URL": redis_server.url}
        run = subprocess.run(
            [sys.executable, "-m", "relay", "--config", str(config), "serve", "--processes", "2"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 3 and "address already in use" in run.stderr, run.stderr
    finally:
        first.stop()


async def test_one_process_is_todays_relay_serve(tmp_path: Path, redis_server: RedisServer) -> None:
    # --processes 1 overrides the key: no supervisor, no member fields, the one process serves
    public = free_port()
    config = write_config(tmp_path / "relay.toml", extra=f"[server]\nport = {public}\nprocesses = 2\n")
    proc = RelayProcess(config, redis_server.url, "serve", "--processes", "1")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = (await _healthz(public))[0]
                break
            except aiohttp.ClientError:
                assert time.monotonic() < deadline and proc.proc.poll() is None, proc.output()[-3000:]
                await asyncio.sleep(0.1)
        assert answer == {"status": "ok", "redis": "ok"}
        assert not any("proc" in line or "serve_processes_started" == line.get("event") for line in _log(proc))
    finally:
        proc.stop()
    assert proc.proc.returncode == 0, proc.output()[-3000:]


async def test_a_member_that_cannot_start_again_backs_off(tmp_path: Path, redis_server: RedisServer) -> None:
    # the config was broken after the start: a replacement member stops at once (exit 2), and each
    # try waits twice as long as the one before, while member 0 keeps the port answering
    public = free_port()
    config = write_config(tmp_path / "relay.toml", extra=f"[server]\nport = {public}\n")
    proc = RelayProcess(config, redis_server.url, "serve", "--processes", "2")
    try:
        pids = await _members_up(public, proc, 2)
        config.write_text(config.read_text() + "\n[server]\nport = 1\n")  # a duplicate table: invalid TOML
        os.kill(pids[1], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while len([line for line in _log(proc) if line.get("event") == "serve_process_died"]) < 3:
            assert time.monotonic() < deadline and proc.proc.poll() is None, proc.output()[-3000:]
            await asyncio.sleep(0.1)
        died = [line for line in _log(proc) if line.get("event") == "serve_process_died"][:3]
        assert [d["proc"] for d in died] == [1, 1, 1]
        assert [d["exit"] for d in died] == ["signal SIGKILL", "exit code 2", "exit code 2"]
        assert [d["restart_in_s"] for d in died] == [0.5, 1.0, 2.0]
        for a in await _healthz(public, 5):
            assert a["process"] == 0
    finally:
        proc.stop()
    assert proc.proc.returncode == 0, proc.output()[-3000:]


async def test_a_sighup_while_a_member_starts_does_not_kill_it(
    tmp_path: Path, redis_server: RedisServer, redis: Redis
) -> None:
    # a replacement member takes a second or two to start; a SIGHUP passed on meanwhile, before it
    # handles the signal, killed it (SIGHUP's default action) instead of reloading it
    public = free_port()
    config = write_config(tmp_path / "relay.toml", extra=f"[server]\nport = {public}\n")
    proc = RelayProcess(config, redis_server.url, "serve", "--processes", "2")
    try:
        pids = await _members_up(public, proc, 2)
        os.kill(pids[1], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while '"serve_process_restarted"' not in proc.output():
            assert time.monotonic() < deadline, proc.output()[-3000:]
            await asyncio.sleep(0.01)
        config.write_text(config.read_text() + "\n[health]\nmax_pending_age = 123\n")
        proc.proc.send_signal(signal.SIGHUP)
        now = await _members_up(public, proc, 2)
        assert now[1] != pids[1]
        died = [line for line in _log(proc) if line.get("event") == "serve_process_died"]
        assert [d["exit"] for d in died] == ["signal SIGKILL"], proc.output()[-3000:]
        # it may have read the config before the change: the SIGHUP is passed on once it listens (its
        # audit entry says "unchanged" when it had read the new one already)
        deadline = time.monotonic() + 20
        while True:
            reloads = await audit.read(redis, action="reload")
            by = {str(e.get("address")) for e in reloads}
            if any(name.endswith(f":{now[1]}") for name in by) and any(name.endswith(f":{now[0]}") for name in by):
                break
            assert time.monotonic() < deadline, (reloads, proc.output()[-3000:])
            await asyncio.sleep(0.1)
    finally:
        proc.stop()
    assert proc.proc.returncode == 0, proc.output()[-3000:]

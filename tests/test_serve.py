"""`relay serve` as a real process: the admin surface is on its own loopback listener."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from tests.procs import RelayProcess
from tests.support import RedisServer, free_port, ipn_fields, signed_body, wait_for, write_config

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def _up(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} did not come up")


async def test_public_and_admin_listeners_are_apart(
    tmp_path: Path, redis_server: RedisServer, redis: Redis, sink: Callable[..., Any]
) -> None:
    public, admin = free_port(), free_port()
    config = write_config(tmp_path / "relay.toml", admin={"port": admin}, extra=f"[server]\nport = {public}\n")
    proc = RelayProcess(config, redis_server.url, "serve", env={"RELAY_ADMIN_TOKEN": "t0ken"})
    try:
        await _up(f"http://127.0.0.1:{public}/healthz")
        await _up(f"http://127.0.0.1:{admin}/healthz")
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"http://127.0.0.1:{public}/ipn", data=signed_body(ipn_fields()), headers=FORM
            ) as resp:
                assert resp.status == 200 and (await resp.text()).startswith("<sig")
            for path in ("/api/notifications", "/dashboard/", "/api/openapi.json"):
                async with http.get(f"http://127.0.0.1:{public}{path}") as resp:
                    assert resp.status == 404, path  # the public listener never serves the admin surface
            async with http.get(f"http://127.0.0.1:{admin}/api/notifications") as resp:
                assert resp.status == 401
            async with http.get(
                f"http://127.0.0.1:{admin}/api/notifications", headers={"Authorization": "Bearer t0ken"}
            ) as resp:
                assert resp.status == 200 and len((await resp.json())["items"]) == 1
            async with http.post(f"http://127.0.0.1:{admin}/ipn", data=b"x=1", headers=FORM) as resp:
                assert resp.status == 404  # and the admin listener takes no notifications
            async with http.get(f"http://127.0.0.1:{public}/metrics") as resp:
                assert resp.status == 404  # [server] public_metrics is off by default
            async with http.get(f"http://127.0.0.1:{admin}/metrics") as resp:
                assert "relay_notifications_accepted_total" in await resp.text()
    finally:
        proc.stop()
    assert proc.proc.returncode == 0, proc.output()[-2000:]


async def test_a_shutdown_step_that_waits_says_which(tmp_path: Path) -> None:
    """A member once never ended after SIGTERM (its supervisor killed it) and said nothing of what it
    waited for. Each shutdown step that takes over a second says so while it waits. Here Redis is
    frozen (SIGSTOP), so the reloader's deregistering waits for its socket timeout, then gives up:
    the process still stops, and says how long it took."""
    server = RedisServer().start()
    port = free_port()
    config = write_config(tmp_path / "relay.toml", extra=f"[server]\nport = {port}\nredis_timeout = 3\n")
    proc = RelayProcess(config, server.url, "serve")
    try:
        await _up(f"http://127.0.0.1:{port}/healthz")
        assert server.proc is not None
        server.proc.send_signal(signal.SIGSTOP)
        proc.proc.send_signal(signal.SIGTERM)
        await wait_for(lambda: '"shutdown_waiting"' in proc.output(), 20, what=proc.output()[-3000:])
        code = await asyncio.to_thread(proc.proc.wait, 30)
        assert code == 0, proc.output()[-3000:]
    finally:
        if server.proc is not None:
            server.proc.send_signal(signal.SIGCONT)
        proc.stop()
        server.cleanup()
    lines = [json.loads(line) for line in proc.output().splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert events.index("serve_stopping") < events.index("shutdown_waiting") < events.index("serve_stopped")
    # the reloader's deregistering always waits on the frozen Redis; the alert watcher does too when one
    # of its checks was under way as Redis froze (it checks at start-up, then every check_seconds): a
    # race with the freeze, not a step that should not wait
    steps = {line["step"] for line in lines if line["event"] == "shutdown_waiting"}
    assert "reloader" in steps and steps <= {"reloader", "alert_watcher"}, lines[-10:]

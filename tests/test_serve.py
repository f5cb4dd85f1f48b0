"""`relay serve` as a real process: the admin surface is on its own loopback listener."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from tests.procs import RelayProcess
from tests.support import RedisServer, free_port, ipn_fields, signed_body, write_config

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

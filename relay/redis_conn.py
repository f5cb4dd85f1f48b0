"""Connecting to Redis: ``REDIS_URL`` when set, else an embedded ``redis-server`` with AOF on."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from pathlib import Path

import structlog
from redis.asyncio import Redis

from config.settings import Settings

logger = structlog.get_logger()


class RedisUnavailable(Exception):
    pass


def embedded_url(settings: Settings) -> str:
    return f"redis://127.0.0.1:{settings.file.redis.port}/0"


def redis_url(settings: Settings) -> str:
    return settings.redis_url or embedded_url(settings)


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_embedded(settings: Settings) -> subprocess.Popen[bytes] | None:
    """Start the embedded redis-server unless one already answers on its port.

    Returns the process this call started (the caller stops it), or None if one was already
    running (for example started by the ``web`` process of the same Procfile).
    """
    cfg = settings.file.redis
    if _ping(cfg.port):
        return None
    exe = shutil.which("redis-server")
    if exe is None:
        raise RedisUnavailable(
            "REDIS_URL is not set and no redis-server is on PATH: install one "
            "(apt-get install redis-server, brew install redis) or set REDIS_URL"
        )
    data = Path(cfg.data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [exe, "--port", str(cfg.port), "--bind", "127.0.0.1", "--dir", str(data),
         # ack_after = "fsync" on a Redis without WAITAOF is honoured by fsyncing every write
         "--appendonly", "yes", "--appendfsync", "always" if settings.server.ack_after == "fsync" else "everysec",
         "--save", "",
         "--logfile", str(data / "redis.log"), "--protected-mode", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _ping(cfg.port):
            logger.info("embedded_redis_started", port=cfg.port, data_dir=str(data), pid=proc.pid)
            return proc
        if proc.poll() is not None:
            # lost a start race with another process of ours: use the winner's server
            if _ping(cfg.port):
                return None
            raise RedisUnavailable(f"embedded redis-server exited; see {data / 'redis.log'}")
        time.sleep(0.05)
    proc.terminate()
    raise RedisUnavailable(f"embedded redis-server did not answer on port {cfg.port} within 10 s")


def stop_embedded(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()  # SIGTERM: redis-server flushes the AOF before exiting
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def connect(url: str, *, timeout: float = 2.0) -> Redis:
    redis: Redis = Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        max_connections=512,
    )
    return redis


async def wait_ready(redis: Redis, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await redis.ping()
            return
        except Exception as exc:  # any connection error: keep trying until the deadline
            if asyncio.get_running_loop().time() > deadline:
                raise RedisUnavailable(f"Redis did not answer within {timeout:.0f} s: {exc}") from exc
            await asyncio.sleep(0.1)

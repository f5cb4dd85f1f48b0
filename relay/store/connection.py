"""Connecting to Redis: ``REDIS_URL`` when set, else an embedded ``redis-server`` with AOF on."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

import hiredis
import structlog
from arq.connections import RedisSettings
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import DataError, RedisError

from config.settings import ConfigError, Settings

logger = structlog.get_logger()


# what a lost or refusing Redis raises: redis-py's own errors, and socket errors it lets through
REDIS_ERRORS = (RedisError, OSError)


class RedisUnavailable(Exception):
    pass


class BadRedisURL(RedisUnavailable):
    """REDIS_URL cannot be a Redis address at all: a configuration error, not an outage."""


def check_url(url: str) -> None:
    """Raise BadRedisURL, in one line naming REDIS_URL, for a URL no client could use. Connects to nothing."""
    try:
        url.encode()
    except UnicodeEncodeError:  # bytes that are not UTF-8 reach Python as surrogates: the client would raise
        raise BadRedisURL(f"REDIS_URL {safe_url(url)!r} is not usable: it is not UTF-8") from None
    try:
        if parse_sentinel_url(url) is None:
            Redis.from_url(url)  # parses only: a client connects on its first command
            RedisSettings.from_dsn(url)
    except BadRedisURL:
        raise
    except (RedisUnavailable, ValueError) as exc:
        shown = str(exc).replace(url, safe_url(url))
        raise BadRedisURL(
            shown if "REDIS_URL" in shown else f"REDIS_URL {safe_url(url)!r} is not usable: {shown}"
        ) from None


def safe_url(url: str) -> str:
    """A Redis URL fit for logs and output: any password, in the user part or a ``password=`` query
    parameter (unix sockets), shows as ``***``; the username and every host (sentinels) stay."""
    # a URL without its scheme (REDIS_URL=host:port, user:password@host) is shown as typed, its password
    # hidden: split as it is, "user" would be read as the scheme and the password as the path
    schemeless = "://" not in url
    try:
        parts = urlsplit("//" + url if schemeless else url)
    except ValueError:  # brackets left open or holding no IPv6 address: check_url names the URL it refuses
        parts = _split_by_hand(url, schemeless)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    netloc = f"{user}{':***' if colon else ''}{at}{hosts}"
    query = "&".join(
        f"{name}=***" if name.lower() == "password" else f"{name}{eq}{value}"
        for name, eq, value in (p.partition("=") for p in parts.query.split("&") if p)
    )
    # by hand, not urlunsplit: that drops the empty host of unix:///path
    scheme = "" if schemeless else f"{parts.scheme}://"
    return f"{scheme}{netloc}{parts.path}{'?' if query else ''}{query}"


def _split_by_hand(url: str, schemeless: bool) -> SplitResult:
    """What urlsplit would make of a URL it refuses: the host part ends at the first '/' or '?'."""
    scheme, _, rest = ("", "", url) if schemeless else url.partition("://")
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    path, _, query = rest[end:].partition("?")
    return SplitResult(scheme, rest[:end], path, query, "")


def embedded_url(settings: Settings) -> str:
    return f"redis://127.0.0.1:{settings.redis.port}/0"


def redis_url(settings: Settings) -> str:
    return settings.redis_url or embedded_url(settings)


def answers_ping(port: int) -> bool:
    """Whether a Redis (or Sentinel) on this loopback port answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def wait_for_ping(port: int, timeout: float = 10.0) -> bool:
    """Poll ``answers_ping`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers_ping(port):
            return True
        time.sleep(0.02)
    return False


def _data_dir(port: int) -> str | None:
    """The data directory of the redis-server on ``port`` (None if it will not say)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$3\r\ndir\r\n")
            reply = s.recv(4096).decode(errors="replace").split("\r\n")
    except OSError:
        return None
    # *2 / $3 / dir / $N / <path>
    return reply[4] if len(reply) > 4 and reply[0] == "*2" else None


def start_embedded(settings: Settings) -> subprocess.Popen[bytes] | None:
    """Start the embedded redis-server unless one already answers on its port.

    Returns the process this call started (the caller stops it), or None if one was already
    running (for example started by the ``web`` process of the same Procfile).
    """
    cfg = settings.redis
    data = Path(cfg.data_dir).resolve()
    if _ours_running(cfg.port, data):
        return None
    exe = shutil.which("redis-server")
    if exe is None:
        raise RedisUnavailable(
            "REDIS_URL is not set and no redis-server is on PATH: install one "
            "(apt-get install redis-server, brew install redis) or set REDIS_URL"
        )
    try:
        data.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"[redis] data_dir {cfg.data_dir!r}: cannot create {data} ({exc.strerror}): set it to a directory "
            "this user can write, or set REDIS_URL"
        ) from None
    proc = subprocess.Popen(
        _embedded_command(exe, settings, data),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return _started(proc, cfg.port, data)


def _ours_running(port: int, data: Path) -> bool:
    """Whether a redis-server keeping its data in ``data`` answers on ``port`` already; one keeping it
    elsewhere (another checkout's embedded Redis) is not ours to use."""
    if not answers_ping(port):
        return False
    running = _data_dir(port)
    if running is not None and Path(running).resolve() != data:
        raise RedisUnavailable(
            f"port {port} already has a redis-server keeping its data in {running}, not in {data} "
            "(another checkout's embedded Redis?): stop it, or set [redis] port / REDIS_URL"
        )
    return True


def _embedded_command(exe: str, settings: Settings, data: Path) -> list[str]:
    return [
        exe,
        "--port",
        str(settings.redis.port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data),
        # ack_after = "fsync" on a Redis without WAITAOF is honoured by fsyncing every write
        "--appendonly",
        "yes",
        "--appendfsync",
        "always" if settings.server.ack_after == "fsync" else "everysec",
        "--save",
        "",
        "--logfile",
        str(data / "redis.log"),
        "--protected-mode",
        "yes",
    ]


def _started(proc: subprocess.Popen[bytes], port: int, data: Path) -> subprocess.Popen[bytes] | None:
    """``proc`` once it answers (None: another process of ours won the race to start one)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if answers_ping(port):
            logger.info("embedded_redis_started", port=port, data_dir=str(data), pid=proc.pid)
            return proc
        if proc.poll() is not None:
            # lost a start race with another process of ours: use the winner's server
            if answers_ping(port):
                return None
            raise RedisUnavailable(f"embedded redis-server exited; see {data / 'redis.log'}")
        time.sleep(0.05)
    proc.terminate()
    raise RedisUnavailable(f"embedded redis-server did not answer on port {port} within 10 s")


def stop_embedded(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()  # SIGTERM: redis-server flushes the AOF before exiting
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@dataclass(frozen=True)
class SentinelTarget:
    """``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]``"""

    sentinels: list[tuple[str, int]]
    service: str
    db: int
    username: str | None
    password: str | None


def parse_sentinel_url(url: str) -> SentinelTarget | None:
    if not url.startswith("redis+sentinel://"):
        return None
    rest = url.removeprefix("redis+sentinel://")
    userinfo, _, rest = rest.rpartition("@")
    hosts, _, path = rest.partition("/")
    username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
    parts = [p for p in path.split("/") if p]
    if not hosts or not parts:
        raise RedisUnavailable(
            f"REDIS_URL {url.split('@')[-1]!r}: expected redis+sentinel://host:port[,...]/service[/db]"
        )
    sentinels = []
    for hp in hosts.split(","):
        host, sep, port = hp.rpartition(":")
        if not sep:
            host, port = hp, "26379"
        try:
            sentinels.append((unquote(host), int(port)))
        except ValueError:
            raise RedisUnavailable(f"REDIS_URL: bad sentinel address {hp!r}") from None
    try:
        db = int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise RedisUnavailable(f"REDIS_URL: bad database number {parts[1]!r}") from None
    return SentinelTarget(sentinels, unquote(parts[0]), db, unquote(username) or None, unquote(password) or None)


def connect(url: str, *, timeout: float = 2.0) -> Redis:
    """A client for ``url``; with a sentinel URL, one that follows the current primary on failover."""
    check_url(url)
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 30,
        "max_connections": 512,
    }
    target = parse_sentinel_url(url)
    if target is not None:
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            target.sentinels, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        primary: Redis = sentinel.master_for(
            target.service, db=target.db, username=target.username, password=target.password, **options
        )
        return hiredis_packing(primary)
    redis: Redis = Redis.from_url(url, **options)
    return hiredis_packing(redis)


class _HiredisPacking(AbstractConnection):
    """Commands packed by hiredis (C) instead of redis-py's asyncio connection (Python).

    redis-py's sync client packs with hiredis when it is installed; its asyncio client does not, and
    packing was 8 % of a worker's CPU and 8 % of the ingress's (bench.profile at 0f1fdfb): the step and
    ingest script calls carry 50-300 arguments each. Same bytes on the wire (floats as repr, str as
    UTF-8), and the same DataError for a value Redis cannot take (None, bool).
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        # as redis-py does: a command name with spaces ("CONFIG GET") is several arguments
        if isinstance(args[0], str):
            args = tuple(args[0].encode().split()) + args[1:]
        elif b" " in args[0]:
            args = tuple(args[0].split()) + args[1:]
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:
            raise DataError(f"{exc} (in a {args[0]!r} command)") from None


_PACKING: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def hiredis_packing(redis: Redis) -> Redis:
    """Make ``redis``'s connections (plain, TLS, unix socket or sentinel-managed) pack with hiredis.

    The pool creates its connections lazily from ``connection_class``, so swapping the class for a
    subclass with the packing mixed in covers every connection the client will open."""
    pool = redis.connection_pool
    base = pool.connection_class
    if not issubclass(base, _HiredisPacking):
        if base not in _PACKING:
            _PACKING[base] = type(f"Hiredis{base.__name__}", (_HiredisPacking, base), {})
        pool.connection_class = _PACKING[base]
    return redis


def arq_settings(url: str) -> RedisSettings:
    target = parse_sentinel_url(url)
    if target is None:
        return RedisSettings.from_dsn(url)
    return RedisSettings(
        host=target.sentinels,
        sentinel=True,
        sentinel_master=target.service,
        database=target.db,
        username=target.username,
        password=target.password,
    )


async def clock_ms(redis: Redis) -> int:
    """Redis's clock (TIME), in ms: the one heartbeats, queue scores and leases are written on, so the
    one to measure their ages by, whatever this machine's clock says. This machine's clock when Redis
    does not answer (the caller then reports Redis unreachable anyway)."""
    try:
        sec, usec = await redis.time()
    except REDIS_ERRORS:
        return int(time.time() * 1000)
    return int(sec) * 1000 + int(usec) // 1000

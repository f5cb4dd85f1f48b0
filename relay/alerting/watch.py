"""The ingress-side alerts: what ``relay serve`` sends because no worker can.

Every ``relay serve`` process checks every ``[alerts] check_seconds``:

- **Redis.** A check (Redis's TIME, then the lease's SET: a write) that fails at two checks in a
  row is ``redis_unreachable``; a full Redis that refuses writes is one too. Redis cannot hold
  the rate limit then, so a small file per host and Redis URL does (in the temp directory, under a
  lock): whichever process sees it first sends the alert, at most once per ``frequency_hours`` per
  host, and the first to reach Redis again sends ``redis_recovered``. A ``relay worker`` shares this
  (``RedisOutage``): each failed restart of its lost connection is a check (workers/main.py).
- **Workers.** One process at a time (a lease in Redis, ``relay:alert:lease:ingress``) evaluates
  ``no_worker``; seen at two checks in a row (so a worker's restart is not an incident) it is sent
  through relay/alerting/incidents.py like every other kind, and ``worker_recovered`` when one is
  back. After Redis was unreachable, the workers get ``RECONNECT_GRACE_S`` to connect again first.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from redis.asyncio import Redis

from config.settings import Settings
from relay import constants as k
from relay import tasks
from relay.alerting import texts
from relay.alerting.incidents import INGRESS_KINDS, NO_WORKER_SUBJECT, evaluate
from relay.alerting.send import Notice, notify
from relay.store.connection import REDIS_ERRORS, redis_url, safe_url
from relay.store.problems import WORKER_ALIVE_MS
from relay.timefmt import iso_seconds

logger = structlog.get_logger()

# a problem seen at this many checks in a row is an incident
CONFIRM_CHECKS = 2
# after an outage of Redis, how long workers are given to connect again before no_worker is counted:
# relay worker restarts with a backoff capped at 30 s (workers/main.py), each try with ARQ's connection
# retries (5, 1 s apart), then beats; until then "no worker is alive, start relay worker" is wrong advice
RECONNECT_GRACE_S = 45.0


class HostMark:
    """The host's record of a Redis outage: ``{"since": s, "sent": s}`` in a file, under flock.

    The directory is this user's own (created 0700, refused if another user owns it or it is a link).
    Where no such file can be kept (a read-only or foreign temp directory), the record is this
    process's alone: the alert is then once per frequency per process, never lost."""

    def __init__(self, url: str) -> None:
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        self.path = Path(tempfile.gettempdir()) / f"relay-alerts-{os.getuid()}" / f"redis-{digest}.json"
        self._memory: dict[str, Any] = {}

    def _own_directory(self) -> bool:
        directory = self.path.parent
        directory.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(directory)
        return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o022

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        try:
            if not self._own_directory():
                raise PermissionError(f"{self.path.parent} is not this user's own directory")
            lock = open(self.path.with_suffix(".lock"), "a+")  # held across the yield below
        except OSError as exc:
            logger.warning("alert_host_record_unavailable", path=str(self.path.parent), error=str(exc))
            yield self._memory
            return
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                doc: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {}
            except (ValueError, OSError):
                doc = {}
            yield doc
            try:
                if doc:
                    tmp = self.path.with_suffix(".tmp")
                    tmp.write_text(json.dumps(doc))
                    tmp.replace(self.path)
                else:
                    self.path.unlink(missing_ok=True)
            except OSError as exc:  # the alert is decided; only the host-wide record is lost
                logger.warning("alert_host_record_unavailable", path=str(self.path), error=str(exc))

    def claim(self, now_s: float, since_s: float, every_s: float) -> float | None:
        """The outage's start if an alert is due from this host now (and record it as sent), else None."""
        with self._locked() as doc:
            doc.setdefault("since", since_s)
            if doc.get("sent") is not None and now_s - float(doc["sent"]) < every_s:
                return None
            doc["sent"] = now_s
            return float(doc["since"])

    def end(self) -> float | None:
        """The outage's start if an alert was sent about it (a recovery is owed); the record is removed."""
        if not self.path.exists() and not self._memory:  # the usual case, checked without the lock
            return None
        with self._locked() as doc:
            since = float(doc["since"]) if doc.get("sent") is not None else None
            doc.clear()
            return since


class RedisOutage:
    """One process's view of Redis's reachability, and the host's alert about it (``HostMark``):
    seen down at CONFIRM_CHECKS checks in a row, the alert is due unless another process on this host
    sent it less than ``frequency_hours`` ago; reachable again, the recovery is due if one was sent."""

    def __init__(self, url: str) -> None:
        self.mark = HostMark(url)
        self.checks = 0
        self.since: float | None = None

    def down(self, settings: Settings, error: str) -> list[Notice]:
        now = time.time()
        self.checks += 1
        self.since = self.since or now
        if self.checks < CONFIRM_CHECKS:
            return []
        since = self.mark.claim(now, self.since, settings.alerts.frequency_hours * 3600)
        if since is None:
            return []
        url = safe_url(redis_url(settings))
        since_ms, now_ms = int(since * 1000), int(now * 1000)
        return [
            Notice(
                "redis_unreachable",
                "",
                since_ms,
                now_ms,
                texts.redis_text(error, url, iso_seconds(since_ms)),
                {"error": error, "redis": url},
                None,
                "Redis is unreachable",
            )
        ]

    def up(self, settings: Settings, now_ms: int) -> list[Notice]:
        self.checks, self.since = 0, None
        since = self.mark.end()
        if since is None:
            return []
        since_ms = int(since * 1000)
        url = safe_url(redis_url(settings))
        return [
            Notice(
                "redis_recovered",
                "",
                since_ms,
                now_ms,
                texts.recovered_text(f"Redis at {url}", since_ms, now_ms, "It answers again."),
                {"redis": url, "duration_s": (now_ms - since_ms) // 1000},
                None,
                "Redis recovered",
            )
        ]


class Watcher:
    def __init__(self, redis: Redis, settings: Callable[[], Settings], name: str | None = None) -> None:
        self.redis = redis
        self.settings = settings  # the live settings: a reload applies at the next check
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.outage = RedisOutage(redis_url(settings()))
        self.no_worker_checks = 0
        self.reconnect_until = 0.0  # monotonic: no_worker is not counted before it (RECONNECT_GRACE_S)
        self._task: asyncio.Task[None] | None = None
        self.stopping = False

    def start(self) -> None:
        self.stopping = False
        self._task = asyncio.create_task(self._run(), name="alert-watcher")

    async def stop(self) -> None:
        # the check talks to Redis: a cancel landing as a socket timeout expires reaches the loop as a
        # Redis error and is lost (relay/tasks.py); ``stopping`` ends the loop at its next turn anyway
        self.stopping = True
        await tasks.stop(self._task)
        self._task = None

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while not self.stopping:
                try:
                    await self.check(session)
                except REDIS_ERRORS as exc:  # Redis went away half-way: the next check sees it
                    logger.debug("alert_check_interrupted", error=type(exc).__name__)
                except Exception:  # a bug must not stop the checks for good
                    logger.exception("alert_check_failed")
                await asyncio.sleep(self.settings().alerts.check_seconds)

    async def check(self, session: aiohttp.ClientSession) -> list[Notice]:
        """One check: Redis, then (by the lease holder) the workers. Returns what it sent."""
        settings = self.settings()
        try:
            sec, usec = await self.redis.time()  # Redis's clock, the one heartbeats are written on
            now_ms = int(sec) * 1000 + int(usec) // 1000
            # the lease is a write, so Redis is "up" only if it takes writes: a full Redis (maxmemory
            # with noeviction) answers reads and refuses every write, as the ingress and the workers
            # see it; read as up, this process ended the host's outage record at every check, and a
            # worker restarting against it sent redis_unreachable again each second
            leased = await self._lease(settings)
        except REDIS_ERRORS as exc:
            notices = await asyncio.to_thread(self.outage.down, settings, f"{type(exc).__name__}: {exc}")
            await notify(notices, settings, session)
            return notices
        if self.outage.checks:  # Redis is back: the workers reconnect on their own backoff
            self.reconnect_until = time.monotonic() + RECONNECT_GRACE_S
        notices = await asyncio.to_thread(self.outage.up, settings, now_ms)
        if leased:
            alive = await self.redis.zcount(k.WORKERS, now_ms - WORKER_ALIVE_MS, "+inf")
            reconnecting = not alive and time.monotonic() < self.reconnect_until
            self.no_worker_checks = 0 if alive or reconnecting else self.no_worker_checks + 1
            # the full evaluation only when it can send something: no worker at two checks in a row
            # (seen once: wait for the next check), or a worker back while an incident owes its
            # recovery; with workers alive it would run health (health.lua and all) every check for nothing
            if self.no_worker_checks >= CONFIRM_CHECKS or (
                alive and await self.redis.exists(k.alert_open(NO_WORKER_SUBJECT))
            ):
                notices += await evaluate(self.redis, settings, now_ms, INGRESS_KINDS)
        await notify(notices, settings, session)
        return notices

    async def _lease(self, settings: Settings) -> bool:
        ttl = max(1000, round(settings.alerts.check_seconds * 3000))
        if await self.redis.set(k.ALERT_INGRESS_LEASE, self.name, nx=True, px=ttl):
            return True
        holder = await self.redis.get(k.ALERT_INGRESS_LEASE)
        if holder is not None and holder.decode() == self.name:
            await self.redis.pexpire(k.ALERT_INGRESS_LEASE, ttl)
            return True
        self.no_worker_checks = 0  # another process watches; start afresh if the lease comes here
        return False

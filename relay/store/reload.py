"""Reloading the configuration in running processes, and knowing which config each one runs.

Every ``relay serve`` and ``relay worker`` process runs a ``Reloader``:

- SIGHUP, or a request on the pub/sub channel ``relay:reload``, makes it re-read its config file. A
  file that fails validation is refused and the old config stays in force; the error is logged and
  sent back. What changes is applied by the process (``apply``: new lanes, a new app config, ...).
- Every ``REPORT_S`` seconds it writes its name, role and config hash to the hash ``relay:procs``, so
  ``relay health`` and the dashboard can show processes that run different configs.

``request_reload`` (``relay reload``, ``POST /api/reload``) publishes a request: PUBLISH returns how
many processes received it, and each one answers on the list ``relay:reload:{id}`` with its outcome
and config hash. The requester waits a few seconds for that many answers, and for one from every live
process: a process that was not subscribed catches up from ``relay:reload:last`` (``Reloader._catch_up``).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from redis.asyncio import Redis

from config.diff import changed_keys
from config.fingerprint import config_hash
from config.settings import ConfigError, Settings, load_settings
from relay import constants as k
from relay import tasks
from relay.store import audit
from relay.store.connection import REDIS_ERRORS, clock_ms

logger = structlog.get_logger()

REPORT_S = 5.0
# an entry not refreshed for a day belongs to a process that died without deregistering
PROC_FORGET_MS = 24 * 3600 * 1000
ANSWER_TTL_S = 60
# how long the latest request is kept for a process that missed it (k.RELOAD_LAST); one key
RELOAD_LAST_TTL_MS = 24 * 3600 * 1000
DEFAULT_WAIT_S = 5.0
POLL_S = 0.05

Apply = Callable[[Settings, Settings], Awaitable[dict[str, Any]]]
Load = Callable[[Path], Settings]


def process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Reloader:
    """One process's side: reload on request or SIGHUP, answer, and report the config hash."""

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        *,
        role: str,
        apply: Apply,
        name: str | None = None,
        load: Load = load_settings,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.hash = config_hash(settings.file)
        self.role = role
        self.name = name or process_name()
        self._apply = apply
        # how the process loaded its settings at start (the environment it resolves secrets from)
        self._load = load
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        # the last reload request this process saw (k.RELOAD_LAST), and whether it ever subscribed
        self._seen: str | None = None
        self._subscribed = False
        self._listening = False  # subscribed now (the reconnection backoff starts afresh once it was)

    async def reload(self, origin: audit.Origin) -> dict[str, Any]:
        """Re-read the config file; apply it if it is valid. One reload at a time."""
        async with self._lock:
            answer: dict[str, Any] = {"process": self.name, "role": self.role, "previous_hash": self.hash}
            try:
                # the file is small; parsing it in the loop is quicker than a thread hop
                new = self._load(self.settings.config_path)
            except ConfigError as exc:
                logger.error("config_reload_refused", origin=origin.label(), error=str(exc))
                return {**answer, "outcome": "refused", "hash": self.hash, "error": str(exc)}
            new_hash = config_hash(new.file)
            changed = changed_keys(self.settings.file, new.file)
            if new == self.settings:
                return {**answer, "outcome": "unchanged", "hash": self.hash}
            try:
                changes = await self._apply(self.settings, new)
            except Exception as exc:  # the old config stays in force; the requester hears why
                logger.exception("config_reload_failed", origin=origin.label())
                return {**answer, "outcome": "refused", "hash": self.hash, "error": f"{type(exc).__name__}: {exc}"}
            # applied: the new config runs, whatever is left to finish (``incomplete``: the process says
            # what and retries it), so its hash is what this process reports from now on
            self.settings, self.hash = new, new_hash
            logger.info("config_reloaded", origin=origin.label(), hash=new_hash, **changes)
            await self._report()
            incomplete = {"error": changes["incomplete"]} if changes.get("incomplete") else {}
            return {
                **answer,
                "outcome": "reloaded",
                "hash": new_hash,
                "changes": changes,
                "changed": changed,
                **incomplete,
            }

    async def on_signal(self) -> None:
        """SIGHUP: reload, and write the audit entry here (no requester will)."""
        answer = await self.reload(audit.Origin("signal"))
        try:
            await audit.record(
                self.redis,
                audit.entry(
                    "reload",
                    audit.Origin("signal", self.name),
                    target="config",
                    count=1,
                    outcome=answer["outcome"],
                    hash=answer["hash"],
                    error=answer.get("error"),
                    changed=answer.get("changed") or None,
                ),
            )
        except REDIS_ERRORS:
            logger.warning("audit_not_recorded", action="reload")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="reloader")

    async def stop(self) -> None:
        # a cancel can be lost inside the Redis client when it lands as the reloader subscribes
        # (SIGTERM just after a start): relay/tasks.py asks again and never waits for ever
        await tasks.stop(self._task)
        self._task = None
        try:
            await self.redis.hdel(k.PROCS, self.name)  # type: ignore[misc]
        except REDIS_ERRORS:
            pass  # it ages out: readers ignore entries older than PROC_ALIVE_MS

    async def _report(self) -> None:
        # Redis's clock, which readers judge "alive" by: a machine minutes slow would look dead
        now_ms = await clock_ms(self.redis)
        doc = {"role": self.role, "hash": self.hash, "seen": now_ms}
        await self.redis.hset(k.PROCS, self.name, json.dumps(doc))  # type: ignore[misc]
        await _forget_dead(self.redis, now_ms)

    async def _run(self) -> None:
        """Listen for reload requests and report the hash, reconnecting after a Redis outage."""
        backoff = 0.5
        while True:
            try:
                await self._listen()
            except REDIS_ERRORS as exc:
                # a subscription that held starts the backoff afresh: each outage is a new one (it
                # doubled for the process's life, so after a few Redis restarts a process stayed deaf to
                # reload requests for 10 s after each)
                if self._listening:
                    self._listening, backoff = False, 0.5
                logger.warning("reload_channel_lost", error=type(exc).__name__, retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _listen(self) -> None:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(k.RELOAD_CHANNEL)
            await self._catch_up()
            self._listening = True
            next_report = 0.0
            while True:
                if time.monotonic() >= next_report:
                    await self._report()
                    next_report = time.monotonic() + REPORT_S
                message = await pubsub.get_message(timeout=REPORT_S)
                if message is None or message.get("type") != "message":
                    continue
                await self._answer(message["data"])
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _catch_up(self) -> None:
        """Once subscribed: a request published while this process was not (its start, or a new
        subscription after a Redis outage) did not reach it, so PUBLISH did not count it and the
        requester never heard of it; it ran its old config until the next reload (seen: a reload right
        after a Redis restart reached 1 of 3 processes, and `relay reload` exited 0). Reload if a request
        was made since the last one seen: on a new subscription also answer it (its requester may still
        be waiting), and at its first subscription too while a requester may wait (a worker's loop
        started again after a Redis outage has a new Reloader); else at start only re-read the file,
        which is ``unchanged`` unless it was edited and reloaded between this process reading it and
        subscribing."""
        raw = await self.redis.get(k.RELOAD_LAST)
        first, self._subscribed = not self._subscribed, True
        if raw is None or raw.decode(errors="replace") == self._seen:
            return
        if first and not await self._recent(raw):
            self._seen = raw.decode(errors="replace")
            await self.reload(audit.Origin("reload", self.name))
            return
        logger.info("reload_caught_up", process=self.name)
        await self._answer(raw)

    async def _recent(self, raw: bytes) -> bool:
        """Whether a request's requester may still wait for answers: a worker that restarts its loop after
        a Redis outage starts a new Reloader, which must answer the request it missed too. The request
        says how long its requester waits (``relay reload --wait 120``: past ANSWER_TTL_S)."""
        try:
            request = json.loads(raw)
            at, wait_ms = int(request["at"]), int(request.get("wait_ms", 0))
        except (ValueError, KeyError, TypeError, AttributeError):
            return False
        return await clock_ms(self.redis) - at < max(ANSWER_TTL_S * 1000, wait_ms)

    async def _answer(self, data: bytes) -> None:
        try:
            request = json.loads(data)
            request_id = str(request["id"])
            origin = audit.Origin(str(request.get("via", "cli")), request.get("address"))
        except (ValueError, KeyError, TypeError):
            logger.warning("reload_request_unreadable", data=data[:200])
            return
        if data.decode(errors="replace") == self._seen:
            return  # answered already: caught up as it subscribed, then the publish itself came
        self._seen = data.decode(errors="replace")
        answer = await self.reload(origin)
        key = k.reload_answers(request_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, json.dumps(answer))
            pipe.expire(key, ANSWER_TTL_S)
            await pipe.execute()


async def _forget_dead(redis: Redis, now_ms: int) -> None:
    """Drop entries not refreshed for ``PROC_FORGET_MS``: a SIGKILLed process never deregisters, and
    every restart is a new host:pid, so without this ``relay:procs`` grows for as long as the relay
    runs. The margin is far above any clock difference between machines, so a live one is never hit."""
    raw: dict[bytes, bytes] = await redis.hgetall(k.PROCS)  # type: ignore[misc]
    dead: list[str] = []
    for name, value in raw.items():
        try:
            seen = int(json.loads(value)["seen"])
        except (ValueError, KeyError, TypeError):
            seen = 0  # unreadable: nothing will ever read it either
        if now_ms - seen > PROC_FORGET_MS:
            dead.append(name.decode(errors="replace"))
    if dead:
        await redis.hdel(k.PROCS, *dead)  # type: ignore[misc]


async def live_processes(redis: Redis, now_ms: int) -> list[dict[str, Any]]:
    """Processes that reported their config hash in the last ``PROC_ALIVE_MS``, by name."""
    raw: dict[bytes, bytes] = await redis.hgetall(k.PROCS)  # type: ignore[misc]
    procs = []
    for name, value in raw.items():
        try:
            doc = json.loads(value)
            seen = int(doc["seen"])
        except (ValueError, KeyError, TypeError):
            continue
        if now_ms - seen <= k.PROC_ALIVE_MS:
            procs.append({"name": name.decode(), "role": doc.get("role"), "hash": doc.get("hash"), "seen": seen})
    return sorted(procs, key=lambda p: p["name"])


async def _collect(
    redis: Redis, request_id: str, expected: int, waiting: set[str], wait_s: float
) -> dict[str, dict[str, Any]]:
    """The answers to a request, by process, once ``expected`` came and every one of ``waiting``
    answered, or after ``wait_s``.

    By process: one may answer twice (a worker's loop started again within the wait catches up on a
    request its old reloader answered), and the list may expire and start again within a long wait
    (ANSWER_TTL_S after its last answer), so it is read whole each time, not from the last index. And a
    process that missed this request and a later one too (not subscribed for either: relay:reload:last
    keeps the latest only) catches up on the later one: that answer says it reloaded after this
    request was made, from the file as it is now, so it counts here (``for``: the later request's id)."""
    own: dict[str, dict[str, Any]] = {}
    later: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + wait_s
    # bounded by wait_s; a poll rather than BLPOP so the connection's socket timeout never fires first
    while (len(own) < expected or waiting - own.keys() - later.keys()) and time.monotonic() < deadline:
        await asyncio.sleep(POLL_S)
        if waiting - own.keys() - later.keys():
            # read before this request's own list: a process answers requests in order, so one that
            # answered both is seen in its own list too, and its own answer wins
            later.update(await _later_answers(redis, request_id))
        for item in await redis.lrange(k.reload_answers(request_id), 0, -1):  # type: ignore[misc]
            answer = json.loads(item)
            own.setdefault(answer["process"], answer)  # the first: the one that applied the request
    return {**later, **own}


async def _later_answers(redis: Redis, request_id: str) -> dict[str, dict[str, Any]]:
    raw = await redis.get(k.RELOAD_LAST)
    try:
        later_id = str(json.loads(raw)["id"]) if raw is not None else request_id
    except (ValueError, KeyError, TypeError):
        return {}
    if later_id == request_id:
        return {}
    found: dict[str, dict[str, Any]] = {}
    for item in await redis.lrange(k.reload_answers(later_id), 0, -1):  # type: ignore[misc]
        answer = json.loads(item)
        found.setdefault(answer["process"], {**answer, "for": later_id})
    return found


async def request_reload(redis: Redis, origin: audit.Origin, *, wait_s: float = DEFAULT_WAIT_S) -> dict[str, Any]:
    """Ask every live process to reload; wait up to ``wait_s`` for each answer. Audited."""
    request_id = uuid.uuid4().hex
    at = await clock_ms(redis)
    message = json.dumps(
        {"id": request_id, "via": origin.via, "address": origin.address, "at": at, "wait_ms": int(wait_s * 1000)}
    )
    # kept for a process not subscribed at this moment (reconnecting after a Redis outage, starting):
    # it compares this with the last request it saw once it subscribes, and reloads (Reloader._catch_up)
    await redis.set(k.RELOAD_LAST, message, px=RELOAD_LAST_TTL_MS)
    expected = int(await redis.publish(k.RELOAD_CHANNEL, message))
    # every live process is waited for, not only those PUBLISH reached: one that was not subscribed
    # (reconnecting after a Redis outage) catches up as it subscribes again and answers then
    live = await live_processes(redis, await clock_ms(redis))
    by_process = await _collect(redis, request_id, expected, {p["name"] for p in live}, wait_s)
    answers = list(by_process.values())
    answered = set(by_process)
    live = await live_processes(redis, await clock_ms(redis))
    silent = [p["name"] for p in live if p["name"] not in answered]
    refused = [a for a in answers if a["outcome"] == "refused"]
    # applied with something left undone: its error says what, and the process retries it
    incomplete = [a for a in answers if a["outcome"] == "reloaded" and a.get("error")]
    result = {
        "id": request_id,
        "asked": expected,
        "answered": len(answers),
        "answers": sorted(answers, key=lambda a: a["process"]),
        "silent": silent,
        # a live process that did not answer may run the old config: not ok (exit 1, 409), as documented
        "ok": not refused and not incomplete and len(answers) >= expected and not silent,
    }
    await audit.record(
        redis,
        audit.entry(
            "reload",
            origin,
            target="config",
            count=len(answers),
            refused=len(refused),
            hashes=sorted({a["hash"] for a in answers}),
            # what the reload changed, as every process that applied it saw it (the audit says what, not only who)
            changed=sorted({key for a in answers for key in a.get("changed", [])}) or None,
        ),
    )
    return result

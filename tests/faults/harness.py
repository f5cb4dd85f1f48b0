"""The fault suite's shared machinery: real relay processes, Redis, endpoints and load, on loopback only.

A scenario builds a :class:`Cluster` (one ``redis-server``, N ``relay serve`` and M ``relay worker``
processes), a set of recording :class:`Endpoint` apps and a :class:`LoadGenerator` that posts signed
IPNs the way 2Checkout does (it retries a 503 or a refused connection later; only a 200 with a valid
read receipt is an acknowledgement). It injects its faults, waits (bounded) for the relay to converge,
and ends with :func:`reconcile`: the acknowledged notifications against what every endpoint received
(by ``webhook-id``) and against the delivery states in Redis. Lost must be 0; duplicates are counted.

``RELAY_SOAK=1`` selects the long versions (``make soak``); ``RELAY_FAULTS_REPORT=<file>`` appends one
JSON line per scenario, from which ``python -m tests.faults.report <file>`` prints the table in
docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import struct
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from relay import constants as k
from relay import protocol
from relay.store.detail import attempt_record
from relay.store.ingest import notification_id
from tests.procs import RelayProcess
from tests.support import SECRET_KEY, RedisServer, free_port, ipn_fields, signed_body, wait_for, write_config

T = TypeVar("T")

SOAK = os.environ.get("RELAY_SOAK", "") not in ("", "0")
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
HOST = "127.0.0.1"  # every listener and every target of this suite is on loopback

#: filled by report(); tests/faults/conftest.py prints them at the end of the session
RESULTS: list[Summary] = []


def pick(ci: T, soak: T) -> T:
    """The CI value, or the soak value under ``RELAY_SOAK=1``."""
    return soak if SOAK else ci


# -- relay processes -----------------------------------------------------------------------------------


class Proc(RelayProcess):
    """A relay process of a fault scenario: tests.procs's harness, plus what a supervisor needs."""

    def __init__(self, config: Path, redis_url: str, *args: str, env: Mapping[str, str] | None = None) -> None:
        super().__init__(config, redis_url, *args, env=dict(env or {}))
        self.expected_exit = False

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (a crash, an OOM kill, a pulled plug)."""
        self.expected_exit = True
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)  # not waited for: the supervisor sees the exit

    def terminate(self) -> None:
        self.expected_exit = True
        if self.alive:
            self.proc.terminate()

    async def wait_exit(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.alive and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.alive:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait, 10)


@dataclass
class WorkerExit:
    """A worker process that exited without being asked to."""

    pid: int
    returncode: int | None
    tail: str


class Cluster:
    """One redis-server, the relay's ingress and worker processes, and a Redis client for checks."""

    def __init__(self, tmp: Path, *, appendfsync: str = "everysec", session: aiohttp.ClientSession) -> None:
        self.tmp = tmp
        self.redis_server = RedisServer(appendonly=True, extra=["--appendfsync", appendfsync])
        self.redis_server.port = free_port()
        self.config = tmp / "relay.toml"
        self.session = session
        self.redis: Redis = Redis.from_url(self.redis_server.url, socket_timeout=5, socket_connect_timeout=2)
        self.ingresses: list[tuple[Proc, int]] = []
        self.workers: list[Proc] = []
        self.worker_exits: list[WorkerExit] = []
        self.restarted_workers = 0
        self.endpoints: list[Endpoint] = []
        self._supervisor: asyncio.Task[None] | None = None
        self.host = socket.gethostname()

    # configuration and Redis

    def configure(
        self,
        endpoints: Sequence[Endpoint],
        *,
        server: Mapping[str, Any] | None = None,
        delivery: Mapping[str, Any] | None = None,
        level: str = "warning",
    ) -> None:
        lines = ["[server]"] + [
            f"{key} = {json.dumps(value)}" for key, value in {"redis_timeout": 0.5, **(server or {})}.items()
        ]
        lines += ["", "[logging]", f'level = "{level}"', 'format = "json"', ""]
        write_config(
            self.config,
            redis_port=self.redis_server.port,
            endpoints=[e.spec() for e in endpoints],
            extra="\n".join(lines),
            delivery={"poll_interval": 0.05, **(delivery or {})},
        )

    async def start_redis(self) -> None:
        await asyncio.to_thread(self.redis_server.start)

    async def stop_redis(self, sig: str = "term") -> None:
        await asyncio.to_thread(self.redis_server.stop, sig)

    @property
    def redis_url(self) -> str:
        return self.redis_server.url

    async def start_endpoints(self, endpoints: Sequence[Endpoint]) -> None:
        for ep in endpoints:
            await ep.start()
            self.endpoints.append(ep)

    async def start(
        self,
        endpoints: Sequence[Endpoint],
        *,
        ingresses: int = 1,
        workers: int = 2,
        server: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """The scene of the delivery scenarios: the endpoints listening, the config naming them, Redis,
        then the ingress processes (their URLs are returned) and the workers, each ready."""
        await self.start_endpoints(endpoints)
        self.configure(endpoints, server=server)
        await self.start_redis()
        urls = [await self.start_ingress() for _ in range(ingresses)]
        for _ in range(workers):
            await self.start_worker()
        return urls

    # processes

    async def start_ingress(self, env: Mapping[str, str] | None = None, *, wait_ready: bool = True) -> str:
        port = free_port()
        proc = Proc(self.config, self.redis_url, "serve", "--port", str(port), env=env)
        self.ingresses.append((proc, port))
        if wait_ready:
            await self.wait_ready(proc, f"http://{HOST}:{port}/healthz")
        return f"http://{HOST}:{port}"

    async def wait_ready(self, proc: Proc, url: str, timeout: float = 30) -> None:
        async def ready() -> bool:
            if not proc.alive:
                raise AssertionError(f"relay {' '.join(proc.args)} exited ({proc.proc.returncode}):\n{proc.tail()}")
            try:
                async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    return resp.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False

        await wait_for(ready, timeout, what=f"relay {' '.join(proc.args)} did not become ready", interval=0.05)

    async def start_worker(self) -> Proc:
        proc = Proc(self.config, self.redis_url, "worker")
        self.workers.append(proc)
        name = f"{self.host}:{proc.pid}"

        async def registered() -> bool:
            if not proc.alive:
                raise AssertionError(f"relay worker exited ({proc.proc.returncode}):\n{proc.tail()}")
            try:
                return await self.redis.zscore(k.WORKERS, name) is not None
            except (RedisError, OSError):  # Redis is restarting
                return False

        await wait_for(registered, 30, what=f"relay worker {proc.pid} did not register", interval=0.05)
        return proc

    @property
    def live_workers(self) -> list[Proc]:
        return [w for w in self.workers if w.alive and not w.expected_exit]

    async def kill_worker(self, proc: Proc) -> None:
        proc.kill()
        await proc.wait_exit(10)

    def supervise(self, *, max_restarts: int = 50) -> None:
        """Restart a worker that exits on its own, as a process manager would, and record that it did.

        A scenario asserts ``worker_exits == []`` at its end: a worker must survive what it tests.
        The restart only keeps the run going so the reconciliation still means something.
        """

        async def loop() -> None:
            while True:
                await asyncio.sleep(0.2)
                for w in list(self.workers):
                    if not w.alive and not w.expected_exit:
                        w.expected_exit = True
                        self.worker_exits.append(WorkerExit(w.pid, w.proc.returncode, w.tail(6)))
                        if self.restarted_workers < max_restarts:
                            self.restarted_workers += 1
                            self.workers.append(Proc(self.config, self.redis_url, "worker"))

        self._supervisor = asyncio.create_task(loop())

    async def close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        procs = [p for p, _ in self.ingresses] + self.workers
        for p in procs:
            p.terminate()
        await asyncio.gather(*(p.wait_exit(20) for p in procs))
        for ep in self.endpoints:
            await ep.stop()
        await self.redis.aclose()
        await asyncio.to_thread(self.redis_server.cleanup)

    def logs(self) -> str:
        return "relay logs: " + ", ".join(str(p.log) for p in [p for p, _ in self.ingresses] + self.workers)


# -- endpoints -----------------------------------------------------------------------------------------

#: what an endpoint can do instead of answering 200
ACTIONS = ("hang", "reset", "close", "garbage", "slow", "500")


@dataclass
class Hit:
    """One request an endpoint received, in order of arrival."""

    wid: str
    nid: str
    attempt: int
    refno: int
    arrived: float
    action: str
    answered: int | None = None  # the 2xx the handler completed with; None: misbehaved or cut off


class Endpoint:
    """A real aiohttp endpoint on its own loopback port that records every request.

    ``faults`` maps an attempt number (``Relay-Attempt``) to a misbehaviour from :data:`ACTIONS`; it
    applies to the notifications whose REFNO is a multiple of ``fault_every``. ``stop()`` closes the
    port (connection refused) and ``start()`` opens the same port again.
    """

    def __init__(
        self,
        name: str,
        *,
        concurrent: bool = False,
        max_in_flight: int = 10,
        timeout: float = 2.0,
        retry_delays: Sequence[float] | None = None,
        delay: float = 0.0,
        faults: Mapping[int, str] | None = None,
        fault_every: int = 1,
        slow_seconds: float = 3.0,
    ) -> None:
        for action in (faults or {}).values():
            if action not in ACTIONS:
                raise ValueError(f"unknown action {action!r}")
        self.name = name
        self.concurrent = concurrent
        self.max_in_flight = max_in_flight
        self.timeout = timeout
        self.retry_delays = list(retry_delays) if retry_delays is not None else [0.1, 0.2, 0.3] + [0.5] * 20
        self.delay = delay
        self.faults = dict(faults or {})
        self.fault_every = fault_every
        self.slow_seconds = slow_seconds
        self.port = free_port()
        self.hits: list[Hit] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/hook/{self.name}"

    @property
    def serial(self) -> bool:
        return not self.concurrent

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "name": self.name,
            "url": self.url,
            "concurrent": self.concurrent,
            "timeout": self.timeout,
            "retry_delays": self.retry_delays,
        }
        if self.concurrent:
            spec["max_in_flight"] = self.max_in_flight
        return spec

    def accepted(self) -> list[Hit]:
        return [h for h in self.hits if h.answered is not None]

    async def start(self) -> Endpoint:
        app = web.Application()
        app.add_routes([web.post("/{tail:.*}", self._handle)])
        self.runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self.runner.setup()
        await web.TCPSite(self.runner, HOST, self.port, reuse_address=True).start()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        refno = _refno(body)
        attempt = int(request.headers.get("Relay-Attempt", "0"))
        action = "ok"
        if attempt in self.faults and refno % self.fault_every == 0:
            action = self.faults[attempt]
        hit = Hit(
            request.headers.get("webhook-id", ""),
            request.headers.get("Relay-Notification-Id", ""),
            attempt,
            refno,
            time.monotonic(),
            action,
        )
        self.hits.append(hit)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if action == "ok":
                hit.answered = 200
                return web.Response(text="ok")
            return await self._misbehave(request, action)
        finally:
            self.in_flight -= 1

    async def _misbehave(self, request: web.Request, action: str) -> web.StreamResponse:
        transport = request.transport
        if action == "500":
            return web.Response(status=500, text="scripted failure")
        if action == "hang":
            await asyncio.sleep(3600)  # cancelled when the relay gives up and closes the connection
        if action == "slow":
            resp = web.StreamResponse(status=200, headers={"Content-Length": "100"})
            await resp.prepare(request)
            for _ in range(100):
                await resp.write(b".")
                await asyncio.sleep(self.slow_seconds / 100)
            return resp
        assert transport is not None
        if action == "reset":
            sock = transport.get_extra_info("socket")
            if sock is not None:  # linger 0: close() sends a TCP RST instead of a FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        elif action == "garbage":
            transport.write(b"NOT HTTP AT ALL\r\n\r\n")
            transport.close()
        else:  # close: FIN without an answer
            transport.close()
        await asyncio.sleep(0.05)
        return web.Response(status=200)  # goes nowhere: the connection is gone


def _refno(body: bytes) -> int:
    m = re.search(rb"(?:^|&)REFNO=(\d+)", body)
    return int(m.group(1)) if m else -1


# -- load ------------------------------------------------------------------------------------------------

RECEIPT = re.compile(
    r'^<sig algo="(?P<algo>sha256|sha3-256)" date="(?P<date>\d{14})">[0-9a-f]+</sig>$'
    r"|^<EPAYMENT>(?P<md5date>\d{14})\|[0-9a-f]{32}</EPAYMENT>$"
)


def receipt_ok(body: bytes, text: str, secret: str = SECRET_KEY, channel: str = "ipn") -> bool:
    """Whether ``text`` is the read receipt 2Checkout expects for this signed IPN (or LCN) ``body``."""
    m = RECEIPT.match(text.strip())
    if m is None:
        return False
    algo, date = (m.group("algo"), m.group("date")) if m.group("algo") else ("md5", m.group("md5date"))
    receipt = protocol.lcn_receipt if channel == "lcn" else protocol.ipn_receipt
    return text.strip() == receipt(protocol.parse_form(body), secret.encode(), algo, date)


def ipn_body(refno: int) -> bytes:
    return signed_body(ipn_fields(str(refno), message_id=str(refno)))


@dataclass
class Ack:
    nid: str
    refno: int
    url: str
    at: float


class LoadGenerator:
    """Posts signed IPNs like 2Checkout: a notification is re-posted until a 200 with a valid receipt.

    A 503, a refused or reset connection or a timeout is counted and retried after ``retry_delay``
    (on the next ingress URL, as a load balancer would); any other answer is unexpected and recorded.
    A notification still unacknowledged after ``give_up_after`` seconds is recorded as given up.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        concurrency: int = 4,
        pace: float = 0.0,
        retry_delay: float = 0.2,
        give_up_after: float = 90.0,
        first_refno: int = 1_000_000,
        path: str = "/ipn",
    ) -> None:
        self.urls = list(urls)
        self.concurrency = concurrency
        self.pace = pace
        self.retry_delay = retry_delay
        self.give_up_after = give_up_after
        self.first_refno = first_refno
        self.path = path
        self.acknowledged: dict[str, Ack] = {}
        self.outcomes: Counter[str] = Counter()
        self.unexpected: list[str] = []
        self.gave_up: list[int] = []
        self.started = 0
        self._next = 0
        self._stop = False
        self.running = False

    @property
    def answered_503(self) -> int:
        return self.outcomes["503"]

    def stop(self) -> None:
        """Start no new notification; the ones under way still retry until acknowledged."""
        self._stop = True

    async def run(self, count: int, duration: float) -> None:
        """Post up to ``count`` notifications, starting none after ``duration`` seconds."""
        self.running = True
        deadline = time.monotonic() + duration
        connector = aiohttp.TCPConnector(limit=self.concurrency * 2)
        try:
            async with aiohttp.ClientSession(connector=connector) as session:
                await asyncio.gather(*(self._lane(session, count, deadline) for _ in range(self.concurrency)))
        finally:
            self.running = False

    async def _lane(self, session: aiohttp.ClientSession, count: int, deadline: float) -> None:
        while not self._stop and self._next < count and time.monotonic() < deadline:
            i = self._next
            self._next += 1
            self.started += 1
            await self._post_until_acked(session, self.first_refno + i, i)
            if self.pace:
                await asyncio.sleep(self.pace)

    async def _post_until_acked(self, session: aiohttp.ClientSession, refno: int, i: int) -> None:
        body = ipn_body(refno)
        nid = notification_id("default", "ipn", body)
        give_up = time.monotonic() + self.give_up_after
        tries = 0
        while True:
            url = self.urls[(i + tries) % len(self.urls)] + self.path
            tries += 1
            try:
                async with session.post(url, data=body, headers=FORM, timeout=aiohttp.ClientTimeout(total=15)) as resp:
                    text = await resp.text()
                    self.outcomes[str(resp.status)] += 1
                    if resp.status == 200:
                        if receipt_ok(body, text):
                            self.acknowledged[nid] = Ack(nid, refno, url, time.monotonic())
                        else:
                            self.unexpected.append(f"REFNO {refno}: 200 without a valid receipt: {text[:120]!r}")
                        return
                    if resp.status != 503:
                        self.unexpected.append(f"REFNO {refno}: HTTP {resp.status}: {text[:120]!r}")
                        return
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.outcomes[type(exc).__name__] += 1
            if time.monotonic() > give_up:
                self.gave_up.append(refno)
                return
            await asyncio.sleep(self.retry_delay)


# -- reconciliation ------------------------------------------------------------------------------------


@dataclass
class Summary:
    scenario: str
    acknowledged: int
    expected: int
    delivered: int
    lost: int
    duplicated: int
    load: str = ""
    faults: str = ""
    inputs: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    mode: str = "soak" if SOAK else "ci"
    command: str = ""

    def line(self) -> str:
        extra = " ".join(f"{key}={value}" for key, value in self.extra.items())
        return (
            f"[faults] {self.scenario} ({self.mode}): acknowledged={self.acknowledged} "
            f"delivered={self.delivered}/{self.expected} lost={self.lost} duplicated={self.duplicated} "
            f"{extra} ({self.seconds:.1f} s)"
        ).rstrip()


async def states(redis: Redis, pairs: Sequence[tuple[str, str]]) -> list[str | None]:
    out: list[str | None] = []
    for i in range(0, len(pairs), 2000):
        async with redis.pipeline(transaction=False) as pipe:
            for nid, ep in pairs[i : i + 2000]:
                pipe.hget(k.delivery(nid, ep), "state")
            out += [v.decode() if v is not None else None for v in await pipe.execute()]
    return out


def pairs_for(acks: Iterable[str], endpoints: Sequence[Endpoint]) -> list[tuple[str, str]]:
    return [(nid, ep.name) for nid in sorted(acks) for ep in endpoints]


async def converge(
    redis: Redis, pairs: Sequence[tuple[str, str]], timeout: float, final: frozenset[str] = frozenset({"delivered"})
) -> float | None:
    """Wait (bounded) until every (notification, endpoint) delivery is in a final state.

    Returns the seconds it took, or None if it did not happen within ``timeout``.
    """
    began = time.monotonic()

    async def done() -> bool:
        try:
            return all(s in final for s in await states(redis, pairs))
        except (RedisError, OSError):
            return False

    try:
        await wait_for(done, timeout, interval=0.25)
    except AssertionError:
        return None
    return round(time.monotonic() - began, 1)


async def attempt_records(redis: Redis, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[Any]]:
    """The attempt records (relay:a:{nid}:{ep}, JSON) of each delivery."""
    out: dict[tuple[str, str], list[Any]] = {}
    for i in range(0, len(pairs), 1000):
        chunk = pairs[i : i + 1000]
        async with redis.pipeline(transaction=False) as pipe:
            for nid, ep in chunk:
                pipe.lrange(k.attempts(nid, ep), 0, -1)
            for pair, raw in zip(chunk, await pipe.execute(), strict=True):
                out[pair] = [attempt_record(a) for a in raw]
    return out


async def error_classes(redis: Redis, pairs: Sequence[tuple[str, str]]) -> dict[str, int]:
    """How many attempts ended in each error class (``HTTP 500`` for a status), over all deliveries."""
    counts: Counter[str] = Counter()
    for records in (await attempt_records(redis, pairs)).values():
        for a in records:
            if a.get("outcome") != "delivered":
                counts[a.get("error") or f"HTTP {a.get('status')}"] += 1
    return dict(sorted(counts.items()))


async def seqs(redis: Redis, nids: Sequence[str]) -> dict[str, int]:
    async with redis.pipeline(transaction=False) as pipe:
        for nid in nids:
            pipe.hget(k.notification(nid), "seq")
        values = await pipe.execute()
    return {nid: int(v) for nid, v in zip(nids, values, strict=True) if v is not None}


async def reconcile(
    scenario: str, redis: Redis, acks: Mapping[str, Ack], endpoints: Sequence[Endpoint], started: float, **info: Any
) -> Summary:
    """Acknowledged vs. received (by webhook-id) vs. the delivery states in Redis."""
    pairs = pairs_for(acks, endpoints)
    found = await states(redis, pairs)
    received: dict[str, Counter[str]] = {ep.name: Counter(h.wid for h in ep.accepted()) for ep in endpoints}
    lost: list[str] = []
    delivered = 0
    for (nid, ep), state in zip(pairs, found, strict=True):
        got = received[ep][k.webhook_id(nid, ep)]
        if state == "delivered" and got:
            delivered += 1
        else:
            lost.append(f"{nid} -> {ep}: state {state}, endpoint accepted it {got} times")
    duplicated = sum(n - 1 for counts in received.values() for n in counts.values() if n > 1)
    summary = Summary(
        scenario,
        len(acks),
        len(pairs),
        delivered,
        len(lost),
        duplicated,
        seconds=round(time.monotonic() - started, 1),
        **info,
    )
    if lost:
        summary.extra["lost_examples"] = lost[:5]
    return summary


def attempt_reuse(endpoints: Sequence[Endpoint]) -> list[str]:
    """Requests that repeat a (webhook-id, Relay-Attempt) pair: each claim numbers its attempt anew."""
    out: list[str] = []
    for ep in endpoints:
        seen = Counter((h.wid, h.attempt) for h in ep.hits)
        out += [f"{wid} attempt {n} sent {c} times" for (wid, n), c in seen.items() if c > 1]
    return out


def order_violations(ep: Endpoint, seq: Mapping[str, int]) -> list[str]:
    """For a serial endpoint: every request in order of receipt (``seq``), a retry only of the head.

    Requests must arrive with non-decreasing ``seq`` (a retry or a redelivery repeats the head, never an
    older notification after a newer one), and the first accepted copy of each notification must come
    in strictly increasing ``seq``.
    """
    out: list[str] = []
    last = -1
    for h in ep.hits:
        s = seq.get(h.nid, -1)
        if s < last:
            out.append(f"{ep.name}: seq {s} (REFNO {h.refno}, attempt {h.attempt}) arrived after seq {last}")
        last = max(last, s)
    first: list[int] = []
    seen: set[str] = set()
    for h in ep.accepted():
        if h.nid not in seen:
            seen.add(h.nid)
            first.append(seq.get(h.nid, -1))
    if first != sorted(first):
        out.append(f"{ep.name}: first accepted copies are not in receipt order")
    return out


async def assert_delivered_cleanly(
    c: Cluster, endpoints: Sequence[Endpoint], seq: Mapping[str, int] | None = None
) -> None:
    """What every delivery scenario ends with: each serial endpoint had one request in flight at a time,
    in order of receipt (when ``seq`` is given); no attempt number was sent twice; no lease or in-flight
    record is left."""
    if seq is not None:
        for ep in endpoints:
            if ep.serial:
                assert ep.peak_in_flight == 1, f"{ep.name}: {ep.peak_in_flight} requests in flight at once"
                assert not order_violations(ep, seq), order_violations(ep, seq)[:5]
    assert not attempt_reuse(endpoints)
    assert not await leftovers(c.redis, endpoints)


async def leftovers(redis: Redis, endpoints: Sequence[Endpoint]) -> dict[str, int]:
    """Leases and in-flight records still held once everything is final: must all be zero."""
    out: dict[str, int] = {}
    for ep in endpoints:
        out[f"{ep.name}:lease"] = int(await redis.zcard(k.ep_lease(ep.name)))
        out[f"{ep.name}:in_flight"] = int(await redis.zcard(k.ep_state(ep.name, "in_flight")))
    return {key: n for key, n in out.items() if n}


def report(summary: Summary) -> None:
    """Print the one-line summary, keep it for the session summary, and append it to the report file."""
    line = summary.line()
    print(line)
    doc = asdict(summary)
    doc["extra"] = {key: value for key, value in summary.extra.items() if key != "lost_examples"}
    RESULTS.append(summary)
    path = os.environ.get("RELAY_FAULTS_REPORT")
    if path:
        doc = {**doc, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(doc, ensure_ascii=False, sort_keys=True) + "\n")


def command(node: str) -> str:
    env = "RELAY_SOAK=1 " if SOAK else ""
    return f"{env}python -m pytest -q {node}"

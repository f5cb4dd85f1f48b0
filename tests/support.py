"""Test helpers: a real redis-server on a free port, real endpoint apps, signed test bodies."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from relay import constants as k
from relay import protocol
from relay.store.connection import wait_for_ping

VECTORS = Path(os.environ.get("RELAY_VECTORS", Path(__file__).resolve().parents[2] / "shared" / "vectors"))
if not VECTORS.exists():  # tests/vectors is a copy kept for checkouts without ../shared
    VECTORS = Path(__file__).resolve().parent / "vectors"

SECRET_KEY = "SYNTH-secret_KEY/2024+"
INS_WORD = "tango"
SELLER_ID = "1817037"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def vectors(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A free loopback port *outside* the ephemeral range, never handed out twice in one run.

    The one free-port helper of the suite. Outside the ephemeral range because a listener a test closes
    and opens again (Redis restarted on the same port, an endpoint taken down and brought back) must be
    able to bind again: an outgoing connection could otherwise be given that port as its local port
    while the listener is down. Never twice: a port picked but not yet bound is not free to the next test.
    """
    lo, hi = _ephemeral_range()
    start, stop = (10000, lo) if lo > 11000 else (hi + 1, 65535)
    for _ in range(500):
        port = random.randrange(start, stop)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free loopback port outside the ephemeral range")


class RedisServer:
    """A real redis-server child process on a free loopback port, with its own data dir."""

    def __init__(self, *, appendonly: bool = False, extra: list[str] | None = None) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
        self.exe = exe
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="relay-redis-"))
        self.appendonly = appendonly
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                self.exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--protected-mode",
                "no",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not wait_for_ping(self.port):
            raise RuntimeError("redis-server did not start")
        return self

    def stop(self, sig: str = "term") -> None:
        if self.proc and self.proc.poll() is None:
            if sig == "kill":
                self.proc.kill()
            else:
                self.proc.terminate()
            self.proc.wait(10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def signed_body(
    fields: list[tuple[str, str]], secret: str = SECRET_KEY, algos: tuple[str, ...] = ("md5", "sha256", "sha3-256")
) -> bytes:
    """A form body with HASH / SIGNATURE_SHA2_256 / SIGNATURE_SHA3_256 appended, as 2Checkout signs."""
    grouped: protocol.Fields = {}
    for key, value in fields:
        grouped.setdefault(key, []).append(value)
    src = protocol.signature_source(grouped)
    names = {"md5": "HASH", "sha256": "SIGNATURE_SHA2_256", "sha3-256": "SIGNATURE_SHA3_256"}
    sigs = [(names[a], protocol.hmac_hex(a, secret.encode(), src)) for a in algos]
    return urlencode([*fields, *sigs]).encode()


def ipn_fields(
    refno: str = "230000001", *, status: str = "COMPLETE", test: str = "1", name: str = "Müller", message_id: str = "1"
) -> list[tuple[str, str]]:
    return [
        ("GIFT_ORDER", "0"),
        ("SALEDATE", "2024-01-02 02:58:11"),
        ("REFNO", refno),
        ("REFNOEXT", ""),
        ("ORDERSTATUS", status),
        ("FIRSTNAME", "Jürgen"),
        ("LASTNAME", name),
        ("CUSTOMEREMAIL", "jurgen@example.com"),
        ("IPN_PID[]", "40898000"),
        ("IPN_PNAME[]", "Müller Tool – 東京 Edition"),
        ("IPN_PID[]", "40898001"),
        ("IPN_PNAME[]", "Second"),
        ("MESSAGE_ID", message_id),
        ("MESSAGE_TYPE", status),
        ("TEST_ORDER", test),
        ("IPN_DATE", "20240102030011"),
    ]


def ins_body(
    sale_id: str = "9093727242901",
    invoice_id: str = "9093727243001",
    message_type: str = "ORDER_CREATED",
    word: str = INS_WORD,
    seller: str = SELLER_ID,
) -> bytes:
    md5 = protocol.ins_hash(sale_id, seller, invoice_id, word)
    return urlencode(
        [
            ("message_type", message_type),
            ("message_id", "101"),
            ("vendor_id", seller),
            ("sale_id", sale_id),
            ("invoice_id", invoice_id),
            ("md5_hash", md5),
            ("customer_email", "a@example.com"),
        ]
    ).encode()


def write_config(
    path: Path,
    *,
    redis_port: int = 6390,
    endpoints: list[dict[str, Any]] | None = None,
    sources: list[dict[str, Any]] | None = None,
    extra: str = "",
    delivery: dict[str, Any] | None = None,
    admin: dict[str, Any] | None = None,
) -> Path:
    """Write a relay.toml for tests (TOML written by hand to avoid a dependency)."""

    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(k)} = {val(x)}" for k, x in v.items()) + "}"
        raise TypeError(v)

    srcs = sources or [
        {
            "name": "default",
            "secret_key_env": "TCO_SECRET_KEY",
            "ins_secret_word_env": "TCO_INS_SECRET_WORD",
            "seller_id": SELLER_ID,
        }
    ]
    lines = [
        f"[redis]\nport = {redis_port}\ndata_dir = {json.dumps(str(path.parent / 'redis-data'))}\n",
        "[delivery]\n" + "".join(f"{k} = {val(v)}\n" for k, v in {"poll_interval": 0.05, **(delivery or {})}.items()),
        # port 0: admin routes on the main listener, so parallel `relay serve` processes never clash
        "[admin]\n" + "".join(f"{k} = {val(v)}\n" for k, v in {"port": 0, **(admin or {})}.items()),
        extra,
    ]
    for s in srcs:
        lines.append("[[sources]]\n" + "".join(f"{k} = {val(v)}\n" for k, v in s.items()))
    for e in endpoints or []:
        lines.append("[[endpoints]]\n" + "".join(f"{k} = {val(v)}\n" for k, v in e.items()))
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


TEST_ENV = {"TCO_SECRET_KEY": SECRET_KEY, "TCO_INS_SECRET_WORD": INS_WORD, "SINK_SECRET": WHSEC}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Sink:
    """A real aiohttp endpoint on a free port that records requests and answers from a script.

    ``script`` is a list of actions used in turn (the last one repeats): an int status, or
    ("status", code, headers), ("hang",), ("reset",), ("garbage",), ("slow", seconds).
    """

    script: list[Any] = field(default_factory=lambda: [200])
    received: list[Received] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    delay: float = 0.0
    # set: every request waits for it before its answer (a test holds a delivery in flight until it has
    # seen what it wants to see meanwhile, instead of guessing a delay long enough)
    gate: asyncio.Event | None = None
    port: int = 0
    runner: web.AppRunner | None = None
    _calls: int = 0
    on_request: Callable[[Received], None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        rec = Received(request.path, dict(request.headers), body, time.monotonic())
        action = self.script[min(self._calls, len(self.script) - 1)]
        self._calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.gate is not None:
                await self.gate.wait()
            if isinstance(action, int):
                self.received.append(rec)
                return web.Response(status=action, text=f"status {action}")
            kind = action[0]
            self.received.append(rec)
            if kind == "status":
                return web.Response(status=action[1], headers=action[2], text="scripted")
            if kind == "hang":
                await asyncio.sleep(3600)
            if kind in ("reset", "garbage"):
                transport = request.transport
                assert transport is not None
                if kind == "garbage":
                    transport.write(b"NOT HTTP AT ALL\r\n\r\n")
                transport.close()
                await asyncio.sleep(0.05)
                return web.Response(status=200)
            if kind == "slow":
                resp = web.StreamResponse(status=200, headers={"Content-Length": "100"})
                await resp.prepare(request)
                for _ in range(100):
                    await resp.write(b".")
                    await asyncio.sleep(action[1] / 100)
                return resp
            raise AssertionError(f"unknown action {action!r}")
        finally:
            self.in_flight -= 1

    async def start(self) -> Sink:
        app = web.Application()
        app.add_routes([web.post("/{tail:.*}", self.handle), web.get("/{tail:.*}", self._get)])
        # stopped, it cancels what still hangs at once: a test endpoint owes no one a graceful shutdown, and
        # waiting (aiohttp's default is up to 60 s) only held the test until the relay's own timeout
        self.runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.1)
        await self.runner.setup()
        self.port = self.port or free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def _get(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()


async def wait_for(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, *, what: str = "condition not met"
) -> Any:
    """Poll ``predicate`` (sync or async) until truthy and return its value; fail the test with ``what``
    after ``timeout`` seconds. The one wait helper of the suite: wait on a condition, never sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} (within {timeout:g} s)")
        await asyncio.sleep(interval)


async def close_worker(worker: Any) -> None:
    """Close an in-process ARQ worker, lanes and all.

    arq's close() cancels a cron sweep it has just started and then gathers it, so that cancellation
    can surface before on_shutdown ran: shutdown is then run here (it is safe to run twice).
    """
    from workers.jobs import shutdown

    with contextlib.suppress(asyncio.CancelledError):
        await worker.close()
    await shutdown(worker.ctx)


async def hold_fanout(redis: Any, nid: str, for_ms: int = 10**12) -> None:
    """Keep ``nid`` from the fan-out loops, as a worker that claimed it and stalls (or was killed) would:
    a lease (workers/lua/fanclaim.lua) lapsing ``for_ms`` from now on Redis's clock."""
    seconds, micros = await redis.time()
    await redis.zadd(k.FANOUT_LEASE, {nid: seconds * 1000 + micros // 1000 + for_ms})


async def release_fanout(redis: Any, nid: str) -> None:
    """Undo ``hold_fanout``: the next claim of any fan-out loop takes it."""
    await redis.zrem(k.FANOUT_LEASE, nid)


async def queue_old_fanout_job(redis_url: str, nid: str) -> None:
    """The ARQ job ``fanout(nid)`` an ingress older than the batched fan-out queued for each notification,
    enqueued by arq itself."""
    from arq import create_pool

    from relay.store.connection import arq_settings

    pool = await create_pool(arq_settings(redis_url), default_queue_name=k.QUEUE_NAME)
    try:
        assert await pool.enqueue_job("fanout", nid, _job_id=f"fanout:{nid}") is not None
    finally:
        await pool.aclose()

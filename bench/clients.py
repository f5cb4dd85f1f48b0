"""``python -m bench.clients``: weigh Redis clients on the relay's ingest call, by CPU µs per call.

Each client runs in a child process of its own (so one client's threads, e.g. valkey-glide's Rust
runtime, never bill another's CPU) against one redis-server started here on a free loopback port. The
call is the relay's real ingest script (relay/store/lua/ingest.lua with the key functions, as
Store.ingest registers it) with Store.ingest's 11 keys and ~50 arguments, a 1.5 KB body among them,
and a new notification id each time. Three shapes:

  single   one call at a time, each awaited before the next
  pipe16   pipelines of 16 calls (what the ingress Batcher sends under load)
  conc64   64 callers, each awaiting its own call (the ingress without its Batcher)

CPU is the child's process CPU (time.process_time: user + system of all its threads) over the
measured calls; it hardly moves with the machine's load. calls/s is wall-clock and is noisy on a
shared machine. ``--faults`` (on by default) then kills and restarts Redis under each client.

See docs/benchmarks.md, "Redis client".
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from bench.miniredis import MiniRedis
from bench.procs import HOST, BenchError, Child, Cluster, free_port, redis_ping, wait_until

BODY_BYTES = 1500
CONCURRENCY = 64
PIPELINE = 16
TIMEOUT_S = 2.0
SHAPES = ("single", "pipe16", "conc64", "step")
# what each client raises when Redis is lost or refuses: the classes a relay would map to 503
CLIENTS: dict[str, str] = {
    "redis-py": "redis-py 5 asyncio, stock (commands packed in Python)",
    "redis-py+hiredis-pack": "redis-py with commands packed by hiredis.pack_command (relay/store/connection.py)",
    "redis-py relay-path": "hiredis packing, called as Store.ingest calls it: the Script object in a pipeline "
    "(SCRIPT EXISTS first); step: the Script object called directly, as the worker does",
    "coredis": "coredis (RESP3, anyio)",
    "valkey-glide": "valkey-glide (Rust core, multiplexed connection)",
    "minimal": "bench/miniredis.py: asyncio Protocol, hiredis pack + Reader, FIFO futures, one connection",
}
OPTIONAL = {"coredis": "coredis", "valkey-glide": "glide"}


# ---------------------------------------------------------------------------------------------- workload


def script_source() -> str:
    """The ingest script exactly as Store runs it (relay/store/scripts.py assembles it)."""
    from relay.store.scripts import source
    from relay.store.wire import INGEST

    return source(INGEST)


def ingest_call(nid: str, body: bytes, now_ms: int) -> tuple[list[str], list[str | bytes]]:
    """Store.ingest's keys and arguments for one notification (all str/bytes, which every client takes)."""
    from relay import constants as k
    from relay.store.wire import INGEST

    facts = {
        "type": "ORDER_CREATED",
        "ref": f"ref-{nid[-6:]}",
        "message_id": "",
        "order_ref": nid[-8:],
        "order_no": "0",
        "status": "COMPLETE",
        "approve_status": "OK",
        "vendor": "250111206876",
        "currency": "USD",
        "total": "97.90",
        "customer": "Jane Doe",
        "email": "jane@example.com",
        "country": "US",
        "payment": "CC",
        "hash": "5b0d1ba7" * 8,
        "ip": "203.0.113.9",
        "sig_ok": "1",
    }
    fields: list[str | bytes] = [
        "body",
        body,
        "ct",
        "application/x-www-form-urlencoded",
        "source",
        "tco",
        "channel",
        "ipn",
        "algo",
        "sha256",
    ]
    for name, value in facts.items():
        fields += [name, value]
    keys = INGEST.pack_keys(
        notification=k.notification(nid),
        body=k.body(nid),
        seq=k.SEQ,
        ix_all=k.IDX_ALL,
        ix_channel=k.idx_channel("ipn"),
        ix_source=k.idx_source("tco"),
        ix_ref=k.idx_ref(facts["ref"]),
        fanout=k.FANOUT,
        ix_type=k.idx_type(facts["type"]),
    )
    args: list[str | bytes] = INGEST.pack_args(
        *fields,
        nid=nid,
        retention_ms=str(7 * 86_400_000),
        message_id="",
        source="tco",
        accepted_ttl_ms=str(k.SOURCE_ACCEPTED_TTL_MS),
        body="",  # the body stays a field of the hash, as ingest stores an empty one
    )
    return keys, args


Call = tuple[list[str], list[str | bytes]]

# A stand-in for the worker's step call (workers/engine.py _encode, workers/lua/step.lua), for the clients'
# cost on its shape: 16 results of 10 arguments and 8 keys each, 8 claims of 5 arguments and 4 keys; the
# reply is the 16 result flags, then per claim a status, a count and 2 claimed rows carrying a 1.5 KB body.
STEP_RESULTS, STEP_CLAIMS, STEP_ROWS = 16, 8, 2
STEP_SOURCE = """
local body = redis.call('GET', KEYS[2])
if not body then
  body = string.rep('b', tonumber(ARGV[2]))
  redis.call('SET', KEYS[2], body)
end
local out = {}
for i = 1, tonumber(ARGV[1]) do out[#out + 1] = 1 end
for c = 1, tonumber(ARGV[3]) do
  local rows = {}
  for r = 1, tonumber(ARGV[4]) do
    rows[#rows + 1] = {'n' .. c .. '-' .. r, body, 'ep' .. c, tostring(r), '1700000000000'}
  end
  out[#out + 1] = {'ok', #rows, rows}
end
return out
"""


def step_call(i: int) -> Call:
    keys = ["relay:fanout", "bench:step:body"]
    args: list[str | bytes] = [str(STEP_RESULTS), str(BODY_BYTES), str(STEP_CLAIMS), str(STEP_ROWS)]
    for r in range(STEP_RESULTS):
        keys += [
            f"relay:ep:ep{r % 8}:{name}"
            for name in ("q", "inflight", "st:delivered", "st:failed", "att", "lease", "stats", f"n:{i}-{r}")
        ]
        args += [f"n{i}-{r}", f"ep{r % 8}", "delivered", "200", "12", "1700000000000", "1", "", "ok", "0"]
    for c in range(STEP_CLAIMS):
        keys += [f"relay:ep:ep{c}:{name}" for name in ("q", "inflight", "lease", "cfg")]
        args += [f"ep{c}", "0", "32", "30000", "8"]
    return keys, args


def step_ok(reply: Any) -> bool:
    return (
        isinstance(reply, list)
        and len(reply) == STEP_RESULTS + STEP_CLAIMS
        and all(
            isinstance(row, list) and len(row) == 3 and len(row[2]) == STEP_ROWS and len(row[2][0][1]) == BODY_BYTES
            for row in reply[STEP_RESULTS:]
        )
    )


def calls(prefix: str, count: int) -> list[Call]:
    """``count`` distinct calls (new notification ids), built before the clock starts."""
    body = (b"REFNO=1234567&ORDERNO=0&" + b"X" * BODY_BYTES)[:BODY_BYTES]
    now_ms = int(time.time() * 1000)
    return [ingest_call(f"{prefix}{i:08d}", body, now_ms) for i in range(count)]


# --------------------------------------------------------------------------------------------- adapters


class Adapter:
    """One client, as the relay would hold it: ``call`` awaits one ingest, ``pipeline`` several."""

    name = ""
    # fault runs call through each client's own script object (which reloads a script Redis lost on a
    # restart), where it has one; measured runs send EVALSHA, the call all clients share
    use_scripts = False
    errors: tuple[type[BaseException], ...] = ()
    error_names = ""

    async def open(self, port: int, source: str) -> None:
        raise NotImplementedError

    async def call(self, keys: list[str], args: list[str | bytes]) -> Any:
        raise NotImplementedError

    async def pipeline(self, batch: Sequence[Call]) -> list[Any]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


def _hiredis_packing(redis: Any) -> str:
    """Pack redis-py's commands with hiredis, as the relay does (relay.store.connection)."""
    from relay.store.connection import hiredis_packing

    hiredis_packing(redis)
    return "relay.store.connection.hiredis_packing"


class RedisPy(Adapter):
    def __init__(self, packing: bool, relay_path: bool) -> None:
        from redis.exceptions import RedisError

        self.packing, self.relay_path = packing, relay_path
        self.errors = (RedisError, OSError)
        self.error_names = "redis.exceptions.RedisError, OSError (relay/store/connection.py REDIS_ERRORS)"
        self.packed_by = "redis-py (Python)"

    async def open(self, port: int, source: str) -> None:
        from redis.asyncio import Redis

        self.redis = Redis(
            host=HOST, port=port, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S, max_connections=512
        )
        if self.packing:
            self.packed_by = _hiredis_packing(self.redis)
        self.sha = await self.redis.script_load(source)
        self.script = self.redis.register_script(source)

    async def call(self, keys: list[str], args: list[str | bytes]) -> Any:
        if self.relay_path:  # Store.ingest: even one call goes through the Batcher's pipeline
            return (await self.pipeline([(keys, args)]))[0]
        if self.use_scripts:
            return await self.script(keys=keys, args=args)
        redis: Any = self.redis  # execute_command is untyped
        return await redis.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)

    async def pipeline(self, batch: Sequence[Call]) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys, args in batch:
                if self.relay_path or self.use_scripts:
                    await self.script(keys=keys, args=args, client=pipe)
                else:
                    pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
            return await pipe.execute()

    async def close(self) -> None:
        await self.redis.aclose()


class Coredis(Adapter):
    async def open(self, port: int, source: str) -> None:
        coredis = importlib.import_module("coredis")
        exceptions = importlib.import_module("coredis.exceptions")
        self.errors = (exceptions.RedisError, OSError, TimeoutError)
        self.error_names = "coredis.exceptions.RedisError, OSError, TimeoutError"
        self.redis = coredis.Redis(host=HOST, port=port, stream_timeout=TIMEOUT_S, connect_timeout=TIMEOUT_S)
        await self.redis.__aenter__()
        self.sha = await self.redis.script_load(source)
        self.script = self.redis.register_script(source)

    async def call(self, keys: list[str], args: list[str | bytes]) -> Any:
        if self.use_scripts:
            return await self.script(keys, args)
        return await self.redis.evalsha(self.sha, keys, args)

    async def pipeline(self, batch: Sequence[Call]) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys, args in batch:
                if self.use_scripts:
                    self.script(keys, args, client=pipe)
                else:
                    pipe.evalsha(self.sha, keys, args)
        return list(pipe.results)

    async def close(self) -> None:
        await self.redis.__aexit__(None, None, None)


class Glide(Adapter):
    async def open(self, port: int, source: str) -> None:
        glide = importlib.import_module("glide")
        self.glide = glide
        glide.Logger.set_logger_config(glide.LogLevel.OFF)  # its warnings go to stdout, among our JSON
        self.errors = (glide.GlideError,)
        self.error_names = "glide.GlideError"
        config = glide.GlideClientConfiguration(
            [glide.NodeAddress(HOST, port)], request_timeout=int(TIMEOUT_S * 1000), protocol=glide.ProtocolVersion.RESP2
        )
        self.client = await glide.GlideClient.create(config)
        self.script = glide.Script(source)
        self.sha = (await self.client.custom_command(["SCRIPT", "LOAD", source])).decode()

    async def call(self, keys: list[str], args: list[str | bytes]) -> Any:
        return await self.client.invoke_script(self.script, keys=keys, args=args)

    async def pipeline(self, batch: Sequence[Call]) -> list[Any]:
        b = self.glide.Batch(is_atomic=False)
        for keys, args in batch:
            b.custom_command(["EVALSHA", self.sha, str(len(keys)), *keys, *args])
        return cast(list[Any], await self.client.exec(b, raise_on_error=True))

    async def close(self) -> None:
        await self.client.close()


class Minimal(Adapter):
    errors = (ConnectionError, TimeoutError, OSError)
    error_names = "ConnectionError, TimeoutError (builtins; OSError)"

    async def open(self, port: int, source: str) -> None:
        self.redis = MiniRedis(HOST, port, timeout=TIMEOUT_S)
        self.sha = self.redis.register_script(source)

    async def call(self, keys: list[str], args: list[str | bytes]) -> Any:
        return await self.redis.evalsha(self.sha, keys, args)

    async def pipeline(self, batch: Sequence[Call]) -> list[Any]:
        return await self.redis.pipeline([("EVALSHA", self.sha, len(keys), *keys, *args) for keys, args in batch])

    async def close(self) -> None:
        await self.redis.close()


def adapter(name: str) -> Adapter:
    made: Adapter
    if name == "redis-py":
        made = RedisPy(packing=False, relay_path=False)
    elif name == "redis-py+hiredis-pack":
        made = RedisPy(packing=True, relay_path=False)
    elif name == "redis-py relay-path":
        made = RedisPy(packing=True, relay_path=True)
    elif name == "coredis":
        made = Coredis()
    elif name == "valkey-glide":
        made = Glide()
    elif name == "minimal":
        made = Minimal()
    else:
        raise BenchError(f"unknown client {name!r}; one of {', '.join(CLIENTS)}")
    made.name = name
    return made


def installed(name: str) -> bool:
    module = OPTIONAL.get(name)
    return module is None or importlib.util.find_spec(module) is not None


def version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    dist = {"coredis": "coredis", "valkey-glide": "valkey-glide", "minimal": "hiredis"}.get(name, "redis")
    try:
        return f"{dist} {dist_version(dist)}"
    except PackageNotFoundError:
        return f"{dist} not installed"


# ------------------------------------------------------------------------------------------ measurement


@dataclass
class Measured:
    calls: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    bad: int = 0  # replies that are not a new seq (an int > 0)
    bad_example: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "cpu_us_per_call": round(1e6 * self.cpu_s / max(1, self.calls), 1),
            "calls_per_s": round(self.calls / max(self.wall_s, 1e-9)),
            "bad_replies": self.bad,
            "bad_example": self.bad_example,
        }


def _check(m: Measured, replies: Sequence[Any], ok: Callable[[Any], bool] | None = None) -> None:
    for reply in replies:
        if not (ok(reply) if ok is not None else isinstance(reply, int) and reply > 0):
            m.bad += 1
            m.bad_example = m.bad_example or repr(reply)[:200]


async def _run_shape(a: Adapter, shape: str, work: list[Call], seconds: float) -> Measured:
    """Spend ``work`` (or ``seconds``, whichever ends first) on one shape; CPU and wall of that span."""
    m = Measured()
    deadline = time.monotonic() + seconds
    it = iter(work)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if shape in ("single", "step"):
        ok = step_ok if shape == "step" else None
        for keys, args in it:
            _check(m, [await a.call(keys, args)], ok)
            m.calls += 1
            if time.monotonic() > deadline:
                break
    elif shape == "pipe16":
        while time.monotonic() < deadline:
            batch = [c for _, c in zip(range(PIPELINE), it, strict=False)]
            if not batch:
                break
            _check(m, await a.pipeline(batch))
            m.calls += len(batch)
    else:

        async def caller() -> None:
            for keys, args in it:  # the iterator is shared: each call is taken by one caller
                _check(m, [await a.call(keys, args)])
                m.calls += 1
                if time.monotonic() > deadline:
                    return

        await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
    m.cpu_s, m.wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    return m


async def measure_row(name: str, port: int, seconds: float, count: int, warmup: int) -> dict[str, Any]:
    a = adapter(name)
    await a.open(port, script_source())
    out: dict[str, Any] = {"client": name, "version": version(name)}
    try:
        for shape in SHAPES[:3]:
            prefix = f"{name[:3]}{shape[:2]}{os.getpid()}"
            await _run_shape(a, shape, calls(prefix + "w", warmup), seconds)
            out[shape] = (await _run_shape(a, shape, calls(prefix + "m", count), seconds)).as_dict()
        if isinstance(a, RedisPy):
            out["packed_by"] = a.packed_by
    finally:
        await a.close()
    a = adapter(name)  # the same client on the worker's call
    if isinstance(a, RedisPy) and a.relay_path:  # the worker calls its Script object directly, no pipeline
        a.relay_path, a.use_scripts = False, True
    await a.open(port, STEP_SOURCE)
    try:
        step_count = max(PIPELINE, count // 8)  # a step call carries ~25 times an ingest call's arguments
        await _run_shape(a, "step", [step_call(i) for i in range(max(PIPELINE, warmup // 8))], seconds)
        out["step"] = (await _run_shape(a, "step", [step_call(i) for i in range(step_count)], seconds)).as_dict()
    finally:
        await a.close()
    return out


# ------------------------------------------------------------------------------------------------ faults


def start_redis_on(cluster: Cluster, port: int, name: str = "redis") -> Child:
    exe = shutil.which("redis-server")
    if exe is None:
        raise BenchError("redis-server is not on PATH (apt-get install redis-server)")
    data = cluster.root / f"{name}-{port}"
    data.mkdir(exist_ok=True)
    child = cluster.start(
        name,
        [
            exe,
            "--port",
            str(port),
            "--bind",
            HOST,
            "--dir",
            str(data),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ],
    )
    wait_until("redis-server", lambda: redis_ping(port), 10, child)
    return child


async def _outcome(a: Adapter, what: Callable[[], Awaitable[Any]], limit: float = 10.0) -> dict[str, Any]:
    t0 = time.monotonic()
    task = asyncio.ensure_future(what())
    done, _ = await asyncio.wait([task], timeout=limit)  # not wait_for: its TimeoutError is the builtin one
    if not done:
        task.cancel()
        return {"result": f"no answer within {limit:g} s", "mapped": False, "s": limit}
    try:
        task.result()
    except Exception as exc:  # what the client raises is the finding
        kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
        return {
            "result": f"{kind}: {str(exc)[:120]}",
            "mapped": isinstance(exc, a.errors),
            "s": round(time.monotonic() - t0, 2),
        }
    return {"result": "ok", "mapped": True, "s": round(time.monotonic() - t0, 2)}


async def fault_row(name: str) -> dict[str, Any]:
    """Stall Redis (SIGSTOP) under a call; kill it (SIGKILL) under an in-flight pipeline of 16; call while it
    is down; restart it (empty: the script must be loaded again) and call again."""
    cluster = Cluster()
    port = free_port()
    out: dict[str, Any] = {"client": name}
    try:
        child = start_redis_on(cluster, port)
        a = adapter(name)
        a.use_scripts = True
        await a.open(port, script_source())
        out["errors"] = a.error_names
        work = iter(calls(f"f{os.getpid()}-", 200))

        def one() -> Awaitable[Any]:
            return a.call(*next(work))

        def pipe() -> Awaitable[Any]:
            return a.pipeline([next(work) for _ in range(PIPELINE)])

        out["before"] = await _outcome(a, one)
        os.kill(child.pid, signal.SIGSTOP)
        out["stalled"] = await _outcome(a, one)
        os.kill(child.pid, signal.SIGCONT)
        await asyncio.sleep(0.2)
        out["after_stall"] = await _outcome(a, one)

        os.kill(child.pid, signal.SIGSTOP)
        task = asyncio.ensure_future(_outcome(a, pipe))
        await asyncio.sleep(0.3)  # the pipeline is written and waiting for its replies
        os.kill(child.pid, signal.SIGKILL)
        child.popen.wait(timeout=10)
        cluster.children.remove(child)
        out["killed_mid_pipeline"] = await task
        out["while_down"] = await _outcome(a, one)
        start_redis_on(cluster, port)
        out["first_after_restart"] = await _outcome(a, one)
        out["second_after_restart"] = await _outcome(a, one)
        out["pipeline_after_restart"] = await _outcome(a, pipe)
        await a.close()
    finally:
        cluster.close()
    return out


# ------------------------------------------------------------------------------------------ orchestrator


def _child(args: list[str], timeout: float) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.clients", *args], capture_output=True, text=True, timeout=timeout
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise BenchError(
            f"bench.clients {' '.join(args)} failed ({proc.returncode}):\n" + (proc.stdout + proc.stderr)[-2000:]
        )
    return cast(dict[str, Any], json.loads(lines[-1]))


def _flush(port: int) -> None:
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(b"FLUSHALL\r\n")
        s.recv(16)


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One client's rounds: the median CPU per call of each shape and its range, the median rate."""
    out: dict[str, Any] = {"client": runs[0]["client"], "version": runs[0]["version"], "rounds": len(runs)}
    if "packed_by" in runs[0]:
        out["packed_by"] = runs[0]["packed_by"]
    for shape in SHAPES:
        cpu = [r[shape]["cpu_us_per_call"] for r in runs]
        out[shape] = {
            "cpu_us_per_call": round(statistics.median(cpu), 1),
            "cpu_us_min": min(cpu),
            "cpu_us_max": max(cpu),
            "calls_per_s": round(statistics.median(r[shape]["calls_per_s"] for r in runs)),
            "calls": sum(r[shape]["calls"] for r in runs),
            "bad_replies": sum(r[shape]["bad_replies"] for r in runs),
            "bad_example": next((r[shape]["bad_example"] for r in runs if r[shape]["bad_example"]), ""),
        }
    return out


def text_table(rows: list[dict[str, Any]]) -> str:
    head = f"{'client':<24}" + "".join(f"{s + ' µs/call [range]':>24}{'calls/s':>8}" for s in SHAPES)
    lines = [head, "-" * len(head)]
    for row in rows:
        if "skipped" in row:
            lines.append(f"{row['client']:<24}{row['skipped']}")
            continue
        cells = "".join(
            f"{row[s]['cpu_us_per_call']:>10.1f} [{row[s]['cpu_us_min']:.0f}–{row[s]['cpu_us_max']:.0f}]".rjust(24)
            + f"{row[s]['calls_per_s']:>8}"
            for s in SHAPES
        )
        bad = sum(row[s]["bad_replies"] for s in SHAPES)
        lines.append(f"{row['client']:<24}{cells}" + (f"   {bad} BAD REPLIES" if bad else ""))
    return "\n".join(lines)


def faults_text(rows: list[dict[str, Any]]) -> str:
    steps = [
        "stalled",
        "after_stall",
        "killed_mid_pipeline",
        "while_down",
        "first_after_restart",
        "second_after_restart",
        "pipeline_after_restart",
    ]
    out = []
    for row in rows:
        if "skipped" in row:
            out.append(f"{row['client']}: {row['skipped']}")
            continue
        out.append(f"{row['client']} (maps to 503 via {row['errors']}):")
        for step in steps:
            o = row[step]
            flag = "" if o["mapped"] else "  <- NOT one of those classes"
            out.append(f"  {step:<24}{o['s']:>6.2f} s  {o['result']}{flag}")
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.clients",
        description="CPU µs per ingest call of each Redis client, and its behaviour "
        "when Redis stalls, dies and comes back.",
    )
    p.add_argument("--quick", action="store_true", help="a smoke run: few calls, short spans")
    p.add_argument("--seconds", type=float, help="at most this many seconds per shape (default 4; quick 0.5)")
    p.add_argument("--calls", type=int, help="at most this many calls per shape (default 8000; quick 400)")
    p.add_argument(
        "--rounds",
        type=int,
        help="measure every client this many times, interleaved; the table "
        "shows the median and the range (default 3; quick 1)",
    )
    p.add_argument("--only", help="comma-separated clients: " + ", ".join(CLIENTS))
    p.add_argument("--no-faults", action="store_true", help="skip the kill-and-restart checks")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--row", help=argparse.SUPPRESS)
    p.add_argument("--fault-row", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.seconds = args.seconds or (0.5 if args.quick else 4.0)
    args.calls = args.calls or (400 if args.quick else 8000)
    args.rounds = args.rounds or (1 if args.quick else 3)
    if not 1 <= args.rounds <= 9:
        p.error("--rounds must be in [1, 9]")
    if args.seconds <= 0 or args.seconds > 60:
        p.error("--seconds must be in (0, 60]")
    if args.calls < PIPELINE or args.calls > 100_000:
        p.error(f"--calls must be in [{PIPELINE}, 100000]")
    names = [n.strip() for n in (args.only or ",".join(CLIENTS)).split(",") if n.strip()]
    unknown = [n for n in names if n not in CLIENTS]
    if unknown:
        p.error(f"unknown client(s) {', '.join(unknown)}; choose from {', '.join(CLIENTS)}")
    args.names = names
    return args


def _event_loop_run(coro: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    try:
        import uvloop  # the relay's loop (relay/cli/run.py)
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.run(cast(Any, coro))
    return cast(dict[str, Any], uvloop.run(cast(Any, coro)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.row:
        print(
            json.dumps(
                _event_loop_run(
                    measure_row(args.row, args.port, args.seconds, args.calls, max(PIPELINE * 4, args.calls // 10))
                )
            )
        )
        return 0
    if args.fault_row:
        print(json.dumps(_event_loop_run(fault_row(args.fault_row))))
        return 0

    cluster = Cluster()
    rows: list[dict[str, Any]] = []
    faults: list[dict[str, Any]] = []
    try:
        try:
            from bench.procs import start_redis

            _, port = start_redis(cluster)
        except BenchError as exc:
            print(f"bench.clients: {exc}", file=sys.stderr)
            return 1
        print(
            f"Redis clients on the ingest script: {args.calls} calls or {args.seconds:g} s per shape, "
            f"{args.rounds} round(s); CPU of the client process per call (calls/s is wall-clock: noisy on a "
            "shared machine)",
            flush=True,
        )
        runs: dict[str, list[dict[str, Any]]] = {}
        for name in args.names:
            if not installed(name):
                print(f"  {name}: not installed (pip install {name}) - skipped", flush=True)
        for round_no in range(args.rounds):
            for name in [n for n in args.names if installed(n)]:
                _flush(port)
                row = _child(
                    ["--row", name, "--port", str(port), "--seconds", str(args.seconds), "--calls", str(args.calls)],
                    timeout=60 + 8 * args.seconds,
                )
                runs.setdefault(name, []).append(row)
                print(
                    f"  {round_no + 1}. {name} ({row['version']}): "
                    + ", ".join(f"{s} {row[s]['cpu_us_per_call']} µs" for s in SHAPES),
                    flush=True,
                )
        rows = [combine(runs[n]) if n in runs else {"client": n, "skipped": "not installed"} for n in args.names]
        print()
        print(text_table(rows))
        if not args.no_faults:
            print("\nFaults (Redis stalled by SIGSTOP; killed by SIGKILL under a pipeline of 16; restarted empty):")
            for name in args.names:
                if not installed(name):
                    faults.append({"client": name, "skipped": "not installed"})
                    continue
                faults.append(_child(["--fault-row", name], timeout=120))
            print(faults_text(faults))
    except BenchError as exc:
        print(f"bench.clients: {exc}", file=sys.stderr)
        return 1
    finally:
        cluster.close()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {"rows": rows, "faults": faults, "options": {"seconds": args.seconds, "calls": args.calls}}, f, indent=2
            )
    bad = sum(row[s]["bad_replies"] for row in rows if "skipped" not in row for s in SHAPES)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

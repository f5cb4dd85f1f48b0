"""What every scenario shares: Redis, the relay's processes and config, the load generator."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import redis

from bench.loadgen import KEY_ENV, Spec
from bench.procs import (
    HOST,
    BenchError,
    Child,
    Cluster,
    free_port,
    machine_busy_seconds,
    start_redis,
    wait_http,
    wait_until,
)
from bench.sinks import SinkControl

ENDPOINTS = 8
SELLER_ID = "1817037"
LOADGEN_SLACK_S = 60.0
# before a measurement, wait (a bounded time) until other jobs use less than this much of a core
QUIET_PCT = 15.0


@dataclass(frozen=True)
class Options:
    duration: float
    warmup: float
    connections: int
    rate: float | None  # extra fixed loads at this rate (--rate); None: only the derived ones
    notifications: int  # pre-loaded per delivery drain run
    quick: bool


@dataclass
class EndpointSpec:
    name: str
    port: int
    concurrent: bool = False
    max_in_flight: int = 32
    timeout: float = 5.0
    mode: str | None = None  # per_order (else serial or concurrent, from ``concurrent``)
    rate_limit: float | None = None
    retry_delays: tuple[float, ...] | None = None

    def toml(self) -> str:
        mode = self.mode or ("concurrent" if self.concurrent else "serial")
        return (
            f'[[endpoints]]\nname = "{self.name}"\nurl = "http://{HOST}:{self.port}/hook"\n'
            f'mode = "{mode}"\nmax_in_flight = {self.max_in_flight}\n'
            f"timeout = {self.timeout}\n"
            + (f"rate_limit = {self.rate_limit}\n" if self.rate_limit else "")
            + (f"retry_delays = {list(self.retry_delays)}\n" if self.retry_delays else "")
        )


@dataclass
class Harness:
    opts: Options
    cluster: Cluster = field(default_factory=Cluster)
    secret_key: str = field(default_factory=lambda: "bench-" + secrets.token_urlsafe(18))
    ins_secret_word: str = field(default_factory=lambda: "bench-" + secrets.token_urlsafe(8))
    redis_port: int = 0
    redis_child: Child | None = None
    _redis: redis.Redis | None = None
    _seed: int = field(default_factory=lambda: secrets.randbelow(900) + 1)
    _configs: int = 0
    quiet_wait_s: float = 0.0  # spent in wait_quiet so far

    # -- Redis -------------------------------------------------------------------------------

    def start_redis(self) -> None:
        self.redis_child, self.redis_port = start_redis(self.cluster)
        self._redis = redis.Redis(host=HOST, port=self.redis_port, socket_timeout=30)

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            raise BenchError("Redis is not started")
        return self._redis

    @property
    def redis_url(self) -> str:
        return f"redis://{HOST}:{self.redis_port}/0"

    def flush(self) -> None:
        self.redis.flushall()

    def info(self, section: str) -> dict[str, Any]:
        # redis-py's sync client is typed as possibly async; it is not
        return cast(dict[str, Any], self.redis.info(section))

    def redis_usage(self) -> dict[str, float]:
        mem = self.info("memory")
        cpu = self.info("cpu")
        return {
            "used_memory": float(mem["used_memory"]),
            "cpu_s": float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
        }

    def delivered(self, endpoints: list[str]) -> int:
        pipe = self.redis.pipeline(transaction=False)
        for ep in endpoints:
            pipe.zcard(f"relay:ep:{ep}:st:delivered")
        return sum(int(n) for n in pipe.execute())

    def stored(self) -> int:
        return int(cast(int, self.redis.zcard("relay:ix:all")))

    def seed(self) -> int:
        """A fresh seed for each load, so bodies of one run are never repeats of another's."""
        self._seed += 1
        return self._seed

    # -- the relay ---------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "TCO_"))}
        env.update(
            REDIS_URL=self.redis_url,
            TCO_SECRET_KEY=self.secret_key,
            TCO_INS_SECRET_WORD=self.ins_secret_word,
            PYTHONUNBUFFERED="1",
        )
        return env

    def write_config(self, serve_port: int, endpoints: list[EndpointSpec]) -> str:
        self._configs += 1
        path = self.cluster.root / f"relay-{self._configs}.toml"
        parts = [
            f'[server]\nhost = "{HOST}"\nport = {serve_port}\n',
            # a free admin port, not the default 8081: two benches may run side by side
            f"[admin]\nport = {free_port()}\n",
            '[logging]\nformat = "json"\nlevel = "info"\n',
            f'[[sources]]\nname = "default"\nsecret_key_env = "TCO_SECRET_KEY"\n'
            f'ins_secret_word_env = "TCO_INS_SECRET_WORD"\nseller_id = "{SELLER_ID}"\n',
            *(ep.toml() for ep in endpoints),
        ]
        path.write_text("\n".join(parts), encoding="utf-8")
        return str(path)

    def start_serve(self, endpoints: list[EndpointSpec] | None = None, processes: int = 1) -> tuple[Child, int]:
        """relay serve on a free port; ``processes`` > 1 passes ``--processes N`` and counts the
        CPU and memory of every process it starts as its own."""
        port = free_port()
        config = self.write_config(port, endpoints or [])
        extra = ["--processes", str(processes)] if processes > 1 else []
        child = self.cluster.python(
            "relay-serve", "relay", "--config", config, "serve", *extra, env=self.env(), tree=processes > 1
        )
        wait_http(f"http://{HOST}:{port}/healthz", child)
        return child, port

    def start_workers(self, count: int, config: str, wait: bool = True) -> list[Child]:
        workers = [
            self.cluster.python(f"relay-worker-{i + 1}", "relay", "--config", config, "worker", env=self.env())
            for i in range(count)
        ]
        if wait:
            host = socket.gethostname()
            for w in workers:
                wait_until(
                    f"{w.name} heartbeat", lambda w=w: self.redis.zscore("relay:workers", f"{host}:{w.pid}"), 30, w
                )
        return workers

    # -- the other processes -----------------------------------------------------------------

    def start_sinks(self, count: int = ENDPOINTS) -> tuple[Child, list[int], SinkControl]:
        ports = [free_port() for _ in range(count)]
        control = free_port()
        child = self.cluster.python(
            "sinks", "bench.sinks", "--ports", ",".join(map(str, ports)), "--control", str(control)
        )
        ctl = SinkControl(control)
        wait_until("sinks", lambda: _answers(ctl), 30, child)
        return child, ports, ctl

    def loadgen(self, spec: Spec) -> dict[str, Any]:
        """Run one load in its own process and return its JSON result."""
        return self.json_child(
            "loadgen",
            "bench.loadgen",
            asdict(spec),
            spec.warmup + spec.duration + LOADGEN_SLACK_S,
            env={**os.environ, KEY_ENV: self.secret_key},
        )

    def preload(self, port: int, n: int) -> None:
        """Store ``n`` unique signed notifications through the relay serve on ``port`` before a drain
        (no duplicates, as fast as it takes them); all must be stored."""
        pre = self.loadgen(
            Spec(
                port=port,
                connections=self.opts.connections,
                count=n,
                dup_every=0,
                duration=max(60.0, n / 200),
                seed=self.seed(),
            )
        )
        if pre["ok"] != n:
            raise BenchError(f"pre-load stored {pre['ok']} of {n} notifications: {pre['error_kinds']}")

    def json_child(
        self, name: str, module: str, spec: dict[str, Any], timeout: float, env: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Run ``python -m module '<spec as JSON>'`` to its end and return the JSON it prints."""
        child = self.cluster.python(name, module, json.dumps(spec), env=env, stdout=subprocess.PIPE)
        try:
            out, _ = child.popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{name} overran its time limit; see {child.log}") from None
        finally:
            self.cluster.stop(child)
        if child.popen.returncode != 0:
            raise BenchError(f"{name} failed ({child.popen.returncode}); see {child.log}\n{child.tail()}")
        result: dict[str, Any] = json.loads(out)
        return result

    def wait_quiet(self) -> float:
        """Wait up to a bound for the machine to be quiet; return the CPU % others used in the last 0.5 s."""
        started = time.monotonic()
        deadline = started + (1.0 if self.opts.quick else 30.0)
        while True:
            before = snapshot(self.cluster.children)
            time.sleep(0.5)
            other = cpu_pct(before, snapshot(self.cluster.children))["other"]
            if other < QUIET_PCT or time.monotonic() > deadline:
                self.quiet_wait_s += time.monotonic() - started
                return other

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
        self.cluster.close()


def _answers(ctl: SinkControl) -> bool:
    try:
        ctl.stats()
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class CpuSnapshot:
    at: float
    procs: dict[str, float]
    machine: float


def snapshot(children: list[Child]) -> CpuSnapshot:
    procs = {c.name: c.cpu() for c in children if c.alive()}
    own = os.times()
    procs["bench"] = own.user + own.system
    return CpuSnapshot(time.monotonic(), procs, machine_busy_seconds())


def cpu_pct(before: CpuSnapshot, after: CpuSnapshot, extra_s: dict[str, float] | None = None) -> dict[str, float]:
    """CPU % (of one core) of each process between two snapshots, of the whole machine, and of the rest.

    ``other`` is what processes the bench did not start used: another job on the machine makes
    every figure of that window suspect. ``extra_s`` adds the CPU seconds of processes that started
    and ended within the window (the load generator).
    """
    seconds = after.at - before.at
    if seconds <= 0:
        return {}
    out = {name: round(100 * (cpu - before.procs.get(name, 0.0)) / seconds, 1) for name, cpu in after.procs.items()}
    out.update({name: round(100 * cpu / seconds, 1) for name, cpu in (extra_s or {}).items()})
    machine = 100 * (after.machine - before.machine) / seconds
    out["other"] = round(max(0.0, machine - sum(out.values())), 1)
    out["machine"] = round(machine, 1)
    return out

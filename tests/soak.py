"""A compressed soak: steady load for several retention periods, Redis's memory and key count sampled.

``retention`` is set in seconds, so a run of a few minutes covers many retention periods; whatever
has no bound shows as growth. Each notification reuses one of a few references (licence codes live
for years) and goes to a serial and a concurrent endpoint.

    python -m tests.soak --minutes 6 --retention 10 --rate 40     # the figures in docs/reliability.md

tests/test_soak.py runs a short form of it in ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from tests.procs import RelayProcess
from tests.support import RedisServer, free_port, ipn_fields, signed_body, write_config

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
REFS = 5  # licence codes the notifications share


@dataclass
class Sample:
    t: float  # seconds since the load started
    used_memory: int
    keys: int


@dataclass
class Soak:
    duration: float
    retention: float
    rate: float
    samples: list[Sample] = field(default_factory=list)
    posted: int = 0
    # seconds into the run of each accepted post, to show the load lasted the whole run
    accepted_at: list[float] = field(default_factory=list)
    # at the end: how many keys of each kind (the key with its names and numbers cut off)
    kinds: dict[str, int] = field(default_factory=dict)

    def growth(self, attr: str, smooth: float = 0.0) -> float:
        """Growth over the last third of the run, from a least-squares line through its samples, as a
        fraction of their mean (a slope, so one noisy sample does not decide it).

        ``smooth``: average each sample with those of the ``smooth`` seconds before it first. The
        sweeper trims every 5 s, so a run only a few sweeps long sees a sawtooth whose phase alone can
        tilt the line by several per cent; averaging over one sweep period flattens it."""

        def value(s: Sample) -> float:
            window = [float(getattr(o, attr)) for o in self.samples if s.t - smooth < o.t <= s.t] if smooth else []
            return statistics.fmean(window) if window else float(getattr(s, attr))

        last = [s for s in self.samples if s.t >= self.duration * 2 / 3]
        xs = [s.t for s in last]
        ys = [value(s) for s in last]
        slope = statistics.linear_regression(xs, ys).slope
        return slope * (xs[-1] - xs[0]) / statistics.fmean(ys)

    def slope_per_minute(self, attr: str) -> float:
        last = [s for s in self.samples if s.t >= self.duration * 2 / 3]
        return 60 * statistics.linear_regression([s.t for s in last], [float(getattr(s, attr)) for s in last]).slope

    def summary(self) -> dict[str, object]:
        third = [s for s in self.samples if s.t >= self.duration * 2 / 3]
        return {
            "duration_s": self.duration,
            "retention_s": self.retention,
            "rate_per_s": self.rate,
            "retention_periods": round(self.duration / self.retention, 1),
            "posted": self.posted,
            "used_memory_last_third": [min(s.used_memory for s in third), max(s.used_memory for s in third)],
            "keys_last_third": [min(s.keys for s in third), max(s.keys for s in third)],
            "used_memory_growth_last_third_pct": round(100 * self.growth("used_memory"), 2),
            "keys_growth_last_third_pct": round(100 * self.growth("keys"), 2),
            "used_memory_slope_bytes_per_min": round(self.slope_per_minute("used_memory")),
            "keys_slope_per_min": round(self.slope_per_minute("keys"), 1),
            "keys_at_end": dict(sorted(self.kinds.items())),
        }


async def _sink(port: int) -> web.AppRunner:
    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    app = web.Application()
    app.add_routes([web.post("/{name}", ok)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def _wait_up(http: aiohttp.ClientSession, port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("relay serve did not start")
        await asyncio.sleep(0.1)


async def run(duration: float, retention: float, rate: float, workdir: Path) -> Soak:
    soak = Soak(duration, retention, rate)
    server = RedisServer().start()
    sink_port, port = free_port(), free_port()
    config = write_config(
        workdir / "relay.toml",
        extra=f"[server]\nport = {port}\n",
        delivery={"retention_days": retention / 86400, "retry_window_hours": retention / 3600 / 2},
        endpoints=[
            {"name": "serial", "url": f"http://127.0.0.1:{sink_port}/serial"},
            {"name": "conc", "url": f"http://127.0.0.1:{sink_port}/conc", "concurrent": True},
        ],
    )
    runner = await _sink(sink_port)
    procs = [RelayProcess(config, server.url, "serve"), RelayProcess(config, server.url, "worker")]
    redis = Redis.from_url(server.url)
    try:
        async with aiohttp.ClientSession() as http:
            await _wait_up(http, port)
            started = time.monotonic()

            async def post(i: int) -> None:
                body = signed_body(ipn_fields(f"LIC-{i % REFS}", message_id=str(i)))
                async with http.post(f"http://127.0.0.1:{port}/ipn", data=body, headers=FORM) as resp:
                    if resp.status == 200:
                        soak.posted += 1
                        soak.accepted_at.append(time.monotonic() - started)

            async def load() -> None:
                i, pending = 0, set()
                while (now := time.monotonic() - started) < duration:
                    while i < now * rate:  # a steady rate, whatever each post takes
                        pending.add(asyncio.create_task(post(i)))
                        i += 1
                    pending = {t for t in pending if not t.done()}
                    await asyncio.sleep(0.02)
                await asyncio.gather(*pending)

            async def sample() -> None:
                while (now := time.monotonic() - started) < duration:
                    info = await redis.info("memory")
                    soak.samples.append(Sample(now, int(info["used_memory"]), int(await redis.dbsize())))
                    await asyncio.sleep(1.0)

            await asyncio.gather(load(), sample())
            async for key in redis.scan_iter(count=1000):
                kind = _kind(key.decode())
                soak.kinds[kind] = soak.kinds.get(kind, 0) + 1
            for p in procs:
                if p.proc.poll() is not None:
                    raise RuntimeError(p.output()[-2000:])
    finally:
        for p in procs:
            p.stop()
        await redis.aclose()
        await runner.cleanup()
        server.cleanup()
    return soak


def _kind(key: str) -> str:
    parts = key.split(":")
    return ":".join(parts[:3] if parts[1] in ("ep", "ix") else parts[:2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=6)
    parser.add_argument("--retention", type=float, default=10, help="seconds")
    parser.add_argument("--rate", type=float, default=40, help="notifications a second")
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="relay-soak-") as tmp:
        soak = asyncio.run(run(ns.minutes * 60, ns.retention, ns.rate, Path(tmp)))
    print(json.dumps(soak.summary(), indent=2))


if __name__ == "__main__":
    main()

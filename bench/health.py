"""How long one evaluation of health and one dashboard refresh take with a day of data.

``python -m bench.health`` starts its own redis-server on a free loopback port, seeds 8 endpoints
with 24 h of deliveries (``--per-day`` notifications a day, each delivered to every endpoint; one
endpoint in ten fails), then times ``health_report`` (what ``relay health`` and ``/api/health``
run) and the dashboard's overview model (health plus the hourly charts), and, for comparison, the
read the relay made before issue 11 (2 x 1,440 per-minute hashes per endpoint). It prints the
figures; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from redis.asyncio import Redis

from bench.procs import free_port
from config.settings import Settings, load_settings
from relay import constants as k

ENDPOINTS = [f"ep{i}" for i in range(8)]
CHUNK = 10_000


def _settings(directory: Path, redis_url: str) -> Settings:
    path = directory / "relay.toml"
    eps = "".join(
        f'[[endpoints]]\nname = "{ep}"\nurl = "http://127.0.0.1:9/{ep}"\nconcurrent = true\n\n' for ep in ENDPOINTS
    )
    path.write_text('[[sources]]\nname = "default"\nsecret_key_env = "KEY"\n\n' + eps, encoding="utf-8")
    return load_settings(path, {"KEY": "bench", "REDIS_URL": redis_url})


async def seed(redis: Redis, per_day: int, now_ms: int) -> None:
    """``per_day`` notifications spread over the last 24 h, each with a delivery per endpoint, the
    state indexes as the workers leave them, the source index, and the per-minute hashes earlier
    relays read."""
    step = k.DAY_MS / per_day
    for start in range(0, per_day, CHUNK):
        async with redis.pipeline(transaction=False) as pipe:
            stop = min(per_day, start + CHUNK)
            for ep_i, ep in enumerate(ENDPOINTS):
                delivered: dict[str, float] = {}
                failed: dict[str, float] = {}
                for n in range(start, stop):
                    at = now_ms - k.DAY_MS + n * step
                    (failed if (n + ep_i) % 10 == 0 else delivered)[f"n{n}"] = at
                if delivered:
                    pipe.zadd(k.ep_state(ep, "delivered"), delivered)
                if failed:
                    pipe.zadd(k.ep_state(ep, "failed"), failed)
            # the source's index (one in a hundred a resend): health reads its newest entries only, and
            # since issue 26 counts the window's accepted notifications from per-minute counters
            pipe.zadd(
                k.idx_source("default"),
                {(f"n{n}~r1" if n % 100 == 0 else f"n{n}"): now_ms - k.DAY_MS + n * step for n in range(start, stop)},
            )
            await pipe.execute()
    async with redis.pipeline(transaction=False) as pipe:
        now_min = now_ms // 60_000
        for ep in ENDPOINTS:
            for m in range(1440):
                pipe.hset(k.ep_minute(ep, now_min - m), mapping={"ok": 60, "fail": 7, "gaveup": 1})
        pipe.zadd(k.WORKERS, {"bench:1": now_ms})
        # ingest.lua's per-minute accepted counters of the last 2 h, as they live (without them health
        # would read the window from the index, as it does after an upgrade)
        accepted: dict[int, int] = {}
        for n in range(per_day):
            at = int(now_ms - k.DAY_MS + n * step)
            if n % 100 and at >= now_ms - k.SOURCE_ACCEPTED_TTL_MS:
                accepted[at // 60_000] = accepted.get(at // 60_000, 0) + 1
        for minute, count in accepted.items():
            pipe.set(k.source_accepted("default", minute), count, px=k.SOURCE_ACCEPTED_TTL_MS)
        await pipe.execute()


async def old_minutes_read(redis: Redis, now_ms: int) -> None:
    """What health read before: an HMGET per endpoint and minute, for the hour and the day."""
    async with redis.pipeline(transaction=False) as pipe:
        now_min = now_ms // 60_000
        for ep in ENDPOINTS:
            for m in range(2 * 1440):
                pipe.hmget(k.ep_minute(ep, now_min - m % 1440), ["ok", "fail", "gaveup"])
        await pipe.execute()


async def timed(runs: int, fn: object) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await fn()  # type: ignore[operator]
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def measure(redis_url: str, settings: Settings, per_day: int, runs: int) -> None:
    from relay.store.overview import overview_model
    from relay.store.stats import health_report

    redis = Redis.from_url(redis_url)
    try:
        now_ms = int(time.time() * 1000)
        started = time.perf_counter()
        await seed(redis, per_day, now_ms)
        members = sum([int(await redis.zcard(k.ep_state(ep, s))) for ep in ENDPOINTS for s in ("delivered", "failed")])
        print(
            f"seeded {per_day:,} notifications x {len(ENDPOINTS)} endpoints over 24 h "
            f"({members:,} deliveries) in {time.perf_counter() - started:.1f} s"
        )
        for name, fn in (
            ("health_report (relay health, /api/health)", lambda: health_report(redis, settings, now_ms)),
            ("dashboard overview (health + 24 h charts)", lambda: overview_model(redis, settings, now_ms)),
            ("before issue 11: 2 x 1,440 minute hashes per endpoint", lambda: old_minutes_read(redis, now_ms)),
        ):
            await timed(3, fn)  # warm up connections and script caches
            samples = sorted(await timed(runs, fn))
            print(
                f"{name:<55} median {statistics.median(samples):6.1f} ms   "
                f"min {samples[0]:6.1f} ms   max {samples[-1]:6.1f} ms   ({runs} runs)"
            )
    finally:
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--per-day", type=int, default=100_000, help="notifications a day (default 100,000)")
    parser.add_argument("--runs", type=int, default=30)
    ns = parser.parse_args()
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        raise SystemExit("bench.health needs a redis-server binary on PATH")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [redis_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        try:
            url = f"redis://127.0.0.1:{port}/0"
            for _ in range(100):  # bounded: up to 5 s for the server to listen
                if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).returncode == 0:
                    break
                time.sleep(0.05)
            asyncio.run(measure(url, _settings(Path(tmp), url), ns.per_day, ns.runs))
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()

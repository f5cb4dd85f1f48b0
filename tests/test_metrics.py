"""GET /metrics: the ingress counters plus the delivery metrics read from Redis at scrape time."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from config.settings import Settings
from relay import constants as k
from relay.server import create_app
from relay.store.ingest import notification_id
from tests.support import Sink, free_port, ipn_fields, signed_body, wait_for

EPS = [{"name": "a", "url": "http://127.0.0.1:9/hook"}, {"name": "b", "url": "http://127.0.0.1:9/other"}]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: TestClient) -> tuple[Samples, set[str]]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    samples: Samples = {}
    families = set()
    for family in text_string_to_metric_families(await resp.text()):
        families.add(family.name)
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, families


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def test_delivery_metrics_come_from_redis_at_each_scrape(
    aiohttp_client: Any, redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    now = int(time.time() * 1000)
    await redis.hset(
        k.STATS,
        mapping={
            "a|delivered": 5,
            "a|retry": 2,
            "a|failed": 1,
            # sum (float seconds) from older workers and sum_us (integer microseconds) add up
            "a|lat|0": 2,
            "a|lat|3": 4,
            "a|lat|12": 1,
            "a|lat|sum": 3.5,
            "a|lat|sum_us": 500_000,
            "a|r2d|5": 5,
            "a|r2d|sum": 0.2,
            "a|last_ok": now - 1000,
        },
    )
    await redis.zadd(k.ep_state("a", "pending"), {"n1": now - 42_000, "n2": now})
    await redis.zadd(k.ep_state("a", "retrying"), {"n3": now - 7_000})
    await redis.zadd(k.WORKERS, {"w1": now, "w2": now - 60_000})
    await redis.zadd(k.QUEUE_NAME, {"fanout:n9": now})
    await redis.zadd(k.FANOUT, {"n9": 9, "n8": 8})
    client = await aiohttp_client(create_app(make_settings(endpoints=EPS)))

    samples, families = await scrape(client)

    assert get(samples, "relay_redis_up") == 1
    assert get(samples, "relay_delivery_attempts_total", endpoint="a", outcome="delivered") == 5
    assert get(samples, "relay_delivery_attempts_total", endpoint="a", outcome="retry") == 2
    assert get(samples, "relay_delivery_attempts_total", endpoint="a", outcome="failed") == 1
    assert get(samples, "relay_delivery_attempts_total", endpoint="b", outcome="delivered") == 0
    lat = "relay_delivery_attempt_duration_seconds"
    assert get(samples, f"{lat}_bucket", endpoint="a", le="0.001") == 2
    assert get(samples, f"{lat}_bucket", endpoint="a", le="0.005") == 2
    assert get(samples, f"{lat}_bucket", endpoint="a", le="0.01") == 6
    assert get(samples, f"{lat}_bucket", endpoint="a", le="5.0") == 6
    assert get(samples, f"{lat}_bucket", endpoint="a", le="+Inf") == 7
    assert get(samples, f"{lat}_count", endpoint="a") == 7
    assert get(samples, f"{lat}_sum", endpoint="a") == 4.0
    r2d = "relay_delivery_receipt_to_delivered_seconds"
    # written by an earlier worker over LATENCY_BUCKETS (index 5: <= 0.05 s), read into the 48 h buckets
    assert get(samples, f"{r2d}_bucket", endpoint="a", le="0.01") == 0
    assert get(samples, f"{r2d}_bucket", endpoint="a", le="0.05") == 5
    assert get(samples, f"{r2d}_bucket", endpoint="a", le="172800.0") == 5
    assert get(samples, f"{r2d}_count", endpoint="a") == 5
    assert get(samples, "relay_deliveries", endpoint="a", state="pending") == 2
    assert get(samples, "relay_deliveries", endpoint="a", state="retrying") == 1
    assert get(samples, "relay_deliveries", endpoint="a", state="in_flight") == 0
    assert 42 <= get(samples, "relay_oldest_pending_age_seconds", endpoint="a") < 60
    assert get(samples, "relay_oldest_pending_age_seconds", endpoint="b") == 0
    assert get(samples, "relay_delivery_last_success_timestamp_seconds", endpoint="a") == (now - 1000) / 1000
    assert ("relay_delivery_last_failure_timestamp_seconds", frozenset({("endpoint", "a")})) not in samples
    assert get(samples, "relay_queue_depth", queue="arq") == 1
    assert get(samples, "relay_queue_depth", queue="fanout") == 2
    assert get(samples, "relay_queue_depth", queue="deliveries") == 3  # a's 2 pending and 1 retrying
    assert get(samples, "relay_workers_alive") == 1
    assert {"relay_notifications_received", "relay_ack_latency_seconds"} <= families

    await redis.hincrbyfloat(k.STATS, "a|delivered", 1)
    await redis.zrem(k.ep_state("a", "pending"), "n1", "n2")
    samples, _ = await scrape(client)
    assert get(samples, "relay_delivery_attempts_total", endpoint="a", outcome="delivered") == 6
    assert get(samples, "relay_deliveries", endpoint="a", state="pending") == 0


async def test_redis_down_exposes_redis_up_0_and_the_ingress_metrics(
    aiohttp_client: Any, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(endpoints=EPS, env={"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    client = await aiohttp_client(create_app(settings))
    samples, families = await scrape(client)
    assert get(samples, "relay_redis_up") == 0
    assert "relay_notifications_received" in families
    assert not any(name.startswith("relay_delivery") for name, _ in samples)


def r2d_bucket(fields: list[str]) -> int:
    """The bucket index in the one ``{ep}|r2d|h{i}`` field among ``fields``."""
    prefix = f"a|r2d|{k.R2D_FIELD}"
    found = [int(f[len(prefix) :]) for f in fields if f.startswith(prefix)]
    assert len(found) == 1, fields
    return found[0]


@pytest.fixture
def worker(start_worker: Callable[..., Any]) -> Callable[..., Any]:
    return start_worker


async def test_metrics_follow_real_deliveries(
    aiohttp_client: Any,
    redis: Redis,
    worker: Callable[[Settings], None],
    make_settings: Callable[..., Settings],
    sink: Callable[..., Any],
) -> None:
    target: Sink = await sink([200])
    settings = make_settings(endpoints=[{"name": "a", "url": target.url}])
    client = await aiohttp_client(create_app(settings))
    worker(settings)
    body = signed_body(ipn_fields("230000042"))
    resp = await client.post("/ipn", data=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 200
    nid = notification_id("default", "ipn", body)

    async def delivered() -> bool:
        return await redis.hget(k.delivery(nid, "a"), "state") == b"delivered"

    await wait_for(delivered)

    samples, _ = await scrape(client)
    assert get(samples, "relay_delivery_attempts_total", endpoint="a", outcome="delivered") == 1
    assert get(samples, "relay_delivery_attempt_duration_seconds_count", endpoint="a") == 1
    assert get(samples, "relay_delivery_receipt_to_delivered_seconds_count", endpoint="a") == 1
    assert 0 < get(samples, "relay_delivery_attempt_duration_seconds_sum", endpoint="a") < 5
    assert await redis.hget(k.STATS, "a|delivered") == b"1"  # HINCRBY: an integer
    # receipt to delivered is recorded in the buckets that reach the 48 h window, not the old ones
    r2d = [f.decode() for f in await redis.hkeys(k.STATS) if f.startswith(b"a|r2d|")]
    assert sorted(r2d) == sorted(["a|r2d|sum_us", f"a|r2d|{k.R2D_FIELD}{r2d_bucket(r2d)}"]), r2d
    assert (
        get(
            samples,
            "relay_delivery_receipt_to_delivered_seconds_bucket",
            endpoint="a",
            le=str(float(k.R2D_BUCKETS[-1])),
        )
        == 1
    )
    # nothing writes per-minute attempt hashes any more: health counts deliveries from the state indexes
    assert not [key async for key in redis.scan_iter(match="relay:ep:a:m:*")]
    assert get(samples, "relay_deliveries", endpoint="a", state="pending") == 0
    assert get(samples, "relay_workers_alive") == 1
    assert get(samples, "relay_delivery_last_success_timestamp_seconds", endpoint="a") > 0
    assert get(samples, "relay_notifications_accepted_total", source="default", channel="ipn", duplicate="false") == 1


async def test_every_metric_exposed_is_documented_and_every_documented_one_exposed(
    aiohttp_client: Any, redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    """docs/operations.md's metric table against a real scrape, family by family (each ``# TYPE`` line).
    The ``_created`` gauges prometheus_client adds were exposed for the ingress's histogram too, and
    under no name the docs gave ("each counter also has the _created sample")."""
    now = int(time.time() * 1000)
    await redis.hset(k.STATS, mapping={"a|delivered": 1, "a|failed": 1, "a|last_ok": now, "a|last_fail": now})
    client = await aiohttp_client(create_app(make_settings(endpoints=EPS)))
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert (await client.post("/ipn", data=signed_body(ipn_fields("230000043")), headers=form)).status == 200
    assert (await client.post("/ipn", data=b"REFNO=1&HASH=00", headers=form)).status == 400
    resp = await client.get("/metrics")
    exposed = {line.split()[2] for line in (await resp.text()).splitlines() if line.startswith("# TYPE ")}
    docs = (Path(__file__).parents[1] / "docs" / "operations.md").read_text()
    section = docs[docs.index("| metric | type | labels | meaning |") : docs.index("Example (one endpoint")]
    table = set(re.findall(r"^\| `(relay_\w+)` \|", section, re.M))
    named = set(re.findall(r"`(relay_\w+)`", section))
    assert table and table <= exposed, table - exposed
    assert exposed <= named, sorted(exposed - named)

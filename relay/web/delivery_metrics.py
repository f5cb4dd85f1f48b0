"""Delivery metrics for /metrics, read from Redis at scrape time.

The workers keep the numbers in Redis (``relay:stats``, the state indexes, ``relay:workers``), so any
ingress process can serve them and they survive restarts. A scrape costs one pipelined round trip;
when Redis does not answer, only ``relay_redis_up 0`` is exposed and the ingress metrics still are.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from redis.asyncio import Redis

from relay import constants as k
from relay.constants import LATENCY_BUCKETS
from relay.store.connection import REDIS_ERRORS
from relay.store.stats import WORKER_ALIVE_MS, oldest_age_s

OUTCOMES = ("delivered", "retry", "failed")
GAUGE_STATES = ("pending", "in_flight", "retrying")
_PER_EP = len(GAUGE_STATES) + 2


@dataclass(frozen=True)
class Snapshot:
    up: bool
    stats: dict[str, float] = field(default_factory=dict)
    states: dict[str, dict[str, int]] = field(default_factory=dict)
    oldest: dict[str, float | None] = field(default_factory=dict)
    arq: int = 0
    fanout: int = 0
    workers_alive: int = 0


async def read_snapshot(redis: Redis, endpoints: Sequence[str], now_ms: int) -> Snapshot:
    try:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(k.STATS)
            pipe.zcard(k.QUEUE_NAME)
            pipe.zcard(k.FANOUT)
            pipe.zcount(k.WORKERS, now_ms - WORKER_ALIVE_MS, "+inf")
            for ep in endpoints:
                for state in GAUGE_STATES:
                    pipe.zcard(k.ep_state(ep, state))
                pipe.zrange(k.ep_state(ep, "pending"), 0, 0, withscores=True)
                pipe.zrange(k.ep_state(ep, "retrying"), 0, 0, withscores=True)
            rows = await pipe.execute()
    except REDIS_ERRORS:
        return Snapshot(up=False)
    raw_stats, arq, fanout, alive = rows[:4]
    stats: dict[str, float] = {}
    for key, value in raw_stats.items():
        try:
            stats[key.decode()] = float(value)
        except ValueError:
            continue
    snap = Snapshot(up=True, stats=stats, arq=int(arq), fanout=int(fanout), workers_alive=int(alive))
    for i, ep in enumerate(endpoints):
        row = rows[4 + i * _PER_EP : 4 + (i + 1) * _PER_EP]
        snap.states[ep] = dict(zip(GAUGE_STATES, (int(n) for n in row[: len(GAUGE_STATES)]), strict=True))
        snap.oldest[ep] = oldest_age_s(now_ms, *row[len(GAUGE_STATES) :])
    return snap


def _r2d_counts(stats: dict[str, float], ep: str) -> list[float]:
    """Receipt-to-delivered counts per k.R2D_BUCKETS bucket (+Inf last).

    Fields ``{ep}|r2d|h{i}`` use those buckets. Earlier workers wrote ``{ep}|r2d|{i}`` over
    LATENCY_BUCKETS: each is added to the first new bucket whose bound is at least its own (still
    true of every observation in it), and their +Inf to +Inf."""
    counts = [stats.get(f"{ep}|r2d|{k.R2D_FIELD}{i}", 0.0) for i in range(len(k.R2D_BUCKETS) + 1)]
    for i, upper in enumerate((*LATENCY_BUCKETS, None)):
        old = stats.get(f"{ep}|r2d|{i}", 0.0)
        if old:
            j = next((j for j, b in enumerate(k.R2D_BUCKETS) if upper is not None and b >= upper), len(k.R2D_BUCKETS))
            counts[j] += old
    return counts


def _histogram(stats: dict[str, float], ep: str, kind: str) -> tuple[list[tuple[str, float]], float]:
    """Cumulate the per-bucket counts the workers write (``{ep}|{kind}|{i}``) into Prometheus buckets."""
    buckets: list[tuple[str, float]] = []
    running = 0.0
    bounds = k.R2D_BUCKETS if kind == "r2d" else LATENCY_BUCKETS
    counts = (
        _r2d_counts(stats, ep)
        if kind == "r2d"
        else [stats.get(f"{ep}|{kind}|{i}", 0.0) for i in range(len(bounds) + 1)]
    )
    for upper, n in zip((*bounds, None), counts, strict=True):
        running += n
        buckets.append(("+Inf" if upper is None else repr(float(upper)), running))
    # the workers add integer microseconds (``sum_us``, HINCRBY); ``sum`` (float seconds) is what
    # workers before that wrote, still counted so the sum never goes back
    return buckets, stats.get(f"{ep}|{kind}|sum", 0.0) + stats.get(f"{ep}|{kind}|sum_us", 0.0) / 1e6


class DeliveryCollector(Collector):
    """Renders the latest ``Snapshot``; the /metrics handler refreshes it right before each render."""

    def __init__(self, endpoints: Sequence[str]) -> None:
        self.endpoints = list(endpoints)
        self.snapshot = Snapshot(up=False)

    async def refresh(self, redis: Redis, now_ms: int) -> None:
        self.snapshot = await read_snapshot(redis, self.endpoints, now_ms)

    def describe(self) -> Iterable[Metric]:
        return list(self._families(Snapshot(up=False), fill=False))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(self.snapshot, fill=True))

    def _families(self, snap: Snapshot, *, fill: bool) -> Iterator[Metric]:
        """Every delivery metric family, in the order /metrics lists them.

        Long on purpose: one family per metric, a long list rather than long logic."""
        up = GaugeMetricFamily("relay_redis_up", "1 if Redis answered this scrape, else 0")
        up.add_metric([], 1.0 if snap.up else 0.0)
        yield up
        if fill and not snap.up:
            return
        ep_label = ["endpoint"]
        attempts = CounterMetricFamily(
            "relay_delivery_attempts", "Delivery attempts by endpoint and outcome", labels=["endpoint", "outcome"]
        )
        not_sent = CounterMetricFamily(
            "relay_delivery_not_sent",
            "Claimed deliveries given back unsent (lease at risk after a stall, or a "
            "reload retired the lane), each claimed again",
            labels=ep_label,
        )
        latency = HistogramMetricFamily(
            "relay_delivery_attempt_duration_seconds",
            "Duration of one delivery attempt (request and response)",
            labels=ep_label,
        )
        r2d = HistogramMetricFamily(
            "relay_delivery_receipt_to_delivered_seconds",
            "Time from receipt of a notification to its successful delivery",
            labels=ep_label,
        )
        states = GaugeMetricFamily(
            "relay_deliveries", "Unfinished deliveries by endpoint and state", labels=["endpoint", "state"]
        )
        oldest = GaugeMetricFamily(
            "relay_oldest_pending_age_seconds",
            "Age of the oldest pending or retrying delivery (0 when none)",
            labels=ep_label,
        )
        last_ok = GaugeMetricFamily(
            "relay_delivery_last_success_timestamp_seconds",
            "Unix time of the last successful delivery attempt",
            labels=ep_label,
        )
        last_fail = GaugeMetricFamily(
            "relay_delivery_last_failure_timestamp_seconds",
            "Unix time of the last failed delivery attempt",
            labels=ep_label,
        )
        queue = GaugeMetricFamily(
            "relay_queue_depth",
            "Waiting work: notifications not yet routed (queue=fanout), deliveries not yet "
            "sent, pending or retrying (deliveries); arq: ARQ's own queue (the workers' cron "
            "jobs, and the fan-out jobs an ingress older than the batched fan-out queued)",
            labels=["queue"],
        )
        workers = GaugeMetricFamily("relay_workers_alive", "Workers with a heartbeat in the last 30 s")
        if fill:
            stats = snap.stats
            for ep in self.endpoints:
                for outcome in OUTCOMES:
                    attempts.add_metric([ep, outcome], stats.get(f"{ep}|{outcome}", 0.0))
                not_sent.add_metric([ep], stats.get(f"{ep}|not_sent", 0.0))
                buckets, total = _histogram(stats, ep, "lat")
                latency.add_metric([ep], buckets, total)
                buckets, total = _histogram(stats, ep, "r2d")
                r2d.add_metric([ep], buckets, total)
                for state, n in snap.states.get(ep, {}).items():
                    states.add_metric([ep, state], n)
                oldest.add_metric([ep], snap.oldest.get(ep) or 0.0)
                for family, key in ((last_ok, "last_ok"), (last_fail, "last_fail")):
                    if f"{ep}|{key}" in stats:
                        family.add_metric([ep], stats[f"{ep}|{key}"] / 1000)
            queue.add_metric(["fanout"], snap.fanout)
            queue.add_metric(
                ["deliveries"], sum(n.get("pending", 0) + n.get("retrying", 0) for n in snap.states.values())
            )
            queue.add_metric(["arq"], snap.arq)
            workers.add_metric([], snap.workers_alive)
        yield from (attempts, not_sent, latency, r2d, states, oldest, last_ok, last_fail, queue, workers)


_collectors: weakref.WeakKeyDictionary[CollectorRegistry, DeliveryCollector] = weakref.WeakKeyDictionary()


def collector_for(registry: CollectorRegistry, endpoints: Sequence[str]) -> DeliveryCollector:
    """The registry's delivery collector, registered on first use (the app is frozen by then)."""
    collector = _collectors.get(registry)
    if collector is None:
        collector = DeliveryCollector(endpoints)
        registry.register(collector)
        _collectors[registry] = collector
    return collector

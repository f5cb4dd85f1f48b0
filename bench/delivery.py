"""Delivery: relay workers forwarding to 8 local sinks, as a drain of a backlog and at a fixed load.

Drain: N notifications are pre-loaded through relay serve with no worker running, then W workers
start; the rate is read from the sinks' arrival times between 10 % and 90 % of the deliveries, so
process start-up and the last stragglers do not count. Fixed load: W workers run, the load
generator posts at a fixed rate (open loop), and each delivery's receipt-to-delivered time is the
sink's answer time minus the notification's ``recv`` (ms) in ``relay:n:{nid}``. The default fixed
loads are derived from the drains just measured: LOAD_SHARE of the single-worker drain capacity of
the same endpoint mode (``derived_rate``). Reference (r): ``bench/refdelivery.py`` POSTs the same
kind of bodies to the same sinks with a bare aiohttp client and no Redis.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from bench import refdelivery, throttle
from bench.harness import ENDPOINTS, CpuSnapshot, EndpointSpec, Harness, cpu_pct, snapshot
from bench.loadgen import Spec
from bench.procs import Child
from bench.sinks import SinkControl
from bench.stats import summary_ms

SLOW_DELAY_S = 0.2
POLL_S = 0.2
FIXED_CONNECTIONS = 32
DRAIN_AFTER_LOAD_S = 30.0
# the derived fixed load: this share of the measured single-worker drain capacity (issue 16)
LOAD_SHARE = 0.6
CONCURRENT_IN_FLIGHT = 32


@dataclass(frozen=True)
class Run:
    kind: str  # "drain" | "fixed" | "reference"
    workers: int
    concurrent: bool
    slow: bool = False
    rate: float | None = None  # fixed load: notifications/s; None: derived from the drain (derived_rate)
    per_order: bool = False  # mode = "per_order" (each notification of the load is an order of its own)

    @property
    def mode(self) -> str:
        return "per_order" if self.per_order else "concurrent" if self.concurrent else "serial"

    def label(self) -> str:
        """The run's name in tables and in --compare: it does not change with the figures measured."""
        if self.kind == "reference":
            return f"(r) bare aiohttp client to 8 endpoints, {self.mode}"
        if self.kind == "throttled":
            return f"ep8 held back at rate_limit = 5 under a backlog: {self.mode}, 1 worker"
        extra = ", ep8 slow" if self.slow else ""
        if self.kind == "drain":
            what = "drain"
        elif self.rate is None:
            what = f"{LOAD_SHARE:.0%} of drain capacity"
        else:
            what = f"{self.rate:g}/s"
        return f"{what}: {self.mode}, {self.workers} worker{'s' if self.workers > 1 else ''}{extra}"


DRAINS = (
    Run("drain", 1, False),
    Run("drain", 2, False),
    Run("drain", 1, True),
    Run("drain", 2, True),
    Run("drain", 1, True, per_order=True),
    Run("drain", 1, False, slow=True),
)
REFERENCES = (Run("reference", 0, False), Run("reference", 0, True))
DERIVED = (Run("fixed", 1, False), Run("fixed", 1, True), Run("fixed", 1, False, slow=True))


# one endpoint held back by its rate_limit under a backlog: the worker's CPU meanwhile (bench/throttle.py)
THROTTLED = (Run("throttled", 1, True),)


def runs_for(rate: float | None) -> tuple[Run, ...]:
    """The default runs; ``--rate R`` adds fixed loads at R/s (serial and concurrent, 1 worker)."""
    extra = (Run("fixed", 1, False, rate=rate), Run("fixed", 1, True, rate=rate)) if rate else ()
    return DRAINS + REFERENCES + DERIVED + THROTTLED + extra


def capacity_drain(results: list[dict[str, Any]], mode: str) -> dict[str, Any] | None:
    """The single-worker drain of ``mode`` with 8 healthy endpoints, if it was measured."""
    return next(
        (
            x
            for x in results
            if x.get("kind") == "drain"
            and x.get("workers") == 1
            and x.get("mode") == mode
            and not x.get("slow_endpoint")
        ),
        None,
    )


def derived_rate(drain: dict[str, Any] | None, share: float = LOAD_SHARE, endpoints: int = ENDPOINTS) -> float | None:
    """``share`` of a drain's capacity in notifications/s: its deliveries/s over the endpoints each
    notification goes to (one worker's drain; None when it measured no rate)."""
    if not drain or not drain.get("deliveries_per_s"):
        return None
    return round(share * float(drain["deliveries_per_s"]) / endpoints, 1)


@dataclass
class Context:
    h: Harness
    serve: Child
    serve_port: int
    sinks: Child
    sink_ports: list[int]
    ctl: SinkControl

    def endpoints(self, run: Run) -> list[EndpointSpec]:
        return [
            EndpointSpec(f"ep{i + 1}", port, concurrent=run.concurrent, mode="per_order" if run.per_order else None)
            for i, port in enumerate(self.sink_ports)
        ]

    def delays(self, run: Run) -> list[float]:
        return [SLOW_DELAY_S if run.slow and i == ENDPOINTS - 1 else 0.0 for i in range(ENDPOINTS)]

    def healthy(self, run: Run) -> list[int]:
        return [i for i in range(ENDPOINTS) if not (run.slow and i == ENDPOINTS - 1)]

    def watched(self, workers: list[Child]) -> list[Child]:
        return [*workers, self.serve, self.sinks, *([self.h.redis_child] if self.h.redis_child else [])]


Sample = tuple[float, int, CpuSnapshot]  # (wall ms, delivered so far, CPU snapshot)


def poll_delivered(ctx: Context, names: list[str], expected: int, timeout: float, watched: list[Child]) -> list[Sample]:
    """Sample (time, delivered, CPU seconds per process) until ``expected`` or ``timeout``."""
    samples: list[Sample] = []
    deadline = time.monotonic() + timeout
    while True:
        done = ctx.h.delivered(names)
        samples.append((time.time() * 1000, done, snapshot(watched)))
        if done >= expected or time.monotonic() > deadline:
            return samples
        for child in watched:
            child.check()
        time.sleep(POLL_S)


def _worker_us(before: CpuSnapshot, after: CpuSnapshot, deliveries: int) -> float | None:
    """Worker CPU µs per delivery: a cost that hardly moves when other jobs share the machine."""
    if deliveries <= 0:
        return None
    spent = sum(
        cpu - before.procs.get(name, 0.0) for name, cpu in after.procs.items() if name.startswith("relay-worker")
    )
    return round(1e6 * spent / deliveries, 1)


def _samples_between(samples: list[Sample], t0: float, t1: float) -> tuple[CpuSnapshot, CpuSnapshot, int]:
    first = min(samples, key=lambda s: abs(s[0] - t0))
    last = min(samples, key=lambda s: abs(s[0] - t1))
    return first[2], last[2], last[1] - first[1]


def _cpu_between(samples: list[Sample], t0: float, t1: float) -> dict[str, float]:
    first, last, _ = _samples_between(samples, t0, t1)
    return cpu_pct(first, last)


def drain(ctx: Context, run: Run) -> dict[str, Any]:
    h, n = ctx.h, ctx.h.opts.notifications
    h.flush()
    ctx.ctl.reset(ctx.delays(run))
    config = h.write_config(ctx.serve_port, ctx.endpoints(run))
    h.preload(ctx.serve_port, n)
    healthy = ctx.healthy(run)
    names = [f"ep{i + 1}" for i in healthy]
    quiet = h.wait_quiet()
    usage0 = h.redis_usage()
    started = time.time() * 1000
    workers = h.start_workers(run.workers, config, wait=False)
    try:
        watched = ctx.watched(workers)
        samples = poll_delivered(ctx, names, n * len(healthy), max(60.0, 12 * h.opts.duration), watched)
        usage1 = h.redis_usage()
        memory = {w.name: w.memory() for w in workers}
    finally:
        for w in workers:
            h.cluster.stop(w)
    arrivals = ctx.ctl.arrivals()
    times = sorted(t for i in healthy for t in arrivals[i].values())
    delivered = len(times)
    result: dict[str, Any] = {
        "label": run.label(),
        "kind": run.kind,
        "workers": run.workers,
        "mode": run.mode,
        "slow_endpoint": run.slow,
        "notifications": n,
        "expected": n * len(healthy),
        "delivered": delivered,
        "complete": delivered >= n * len(healthy),
        "worker_memory_kb": memory,
        "other_cpu_pct_before": quiet,
    }
    if delivered < 10:
        return result
    lo, hi = times[delivered // 10], times[(delivered * 9) // 10]
    steady = (delivered * 8 // 10) / max(hi - lo, 1e-3) * 1000
    result.update(
        deliveries_per_s=round(steady, 1),
        deliveries_per_s_per_worker=round(steady / run.workers, 1),
        per_endpoint_per_s=round(steady / len(healthy), 1),
        first_delivery_after_start_s=round((times[0] - started) / 1000, 2),
        first_to_last_s=round((times[-1] - times[0]) / 1000, 2),
        cpu_pct=_cpu_between(samples, lo, hi),
        worker_cpu_us_per_delivery=_worker_us(*_samples_between(samples, lo, hi)),
        redis_cpu_us_per_delivery=round(1e6 * (usage1["cpu_s"] - usage0["cpu_s"]) / delivered, 1),
    )
    if run.slow:
        result["slow_endpoint_delivered"] = len(arrivals[ENDPOINTS - 1])
    return result


def fixed(ctx: Context, run: Run, rate: float, derived_from: dict[str, Any] | None = None) -> dict[str, Any]:
    h = ctx.h
    h.flush()
    ctx.ctl.reset(ctx.delays(run))
    config = h.write_config(ctx.serve_port, ctx.endpoints(run))
    workers = h.start_workers(run.workers, config, wait=True)
    healthy = ctx.healthy(run)
    names = [f"ep{i + 1}" for i in healthy]
    try:
        watched = ctx.watched(workers)
        quiet = h.wait_quiet()
        before = snapshot(watched)
        load = h.loadgen(
            Spec(
                port=ctx.serve_port,
                connections=min(FIXED_CONNECTIONS, h.opts.connections),
                rate=rate,
                duration=h.opts.duration,
                warmup=h.opts.warmup,
                seed=h.seed(),
            )
        )
        after = snapshot(watched)
        cpu = cpu_pct(before, after, {"loadgen": float(load["cpu_s"])})
        expected = h.stored() * len(healthy)
        behind = expected - h.delivered(names)
        worker_us = _worker_us(before, after, expected - behind)
        poll_delivered(ctx, names, expected, DRAIN_AFTER_LOAD_S, watched)
        memory = {w.name: w.memory() for w in workers}
    finally:
        for w in workers:
            h.cluster.stop(w)
    arrivals = ctx.ctl.arrivals()
    recv = _received_ms({nid for i in healthy for nid in arrivals[i]}, h)
    since = float(load["measure_from_wall"]) * 1000
    r2d = [
        max(0.0, t - recv[nid]) for i in healthy for nid, t in arrivals[i].items() if nid in recv and recv[nid] >= since
    ]
    delivered = sum(len(arrivals[i]) for i in healthy)
    result: dict[str, Any] = {
        "label": run.label(),
        "kind": run.kind,
        "workers": run.workers,
        "mode": run.mode,
        "slow_endpoint": run.slow,
        "offered_per_s": rate,
        "acknowledged_per_s": load["rate_per_s"],
        "ack_ms": load["latency_ms"],
        "load_errors": load["errors"],
        "expected": expected,
        "delivered": delivered,
        "complete": delivered >= expected,
        "behind_at_end_of_load": behind,
        "receipt_to_delivered_ms": summary_ms(r2d),
        "cpu_pct": cpu,
        "worker_cpu_us_per_delivery": worker_us,
        "worker_memory_kb": memory,
        "other_cpu_pct_before": quiet,
    }
    if derived_from is not None:
        result["derived_from"] = {
            "label": derived_from["label"],
            "deliveries_per_s": derived_from["deliveries_per_s"],
            "share": LOAD_SHARE,
            "endpoints": ENDPOINTS,
        }
    if run.slow:
        slow = [max(0.0, t - recv[nid]) for nid, t in arrivals[ENDPOINTS - 1].items() if nid in recv]
        result["slow_endpoint_delivered"] = len(arrivals[ENDPOINTS - 1])
        result["slow_endpoint_receipt_to_delivered_ms"] = summary_ms(slow)
    return result


def _received_ms(nids: set[str], h: Harness) -> dict[str, float]:
    ordered = sorted(nids)
    out: dict[str, float] = {}
    for start in range(0, len(ordered), 1000):
        chunk = ordered[start : start + 1000]
        pipe = h.redis.pipeline(transaction=False)
        for nid in chunk:
            pipe.hget(f"relay:n:{nid}", "recv")
        for nid, value in zip(chunk, pipe.execute(), strict=True):
            if value is not None:
                out[nid] = float(value)
    return out


def start(h: Harness) -> Context:
    sinks, ports, ctl = h.start_sinks()
    serve, serve_port = h.start_serve()
    return Context(h, serve, serve_port, sinks, ports, ctl)


def reference(ctx: Context, run: Run) -> dict[str, Any]:
    """(r): the bare aiohttp client POSTing to the 8 sinks, no Redis; its own process."""
    h, n = ctx.h, ctx.h.opts.notifications
    ctx.ctl.reset([0.0] * ENDPOINTS)
    spec = refdelivery.Spec(
        ports=ctx.sink_ports, notifications=n, in_flight=CONCURRENT_IN_FLIGHT if run.concurrent else 1, seed=h.seed()
    )
    quiet = h.wait_quiet()
    watched = [ctx.sinks]
    before = snapshot(watched)
    out = h.json_child("ref-delivery", "bench.refdelivery", asdict(spec), max(60.0, 12 * h.opts.duration))
    after = snapshot(watched)
    unique = sum(ctx.ctl.stats()["unique"])
    delivered = int(out["ok"])
    return {
        "label": run.label(),
        "kind": run.kind,
        "workers": 0,
        "mode": run.mode,
        "slow_endpoint": False,
        "in_flight_per_endpoint": spec.in_flight,
        "notifications": n,
        "expected": n * ENDPOINTS,
        "delivered": unique,
        "complete": unique >= n * ENDPOINTS and not out["errors"],
        "errors": out["errors"],
        "deliveries_per_s": out["deliveries_per_s"],
        "per_endpoint_per_s": round(out["deliveries_per_s"] / ENDPOINTS, 1),
        "client_cpu_us_per_delivery": out["cpu_us_per_post"],
        "client_cpu_pct": out["cpu_pct"],
        "measured_deliveries": delivered,
        "cpu_pct": cpu_pct(before, after, {"ref-delivery": float(out["cpu_s"])}),
        "other_cpu_pct_before": quiet,
    }


def run(h: Harness, runs: tuple[Run, ...] | None = None) -> dict[str, Any]:
    """Each run in order; a derived fixed load reads the drain measured before it in this call."""
    ctx = start(h)
    results: list[dict[str, Any]] = []
    for r in runs or runs_for(h.opts.rate):
        if r.kind == "drain":
            results.append(drain(ctx, r))
        elif r.kind == "throttled":
            results.append(throttle.held_back(ctx, r))
        elif r.kind == "reference":
            results.append(reference(ctx, r))
        elif r.rate is not None:
            results.append(fixed(ctx, r, r.rate))
        else:
            base = capacity_drain(results, r.mode)
            rate = derived_rate(base)
            if base is None or rate is None:
                results.append(
                    {
                        "label": r.label(),
                        "kind": r.kind,
                        "workers": r.workers,
                        "mode": r.mode,
                        "slow_endpoint": r.slow,
                        "skipped": f"no single-worker {r.mode} drain rate measured",
                    }
                )
                continue
            results.append(fixed(ctx, r, rate, derived_from=base))
    h.cluster.stop(ctx.serve)
    h.cluster.stop(ctx.sinks)
    return {"endpoints": ENDPOINTS, "load_share": LOAD_SHARE, "runs": results}

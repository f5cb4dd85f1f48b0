"""Ingress: signed IPNs at N keep-alive connections against relay serve and the two reference servers."""

from __future__ import annotations

from typing import Any

from bench.harness import Harness, cpu_pct, snapshot
from bench.loadgen import KEY_ENV, Spec
from bench.procs import HOST, Child, free_port, wait_http

TARGETS = ("relay", "const", "naive")


def _start(h: Harness, target: str) -> tuple[Child, int]:
    if target == "relay":
        return h.start_serve()
    port = free_port()
    args = [target, "--port", str(port)] + (["--redis", h.redis_url] if target == "naive" else [])
    child = h.cluster.python(f"ref-{target}", "bench.refservers", *args, env={**h.env(), KEY_ENV: h.secret_key})
    wait_http(f"http://{HOST}:{port}/health", child)
    return child, port


def measure(h: Harness, target: str) -> dict[str, Any]:
    h.flush()
    server, port = _start(h, target)
    try:
        watched = [server] + ([h.redis_child] if h.redis_child else [])
        quiet = h.wait_quiet()
        before, usage0 = snapshot(watched), h.redis_usage()
        result = h.loadgen(Spec(
            port=port, connections=h.opts.connections, duration=h.opts.duration, warmup=h.opts.warmup,
            expect="receipt" if target == "relay" else "ok", seed=h.seed(),
        ))
        server.check()
        after = snapshot(watched)
        result["cpu_pct"] = cpu_pct(before, after, {"loadgen": float(result["cpu_s"])})
        # CPU per request hardly moves when other jobs share the machine; throughput does
        answered = max(1, int(result["ok_total"]) + int(result["errors_total"]))
        result["server_cpu_us_per_request"] = round(
            1e6 * (after.procs[server.name] - before.procs[server.name]) / answered, 1)
        result["other_cpu_pct_before"] = quiet
        usage1 = h.redis_usage()
        requests = int(result["ok_total"]) or 1
        result["redis_cpu_us_per_request"] = round(1e6 * (usage1["cpu_s"] - usage0["cpu_s"]) / requests, 1)
        result["server_memory_kb"] = server.memory()
        result["server_process"] = server.name
        if target == "relay":
            result["stored"] = h.stored()
    finally:
        h.cluster.stop(server)
    return result


def run(h: Harness) -> dict[str, Any]:
    results: dict[str, Any] = {target: measure(h, target) for target in TARGETS}
    relay = float(results["relay"]["rate_per_s"])
    results["ratios"] = {
        "relay_over_const": round(relay / max(float(results["const"]["rate_per_s"]), 1e-9), 3),
        "relay_over_naive": round(relay / max(float(results["naive"]["rate_per_s"]), 1e-9), 3),
    }
    return results

"""Ingress: unique signed IPNs at N keep-alive connections against relay serve and the two reference servers."""

from __future__ import annotations

import itertools
import subprocess
import sys
from typing import Any

from bench.harness import Harness, cpu_pct, snapshot
from bench.loadgen import KEY_ENV, Spec
from bench.procs import HOST, Child, free_port, wait_http

# "relay_p2" (relay serve --processes 2) runs only where `relay serve --help` lists --processes
TARGETS = ("relay", "relay_p2", "const", "naive")
SERVE_PROCESSES = {"relay": 1, "relay_p2": 2}
# the order of the servers turns by one with every run (--runs N): on a machine shared with other jobs
# a server measured at a busy moment reads low, and a fixed order put relay serve first every time
_RUNS = itertools.count()


def serve_has_processes(h: Harness) -> bool:
    """Whether this relay's ``serve`` takes ``--processes`` (asked of the code under test, at run time)."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "relay", "serve", "--help"], capture_output=True, text=True, timeout=60, env=h.env()
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0 and "--processes" in proc.stdout


def _start(h: Harness, target: str) -> tuple[Child, int]:
    if target in SERVE_PROCESSES:
        return h.start_serve(processes=SERVE_PROCESSES[target])
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
        result = h.loadgen(
            Spec(
                port=port,
                connections=h.opts.connections,
                duration=h.opts.duration,
                warmup=h.opts.warmup,
                expect="receipt" if target in SERVE_PROCESSES else "ok",
                seed=h.seed(),
                dup_every=0,
            )
        )
        server.check()
        after = snapshot(watched)
        result["cpu_pct"] = cpu_pct(before, after, {"loadgen": float(result["cpu_s"])})
        # CPU per request hardly moves when other jobs share the machine; throughput does
        answered = max(1, int(result["ok_total"]) + int(result["errors_total"]))
        result["server_cpu_us_per_request"] = round(
            1e6 * (after.procs[server.name] - before.procs[server.name]) / answered, 1
        )
        result["other_cpu_pct_before"] = quiet
        usage1 = h.redis_usage()
        requests = int(result["ok_total"]) or 1
        result["redis_cpu_us_per_request"] = round(1e6 * (usage1["cpu_s"] - usage0["cpu_s"]) / requests, 1)
        result["server_memory_kb"] = server.memory()
        result["server_process"] = server.name
        if target in SERVE_PROCESSES:
            result["processes"] = SERVE_PROCESSES[target]
            result["stored"] = h.stored()
    finally:
        h.cluster.stop(server)
    return result


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """Each relay row's throughput over (a)'s and (b)'s."""
    out: dict[str, float] = {}
    for relay in (t for t in SERVE_PROCESSES if t in results):
        rate = float(results[relay]["rate_per_s"])
        for ref, name in (("const", "const"), ("naive", "naive")):
            if ref in results:
                out[f"{relay}_over_{name}"] = round(rate / max(float(results[ref]["rate_per_s"]), 1e-9), 3)
    return out


def turned(targets: list[str], run: int) -> list[str]:
    """The order of run ``run`` (0, 1, ...): ``targets`` turned by one server a run."""
    turn = run % len(targets)
    return targets[turn:] + targets[:turn]


def run(h: Harness) -> dict[str, Any]:
    targets = [t for t in TARGETS if t != "relay_p2" or serve_has_processes(h)]
    results: dict[str, Any] = {target: measure(h, target) for target in turned(targets, next(_RUNS))}
    results["ratios"] = ratios(results)
    return results

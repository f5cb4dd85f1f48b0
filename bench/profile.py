"""``python -m bench.profile ingress|delivery``: where a request's or a delivery's CPU goes.

Runs one of the bench's loads and samples the relay process under it with py-spy (``pip install
py-spy``; it needs ptrace, so root or ``kernel.yama.ptrace_scope = 0``):

- ingress: ``relay serve`` under the closed-loop ingress load (64 connections, unique signed IPNs);
- delivery: one ``relay worker`` draining a pre-loaded backlog to the 8 sinks (serial endpoints).

It prints the busy samples grouped by where the time is spent (the table in docs/benchmarks.md,
"Where the time goes"), then the top functions by self and by inclusive time, and keeps the raw
collapsed stacks (``--out``) for a flame graph (``flamegraph.pl`` or speedscope.app read them).
Idle time (the event loop waiting in epoll) is not sampled, so shares are of the process's busy CPU.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.harness import ENDPOINTS, EndpointSpec, Harness, Options
from bench.loadgen import Spec

# (group, substrings of a frame's file): the first group a leaf frame matches is charged its sample
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("logging (structlog, stdlib logging)", ("structlog/", "logging/", "config/logs.py")),
    ("metrics (prometheus_client)", ("prometheus_client/", "delivery_metrics.py", "web/metrics.py")),
    ("Redis client (redis-py, hiredis)", ("redis/", "hiredis")),
    (
        "HTTP server (aiohttp web)",
        (
            "aiohttp/web",
            "aiohttp/http_parser",
            "aiohttp/http_writer",
            "aiohttp/streams",
            "aiohttp/base_protocol",
            "aiohttp/helpers",
            "aiohttp/payload",
            "aiohttp/multipart",
            "aiohttp/_http",
            "multidict",
            "yarl/",
            "web/limits.py",
            "web/middleware.py",
        ),
    ),
    ("HTTP client (aiohttp client)", ("aiohttp/client", "aiohttp/connector", "aiohttp/tracing")),
    ("protocol: parse, HMAC, receipt", ("relay/protocol.py", "hashlib", "hmac.py", "urllib/parse")),
    ("relay: ingress and store", ("relay/web/", "relay/store/", "relay/events/", "relay/constants.py")),
    ("worker engine and jobs", ("workers/",)),
    ("ARQ", ("arq/",)),
    ("event loop (asyncio, uvloop)", ("asyncio/", "uvloop", "selectors.py")),
    ("pickle, json", ("pickle", "json/")),
)


# a stack that ends in a thread pool's worker loop is that thread blocked on its queue (asyncio.to_thread's
# threads stay after their work: relay serve's alert watcher leaves one). py-spy counts it as busy,
# which made it ~30 % of the samples and shrank every row's µs per request by as much.
IDLE_LEAF = "concurrent/futures/thread.py"


@dataclass(frozen=True)
class Profile:
    samples: int
    by_group: list[tuple[str, int]]
    self_top: list[tuple[str, int]]
    total_top: list[tuple[str, int]]


def _frame_file(frame: str) -> str:
    # py-spy raw frames read "function (path/file.py)" or "function (path/file.py:line)"
    start = frame.rfind("(")
    return frame[start + 1 : -1] if start >= 0 else frame


def summarize(lines: list[str], top: int = 25) -> Profile:
    groups: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in lines:
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        # the thread name py-spy may put first is not a frame
        frames = [f for f in frames if "(" in f] or frames
        if _frame_file(frames[-1]).endswith(IDLE_LEAF):
            continue  # a thread-pool thread waiting for work, which py-spy reports as running
        samples += count
        leaf = frames[-1]
        own[leaf] += count
        for frame in set(frames):
            total[frame] += count
        leaf_file = _frame_file(leaf)
        group = next((name for name, parts in GROUPS if any(p in leaf_file for p in parts)), None)
        if group is None:  # C code or a builtin: charge the nearest frame that matches a group
            for frame in reversed(frames[:-1]):
                file = _frame_file(frame)
                group = next((name for name, parts in GROUPS if any(p in file for p in parts)), None)
                if group is not None:
                    break
        groups[group or "other"] += count
    return Profile(samples, groups.most_common(), own.most_common(top), total.most_common(top))


def text(profile: Profile, cpu_us: float | None, what: str) -> str:
    n = max(profile.samples, 1)
    scale = f", ≈ µs per {what} at {cpu_us:.0f} µs" if cpu_us else ""
    out = [f"{profile.samples} busy samples{scale}", "", f"{'where the time goes':<44} {'share':>6}  µs/{what}"]
    for name, count in profile.by_group:
        us = f"{cpu_us * count / n:8.0f}" if cpu_us else ""
        out.append(f"{name:<44} {100 * count / n:5.1f}%  {us}")
    for title, rows in (("self time (leaf frames)", profile.self_top), ("inclusive time", profile.total_top)):
        out += ["", title]
        out += [f"  {100 * count / n:5.1f}%  {frame[:110]}" for frame, count in rows]
    return "\n".join(out)


def _spy(pid: int, seconds: float, delay: float, out: Path, rate: int) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        subprocess.run(
            [
                _py_spy(),
                "record",
                "-p",
                str(pid),
                "-d",
                str(int(seconds)),
                "-r",
                str(rate),
                "-f",
                "raw",
                "--nolineno",
                "-o",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("bench.profile needs py-spy: pip install py-spy")
    return found


def _commands(h: Harness) -> Counter[str]:
    stats = h.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})


def _print_commands(before: Counter[str], after: Counter[str], per: int, what: str) -> None:
    """Redis commands per request or delivery: each round trip costs both processes a write and a read."""
    calls = after - before
    shown = ", ".join(f"{name} {count / max(per, 1):.2f}" for name, count in calls.most_common(30))
    print(f"Redis commands per {what}: {shown}", flush=True)


def profile_ingress(h: Harness, seconds: float, out: Path, rate: int) -> float:
    h.flush()
    serve, port = h.start_serve()
    before, commands = serve.cpu(), _commands(h)
    spy = _spy(serve.pid, seconds, 2.0, out, rate)
    result = h.loadgen(Spec(port=port, connections=h.opts.connections, duration=seconds + 1, warmup=2.0, seed=h.seed()))
    spy.join(timeout=seconds + 30)
    answered = max(1, int(result["ok_total"]) + int(result["errors_total"]))
    cpu_us = 1e6 * (serve.cpu() - before) / answered
    print(f"ingress: {result['rate_per_s']}/s, {cpu_us:.0f} µs of relay serve CPU per request", flush=True)
    _print_commands(commands, _commands(h), answered, "request")
    h.cluster.stop(serve)
    return cpu_us


def profile_delivery(h: Harness, seconds: float, out: Path, rate: int, concurrent: bool) -> float:
    h.flush()
    sinks, ports, ctl = h.start_sinks()
    serve, serve_port = h.start_serve()
    n = int(700 * (seconds + 6))  # enough backlog that the worker is still draining when sampling ends
    pre = h.loadgen(
        Spec(
            port=serve_port,
            connections=h.opts.connections,
            count=n,
            dup_every=0,
            duration=max(60.0, n / 200),
            seed=h.seed(),
        )
    )
    print(f"delivery: pre-loaded {pre['ok']} notifications", flush=True)
    config = h.write_config(
        serve_port, [EndpointSpec(f"ep{i + 1}", p, concurrent=concurrent) for i, p in enumerate(ports)]
    )
    names = [f"ep{i + 1}" for i in range(ENDPOINTS)]
    [worker] = h.start_workers(1, config, wait=True)
    time.sleep(2.0)
    done0, cpu0, commands = h.delivered(names), worker.cpu(), _commands(h)
    spy = _spy(worker.pid, seconds, 0.0, out, rate)
    spy.join(timeout=seconds + 30)
    done1, cpu1 = h.delivered(names), worker.cpu()
    _print_commands(commands, _commands(h), done1 - done0, "delivery")
    cpu_us = 1e6 * (cpu1 - cpu0) / max(1, done1 - done0)
    print(
        f"delivery: {done1 - done0} deliveries while sampling, {cpu_us:.0f} µs of worker CPU per delivery", flush=True
    )
    for child in (worker, serve, sinks):
        h.cluster.stop(child)
    return cpu_us


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n")[0])
    p.add_argument("target", choices=["ingress", "delivery"])
    p.add_argument("--seconds", type=float, default=10.0, help="seconds sampled (default 10)")
    p.add_argument("--rate", type=int, default=250, help="samples per second (default 250)")
    p.add_argument("--concurrent", action="store_true", help="delivery: concurrent endpoints instead of serial")
    p.add_argument("--out", type=Path, help="where the collapsed stacks go (default bench/results/profile-*.txt)")
    p.add_argument("--top", type=int, default=25)
    ns = p.parse_args(argv)
    if ns.seconds <= 0 or ns.rate <= 0:
        p.error("--seconds and --rate must be positive")
    _py_spy()
    out = ns.out or Path(__file__).resolve().parent / "results" / f"profile-{ns.target}-{int(time.time())}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    h = Harness(Options(duration=ns.seconds, warmup=2.0, connections=64, rate=500.0, notifications=0, quick=False))
    try:
        h.start_redis()
        if ns.target == "ingress":
            cpu_us = profile_ingress(h, ns.seconds, out, ns.rate)
        else:
            cpu_us = profile_delivery(h, ns.seconds, out, ns.rate, ns.concurrent)
    finally:
        h.close()
    if not out.exists():
        print(f"bench.profile: py-spy wrote nothing to {out} (is ptrace allowed?)", file=sys.stderr)
        return 1
    profile = summarize(out.read_text(encoding="utf-8").splitlines(), ns.top)
    print()
    print(text(profile, cpu_us, "request" if ns.target == "ingress" else "delivery"))
    print(f"\ncollapsed stacks: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

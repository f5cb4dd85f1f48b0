"""``python -m bench``: start Redis, the relay, sinks and reference servers on loopback, measure, report.

See docs/benchmarks.md for what each scenario does and how to read the output.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench import cost, delivery, ingress, report
from bench.harness import Harness, Options
from bench.procs import BenchError

SCENARIOS: dict[str, tuple[Callable[[Harness], dict[str, Any]], Callable[[dict[str, Any]], str]]] = {
    "ingress": (ingress.run, report.ingress_text),
    "delivery": (delivery.run, report.delivery_text),
    "cost": (cost.run, report.cost_text),
}
RESULTS_DIR = Path(__file__).resolve().parent / "results"


class Interrupted(Exception):
    pass


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description="Benchmark the relay on loopback.")
    p.add_argument("--quick", action="store_true", help="a few seconds per scenario (CI smoke run)")
    p.add_argument("--duration", type=float, help="measured seconds per load (default 10; quick 1.5)")
    p.add_argument("--connections", type=int, default=64, help="keep-alive connections of the ingress load")
    p.add_argument("--rate", type=float, default=500.0, help="notifications/s of the fixed-load runs")
    p.add_argument("--notifications", type=int, help="pre-loaded per drain run (default 400 x duration)")
    p.add_argument("--only", choices=sorted(SCENARIOS), action="append", help="run only this scenario (repeatable)")
    p.add_argument("--out", type=Path, help="JSON results file (default bench/results/<timestamp>.json)")
    p.add_argument("--max-time", type=float, help="abort after this many seconds (default 1800; quick 300)")
    ns = p.parse_args(argv)
    if ns.connections < 1 or ns.rate <= 0 or (ns.duration is not None and ns.duration <= 0):
        p.error("--connections, --rate and --duration must be positive")
    return ns


def options(ns: argparse.Namespace) -> Options:
    duration = ns.duration or (1.5 if ns.quick else 10.0)
    return Options(
        duration=duration, warmup=0.5 if ns.quick else 2.0, connections=ns.connections, rate=ns.rate,
        notifications=ns.notifications or (300 if ns.quick else int(400 * duration)), quick=ns.quick,
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    opts = options(ns)
    selected = ns.only or list(SCENARIOS)
    out = ns.out or RESULTS_DIR / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
        signal.signal(sig, _interrupt)
    signal.alarm(int(ns.max_time or (300 if opts.quick else 1800)))
    started = time.monotonic()
    results: dict[str, Any] = {"started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                               "options": asdict(opts), "scenarios": selected}
    h = Harness(opts)
    finished = False
    try:
        h.start_redis()
        results["machine"] = report.machine(h)
        print(report.machine_text(results["machine"], results["options"]), flush=True)
        for name in selected:
            run, text = SCENARIOS[name]
            print(f"\n[{name}] running ...", file=sys.stderr, flush=True)
            results[name] = run(h)
            print("\n" + text(results[name]), flush=True)
        finished = True
    except (BenchError, Interrupted) as exc:
        print(f"\nbench: stopped: {exc}", file=sys.stderr)
        return 130 if isinstance(exc, Interrupted) and str(exc) == "SIGINT" else 1
    finally:
        signal.alarm(0)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the teardown short
        if not finished:
            h.cluster.keep = True
            print(f"bench: logs kept in {h.cluster.root}", file=sys.stderr)
        h.close()
    results["targets"] = report.targets(results, results["options"])
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    print("\n" + report.targets_text(results["targets"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nresults: {out} ({results['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

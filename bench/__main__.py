"""``python -m bench``: start Redis, the relay, sinks and reference servers on loopback, measure, report.

See docs/benchmarks.md for what each scenario does and how to read the output.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench import cost, delivery, figures, ingress, memory, reads, report, targets
from bench.harness import Harness, Options
from bench.procs import BenchError

SCENARIOS: dict[str, tuple[Callable[[Harness], dict[str, Any]], Callable[[dict[str, Any]], str]]] = {
    "ingress": (ingress.run, report.ingress_text),
    "delivery": (delivery.run, report.delivery_text),
    "cost": (cost.run, report.cost_text),
    "memory": (memory.run, report.memory_text),
    "reads": (reads.run, report.reads_text),
}
RESULTS_DIR = Path(__file__).resolve().parent / "results"


class Interrupted(Exception):
    pass


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description="Benchmark the relay on loopback.")
    p.add_argument("--quick", action="store_true", help="a few seconds per scenario (CI smoke run)")
    p.add_argument("--duration", type=float, help="measured seconds per load (default 10; quick 1.5)")
    p.add_argument("--connections", type=int, default=64, help="keep-alive connections of the ingress load")
    p.add_argument(
        "--rate",
        type=float,
        help="also run fixed loads at this many notifications/s (default: none; "
        "the default fixed loads are derived from the drain)",
    )
    p.add_argument("--notifications", type=int, help="pre-loaded per drain run (default 400 x duration)")
    p.add_argument("--only", choices=sorted(SCENARIOS), action="append", help="run only this scenario (repeatable)")
    p.add_argument(
        "--runs",
        type=int,
        default=1,
        help="repeat the scenarios this many times; figures are reported as median (min-max) (default 1)",
    )
    p.add_argument("--out", type=Path, help="JSON results file (default bench/results/<timestamp>.json)")
    p.add_argument(
        "--markdown",
        type=Path,
        metavar="PATH",
        help="also write the summary tables as markdown to PATH (printed anyway with --runs > 1)",
    )
    p.add_argument("--max-time", type=float, help="abort after this many seconds (default 1800 per run; quick 300)")
    p.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("OLD", "NEW"),
        help="print the figures of two results files side by side, run nothing",
    )
    p.add_argument(
        "--report",
        type=Path,
        metavar="FILE",
        help="print the markdown tables of a results file (with --markdown: write them), run nothing",
    )
    ns = p.parse_args(argv)
    if ns.connections < 1 or (ns.rate is not None and ns.rate <= 0) or (ns.duration is not None and ns.duration <= 0):
        p.error("--connections, --rate and --duration must be positive")
    if ns.runs < 1 or (ns.notifications is not None and ns.notifications < 10):
        p.error("--runs must be at least 1 and --notifications at least 10")
    if ns.compare and ns.report:
        p.error("--compare and --report are separate commands; give one")
    return ns


def options(ns: argparse.Namespace) -> Options:
    duration = ns.duration or (1.5 if ns.quick else 10.0)
    return Options(
        duration=duration,
        warmup=0.5 if ns.quick else 2.0,
        connections=ns.connections,
        rate=ns.rate,
        notifications=ns.notifications or (300 if ns.quick else int(400 * duration)),
        quick=ns.quick,
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def compare_main(old_path: Path, new_path: Path) -> int:
    try:
        old, new = figures.load(old_path), figures.load(new_path)
    except figures.ResultsError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    _emit(figures.compare_text(old, new, str(old_path), str(new_path)) + "\n")
    return 0


def report_main(path: Path, markdown: Path | None) -> int:
    try:
        doc = figures.load(path)
    except figures.ResultsError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    text = figures.markdown(doc)
    if markdown:
        return _write_markdown(markdown, text)
    _emit(text)
    return 0


def _emit(text: str) -> None:
    """Print to a pipe that may close early (``| head``) without a traceback."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _write_markdown(path: Path, text: str) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"bench: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"markdown: {path}")
    return 0


def run_once(h: Harness, selected: list[str], opts: dict[str, Any], index: int, total: int) -> dict[str, Any]:
    """Every selected scenario once; the run's results and its targets."""
    started, waited = time.monotonic(), h.quiet_wait_s
    one: dict[str, Any] = {}
    for name in selected:
        run, text = SCENARIOS[name]
        which = f" (run {index + 1} of {total})" if total > 1 else ""
        print(f"\n[{name}] running{which} ...", file=sys.stderr, flush=True)
        one[name] = run(h)
        print("\n" + text(one[name]), flush=True)
    one["targets"] = targets.check(one, opts)
    one["elapsed_s"] = round(time.monotonic() - started, 1)
    one["waited_for_quiet_s"] = round(h.quiet_wait_s - waited, 1)
    return one


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    if ns.compare:
        return compare_main(*ns.compare)
    if ns.report:
        return report_main(ns.report, ns.markdown)
    opts = options(ns)
    selected = ns.only or list(SCENARIOS)
    out = ns.out or RESULTS_DIR / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
        signal.signal(sig, _interrupt)
    signal.alarm(int(ns.max_time or (300 if opts.quick else 1800) * ns.runs))
    started = time.monotonic()
    results: dict[str, Any] = {
        "schema": figures.SCHEMA,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": {**asdict(opts), "runs": ns.runs},
        "scenarios": selected,
        "runs": [],
    }
    h = Harness(opts)
    stopped: BaseException | None = None
    try:
        h.start_redis()
        results["machine"] = report.machine(h)
        print(report.machine_text(results["machine"], results["options"]), flush=True)
        for i in range(ns.runs):
            results["runs"].append(run_once(h, selected, results["options"], i, ns.runs))
            if ns.runs > 1:
                print(f"\nrun {i + 1} of {ns.runs}:\n" + targets.text(results["runs"][-1]["targets"]), flush=True)
    except (BenchError, Interrupted) as exc:
        stopped = exc
        print(f"\nbench: stopped: {exc}", file=sys.stderr)
    finally:
        signal.alarm(0)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the teardown short
        if stopped is not None:
            h.cluster.keep = True
            print(f"bench: logs kept in {h.cluster.root}", file=sys.stderr)
        h.close()
    if stopped is not None:
        results["stopped"] = str(stopped)
        if not results["runs"]:
            return 130 if isinstance(stopped, Interrupted) and str(stopped) == "SIGINT" else 1
    results["summary"] = {key: s.as_json() for key, s in figures.summarize(results["runs"]).items()}
    results["targets"] = figures.summarize_targets([r["targets"] for r in results["runs"]])
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    results["waited_for_quiet_s"] = round(h.quiet_wait_s, 1)
    print("\n" + ("targets, median over the runs:\n" if ns.runs > 1 else "") + targets.text(results["targets"]))
    if ns.runs > 1:
        print("\n" + figures.markdown(results), end="")
    status = 0
    if ns.markdown:
        status = _write_markdown(ns.markdown, figures.markdown(results))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(
        f"\nresults: {out} ({results['elapsed_s']} s, {results['waited_for_quiet_s']} s of it waiting for other"
        " jobs to leave the CPU)"
        + (f"; stopped after {len(results['runs'])} of {ns.runs} runs" if stopped is not None else "")
    )
    if stopped is not None:
        return 130 if isinstance(stopped, Interrupted) and str(stopped) == "SIGINT" else 1
    return status


if __name__ == "__main__":
    sys.exit(main())

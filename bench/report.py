"""The machine header, the printed tables and the PASS/MISS comparison with the targets."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.harness import QUIET_PCT, Harness

Row = Sequence[object]


def machine(h: Harness) -> dict[str, Any]:
    model = next(
        (line.split(":", 1)[1].strip() for line in _lines("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor() or "unknown",
    )
    mem_kb = next((int(line.split()[1]) for line in _lines("/proc/meminfo") if line.startswith("MemTotal:")), 0)
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1048576, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis": str(h.info("server")["redis_version"]),
        "packages": {name: _version(name) for name in ("aiohttp", "uvloop", "redis", "hiredis", "arq")},
        "code": _code(),
    }


def _code() -> dict[str, Any]:
    """The commit measured, and whether relay/, workers/ or config/ differed from it (uncommitted edits)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = git("status", "--porcelain", "--", "relay", "workers", "config").splitlines()
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip() or "unknown",
        "uncommitted_in_relay_workers_config": len(changed),
    }


def _lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def table(headers: Row, rows: Sequence[Row]) -> str:
    cells = [[str(c) for c in headers], *[["-" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths), *(line(r) for r in cells[1:])])


def _mb(kb: dict[str, int] | None) -> str:
    return f"{kb['rss_kb'] / 1024:.0f}" if kb else "-"


def machine_text(m: dict[str, Any], opts: dict[str, Any]) -> str:
    pk, code = m["packages"], m["code"]
    dirty = code["uncommitted_in_relay_workers_config"]
    return "\n".join(
        [
            f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, Linux {m['kernel']}",
            f"software: Python {m['python']}, Redis {m['redis']}, aiohttp {pk['aiohttp']}, uvloop {pk['uvloop']}, "
            f"redis-py {pk['redis']}, hiredis {pk['hiredis']}, arq {pk['arq']}",
            f"code: {code['commit']}"
            + (f" with {dirty} uncommitted files in relay/ workers/ config/" if dirty else ""),
            f"options: duration {opts['duration']} s, warmup {opts['warmup']} s, {opts['connections']} connections, "
            f"{opts['notifications']} notifications per drain"
            + (f", extra fixed load {opts['rate']:g}/s" if opts.get("rate") else "")
            + (f", {opts['runs']} runs" if opts.get("runs", 1) > 1 else "")
            + (" (quick)" if opts["quick"] else ""),
        ]
    )


INGRESS_NAMES = {
    "relay": "relay serve",
    "relay_p2": "relay serve --processes 2",
    "const": "(a) aiohttp constant",
    "naive": "(b) naive HMAC+HSET/ZADD",
}


def ingress_text(r: dict[str, Any]) -> str:
    rows = []
    present = [key for key in INGRESS_NAMES if key in r]
    for key in present:
        x = r[key]
        cpu = x["cpu_pct"]
        server_cpu = cpu.get(x["server_process"])
        rows.append(
            [
                INGRESS_NAMES[key],
                f"{x['rate_per_s']:.0f}",
                x["latency_ms"]["p50"],
                x["latency_ms"]["p99"],
                x["latency_ms"]["max"],
                x["errors"],
                server_cpu,
                cpu.get("redis"),
                cpu.get("loadgen"),
                cpu.get("other"),
                x["server_cpu_us_per_request"],
                x["redis_cpu_us_per_request"],
                _mb(x["server_memory_kb"]),
            ]
        )
    ratios = r["ratios"]
    busy = _busy_text([{"label": INGRESS_NAMES[k], **r[k]} for k in present])
    text = table(
        [
            "ingress (unique signed IPN, ~1.5 KB)",
            "notif/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "errors",
            "server CPU%",
            "redis CPU%",
            "loadgen CPU%",
            "other CPU%",
            "server µs/req",
            "redis µs/req",
            "RSS MB",
        ],
        rows,
    )
    for relay in (k for k in ("relay", "relay_p2") if k in r):
        text += (
            f"\n{INGRESS_NAMES[relay]}: relay/(a) = {ratios[f'{relay}_over_const']:.3f}"
            f"   relay/(b) = {ratios[f'{relay}_over_naive']:.3f}"
            f"   (stored {r[relay].get('stored', '-')} unique notifications;"
            f" errors: {r[relay]['error_kinds'] or 'none'})"
        )
    if "relay_p2" not in r:
        text += "\n(relay serve --processes 2 not run: this relay's serve has no --processes)"
    return text + busy


def _busy_text(runs: list[dict[str, Any]]) -> str:
    busy = [
        f"{x['label']} ({x['cpu_pct']['other']:.0f}%)"
        for x in runs
        if x.get("cpu_pct", {}).get("other", 0.0) > QUIET_PCT
    ]
    if not busy:
        return ""
    return "\nWARNING: processes outside the bench used CPU during: " + ", ".join(busy) + "; those figures are low"


def delivery_text(r: dict[str, Any]) -> str:
    rows = []
    for x in r["runs"]:
        if x.get("skipped"):
            rows.append([x["label"], f"skipped: {x['skipped']}"])
            continue
        cpu = x.get("cpu_pct", {})
        worker_cpu = sum(v for k, v in cpu.items() if k.startswith("relay-worker"))
        r2d = x.get("receipt_to_delivered_ms") or {}
        rows.append(
            [
                x["label"],
                x.get("deliveries_per_s"),
                x.get("deliveries_per_s_per_worker"),
                x.get("per_endpoint_per_s"),
                x.get("offered_per_s"),
                x.get("worker_cpu_us_per_delivery") or x.get("client_cpu_us_per_delivery"),
                r2d.get("p50"),
                r2d.get("p99"),
                (x.get("ack_ms") or {}).get("p99"),
                f"{x['delivered']}/{x['expected']}",
                round(worker_cpu, 1) if worker_cpu else x.get("client_cpu_pct"),
                cpu.get("redis"),
                cpu.get("sinks"),
                cpu.get("relay-serve"),
                cpu.get("other"),
            ]
        )
    headers = [
        "delivery (8 endpoints)",
        "deliv/s",
        "per worker",
        "per ep",
        "offered/s",
        "CPU µs/deliv",
        "r2d p50 ms",
        "r2d p99 ms",
        "ack p99 ms",
        "delivered",
        "worker CPU%",
        "redis CPU%",
        "sinks CPU%",
        "serve CPU%",
        "other CPU%",
    ]
    rows = [row + [None] * (len(headers) - len(row)) for row in rows]
    text = table(headers, rows)
    derived = [x for x in r["runs"] if x.get("derived_from")]
    if derived:
        d = derived[0]["derived_from"]
        text += (
            f"\nfixed loads at {d['share']:.0%} of drain capacity: {d['share']:g} x the single-worker drain's "
            f"deliveries/s of the same mode / {d['endpoints']} endpoints ("
            + ", ".join(
                f"{x['mode']}: {x['derived_from']['deliveries_per_s']:g}/s -> {x['offered_per_s']:g}/s"
                for x in derived
                if not x["slow_endpoint"]
            )
            + ")"
        )
    text += (
        "\nCPU µs/deliv: the worker's CPU time per delivery; for (r), the client process's per POST."
        " worker CPU%: for (r), the client's."
    )
    return (
        text
        + _slow_text(r["runs"])
        + _throttled_text(r["runs"])
        + _busy_text([x for x in r["runs"] if not x.get("skipped")])
    )


def _throttled_text(runs: list[dict[str, Any]]) -> str:
    """The held-back run (bench/throttle.py) in one line: its worker's CPU while the backlog waits."""
    return "".join(
        f"\n{x['label']}: {x['deliveries_per_s']}/s sent, {x['held_back_at_end']} still held back; "
        f"the worker used {x['worker_cpu_pct']} % of a core over {x['measured_s']:g} s (an idle "
        f"worker: ~0.6 %)"
        for x in runs
        if x.get("kind") == "throttled" and not x.get("skipped")
    )


def _slow_text(runs: list[dict[str, Any]]) -> str:
    def base_of(slow: dict[str, Any]) -> dict[str, Any] | None:
        return next(
            (
                x
                for x in runs
                if not x["slow_endpoint"]
                and not x.get("skipped")
                and x["kind"] == slow["kind"]
                and x["workers"] == slow["workers"]
                and x["mode"] == slow["mode"]
                and x.get("offered_per_s") == slow.get("offered_per_s")
            ),
            None,
        )

    lines = []
    for slow in (x for x in runs if x["slow_endpoint"] and not x.get("skipped")):
        base = base_of(slow)
        if base is None:
            continue
        if slow["kind"] == "drain" and base.get("per_endpoint_per_s") and slow.get("per_endpoint_per_s"):
            lines.append(
                f"slow ep8 (200 ms), {slow['label']}: the 7 others {slow['per_endpoint_per_s']}/s each "
                f"vs {base['per_endpoint_per_s']}/s with 8 healthy; "
                f"ep8 delivered {slow['slow_endpoint_delivered']}"
            )
        elif slow["kind"] == "fixed":
            a, b = slow["receipt_to_delivered_ms"], base["receipt_to_delivered_ms"]
            lines.append(
                f"slow ep8 (200 ms), {slow['label']}: the 7 others r2d p50/p99 {a['p50']}/{a['p99']} ms "
                f"vs {b['p50']}/{b['p99']} ms with 8 healthy; ep8 delivered {slow['slow_endpoint_delivered']}"
            )
    return "".join("\n" + line for line in lines)


def cost_text(c: dict[str, Any]) -> str:
    mu = c["memory_usage_sampled"]
    rows = [
        ["relay serve RSS after load (MB)", _mb(c["serve_memory_kb"])],
        ["relay worker RSS after delivering (MB)", _mb(c["worker_memory_kb"])],
        ["Redis bytes per stored notification (INFO delta)", c["redis_bytes_per_notification"]],
        ["Redis bytes per delivery record (INFO delta)", c["redis_bytes_per_delivery"]],
        ["Redis bytes per notification delivered to 8", c["redis_bytes_per_notification_delivered"]],
        [
            "MEMORY USAGE relay:n / relay:d / relay:a (bytes)",
            f"{mu['relay:n:{nid}']} / {mu['relay:d:{nid}:{ep}']} / {mu['relay:a:{nid}:{ep}']}",
        ],
        ["Redis CPU µs per notification (ingest)", c["redis_cpu_us_per_notification_ingest"]],
        ["Redis CPU µs per delivery", c["redis_cpu_us_per_delivery"]],
    ]
    text = table([f"cost ({c['notifications']} notifications, {c['deliveries']} deliveries)", "value"], rows)
    for key, title in (
        ("redis_commands_ingest_per_notification", "Redis commands per notification (ingest)"),
        ("redis_commands_delivery_per_delivery", "Redis commands per delivery"),
    ):
        text += "\n\n" + table(
            [title, "calls", "µs"], [[r["command"], r["calls_per_item"], r["usec_per_item"]] for r in c.get(key, [])]
        )
    return text


def memory_text(m: dict[str, Any]) -> str:
    """The key-family table and the commands' cost per delivery (bench/memory.py)."""
    rows = [
        [r["family"], r["keys_per_notification"], r["bytes_per_key"], r["bytes_per_notification"]]
        for r in m["key_families"]
    ]
    rows.append(["MEMORY USAGE, every key", "", "", m["memory_usage_bytes_per_notification"]])
    rows.append(["INFO used_memory delta", "", "", m["redis_bytes_per_notification_delivered"]])
    text = table(
        [
            f"memory ({m['notifications']} notifications to 8, {m['retried_deliveries']} deliveries retried once)",
            "keys/notif",
            "B/key",
            "B/notif",
        ],
        rows,
    )
    text += "\n\n" + table(
        ["Redis CPU per delivery (commandstats)", "calls/deliv", "µs/call", "µs/deliv"],
        [
            [r["command"], r["calls_per_delivery"], r["usec_per_call"], r["usec_per_delivery"]]
            for r in m["redis_commands_per_delivery"]
        ]
        + [["used_cpu_sys + used_cpu_user", "", "", m["redis_cpu_us_per_delivery"]]],
    )
    return text + "\n(evalsha's µs include the commands the scripts call, listed beside it)"


def reads_text(r: dict[str, Any]) -> str:
    """Each operator read at both backlog sizes, its growth and its ratio to the detail read, and SLOWLOG."""
    small, large = (str(s) for s in (r["sizes"][0], r["sizes"][-1]))
    at = r["at"]
    growth, over = r["ratios"]["growth"], r["ratios"]["over_detail"]
    rows = [
        [name, at[small]["ms"][name], at[large]["ms"][name], growth.get(name), over.get(name)]
        for name in at[large]["ms"]
    ]
    text = table(
        [
            f"reads (page of {r['page']}, median of {r['calls']})",
            f"{int(small):,} ms",
            f"{int(large):,} ms",
            f"{int(large):,}/{int(small):,}",
            "÷ detail",
        ],
        rows,
    )
    for size in (small, large):
        slow, build = at[size]["slowlog"], at[size]["build"]
        ctl = build["control_slowlog"]
        text += (
            f"\nat {int(size):,}: SLOWLOG (>= 10 ms) during the reads: {slow['count']}"
            f" (max {slow['max_us'] / 1000:.1f} ms)"
            f"; during pause + resume of the 8 endpoints: {ctl['count']} (max {ctl['max_us'] / 1000:.1f} ms);"
            f" built in {build['store_s']} s stored + {build['route_s']} s routed + {build['resume_s']} s resumed,"
            f" {build['pending_deliveries']:,} deliveries pending"
        )
    return (
        text + "\n(÷ detail: an API read over the API's detail read; relay health and the overview over the"
        " detail read in process)"
    )

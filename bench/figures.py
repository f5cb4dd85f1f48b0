"""The comparable figures of a results file: flattening, median and spread over runs, --compare, markdown.

A results file (``bench/results/*.json``) is schema 2 when it has ``"schema": 2``: its ``runs``
list holds one object per run (the scenarios' results, that run's ``targets`` and ``elapsed_s``).
A file without ``schema`` is schema 1 (written before ``--runs``): its scenarios are at the top
level, one run. Both are read the same way (``runs_of``); every figure is looked up with
``.get`` so a figure an older bench did not measure is simply absent.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import report
from bench.harness import QUIET_PCT

SCHEMA = 2
INGRESS_ROWS = {
    "relay": "relay serve",
    "relay_p2": "relay serve --processes 2",
    "const": "(a) aiohttp constant",
    "naive": "(b) naive: parse, one HMAC, HSET+ZADD",
}
NOISE = 0.10  # --compare marks a change better/worse only beyond this share


class ResultsError(Exception):
    """A results file that cannot be read; the message names it and why."""


@dataclass(frozen=True)
class Figure:
    table: str  # "ingress" | "delivery" | "cost"
    row: str
    column: str
    unit: str  # "/s" | "ms" | "µs" | "x" | "MB" | "B"
    higher_is_better: bool | None
    value: float

    @property
    def id(self) -> str:
        return f"{self.table}|{self.row}|{self.column}"


def load(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ResultsError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not ({"runs", "ingress", "delivery", "cost", "memory", "reads"} & doc.keys()):
        raise ResultsError(f"{path} is not a results file of python -m bench (no runs or scenarios in it)")
    schema = doc.get("schema", 1)
    if not isinstance(schema, int) or schema > SCHEMA:
        raise ResultsError(f"{path} has results schema {schema!r}; this bench reads 1 to {SCHEMA}")
    return doc


def runs_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run of a results file, of either schema."""
    if "runs" in doc and isinstance(doc["runs"], list):
        return [r for r in doc["runs"] if isinstance(r, dict)]
    return [doc]


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def figures(run: dict[str, Any]) -> list[Figure]:
    """The comparable figures of one run, in table order."""
    out: list[Figure] = []

    def add(table: str, row: str, column: str, unit: str, better: bool | None, value: Any) -> None:
        v = _num(value)
        if v is not None:
            out.append(Figure(table, row, column, unit, better, v))

    ing = run.get("ingress") or {}
    ratios = ing.get("ratios") or {}
    for key, row in INGRESS_ROWS.items():
        x = ing.get(key)
        if not isinstance(x, dict):
            continue
        lat = x.get("latency_ms") or {}
        add("ingress", row, "notifications/s", "/s", True, x.get("rate_per_s"))
        add("ingress", row, "relay/(a)", "x", True, ratios.get(f"{key}_over_const"))
        add("ingress", row, "relay/(b)", "x", True, ratios.get(f"{key}_over_naive"))
        add("ingress", row, "p50 ms", "ms", False, lat.get("p50"))
        add("ingress", row, "p99 ms", "ms", False, lat.get("p99"))
        add("ingress", row, "server CPU µs/request", "µs", False, x.get("server_cpu_us_per_request"))
        add("ingress", row, "Redis CPU µs/request", "µs", False, x.get("redis_cpu_us_per_request"))
        add("ingress", row, "RSS MB", "MB", False, (x.get("server_memory_kb") or {}).get("rss_kb", 0) / 1024 or None)
    for x in (run.get("delivery") or {}).get("runs") or []:
        if not isinstance(x, dict) or x.get("skipped") or "label" not in x:
            continue
        row = str(x["label"])
        r2d = x.get("receipt_to_delivered_ms") or {}
        add("delivery", row, "deliveries/s", "/s", True, x.get("deliveries_per_s"))
        add("delivery", row, "per worker", "/s", True, x.get("deliveries_per_s_per_worker"))
        add("delivery", row, "per endpoint", "/s", True, x.get("per_endpoint_per_s"))
        add("delivery", row, "offered notifications/s", "/s", None, x.get("offered_per_s"))
        add(
            "delivery",
            row,
            "CPU µs/delivery",
            "µs",
            False,
            x.get("worker_cpu_us_per_delivery", x.get("client_cpu_us_per_delivery")),
        )
        add("delivery", row, "r2d p50 ms", "ms", False, r2d.get("p50"))
        add("delivery", row, "r2d p99 ms", "ms", False, r2d.get("p99"))
        # the held-back run (bench/throttle.py): what the worker spends while an endpoint waits for its limit
        add("delivery", row, "worker CPU %", "%", False, x.get("worker_cpu_pct"))
    cost = run.get("cost") or {}
    if cost:
        for label, key in (("relay serve RSS MB", "serve_memory_kb"), ("relay worker RSS MB", "worker_memory_kb")):
            add("cost", label, "value", "MB", False, ((cost.get(key) or {}).get("rss_kb") or 0) / 1024 or None)
        for label, key, unit in (
            ("Redis bytes per stored notification", "redis_bytes_per_notification", "B"),
            ("Redis bytes per delivery record", "redis_bytes_per_delivery", "B"),
            ("Redis bytes per notification delivered to 8", "redis_bytes_per_notification_delivered", "B"),
            ("Redis CPU µs per notification (ingest)", "redis_cpu_us_per_notification_ingest", "µs"),
            ("Redis CPU µs per delivery", "redis_cpu_us_per_delivery", "µs"),
        ):
            add("cost", label, "value", unit, False, cost.get(key))
    reads = run.get("reads") or {}
    if reads:
        sizes = [str(n) for n in reads.get("sizes") or []]
        ratios = reads.get("ratios") or {}
        for name in (reads.get("at") or {}).get(sizes[-1] if sizes else "", {}).get("ms", {}):
            for size in sizes:
                add("reads", name, f"ms at {int(size):,}", "ms", False, reads["at"][size]["ms"].get(name))
            add("reads", name, "growth", "x", False, (ratios.get("growth") or {}).get(name))
            add("reads", name, "÷ detail", "x", False, (ratios.get("over_detail") or {}).get(name))
        for size in sizes:
            add(
                "reads",
                "SLOWLOG: commands >= 10 ms while reading (a count)",
                f"ms at {int(size):,}",
                "x",
                False,
                reads["at"][size]["slowlog"]["count"],
            )
    mem = run.get("memory") or {}
    if mem:
        # bytes per notification by key family (MEMORY USAGE), then Redis µs per delivery by command
        add(
            "memory",
            "INFO used_memory delta",
            "B/notification",
            "B",
            False,
            mem.get("redis_bytes_per_notification_delivered"),
        )
        add(
            "memory",
            "MEMORY USAGE, every key",
            "B/notification",
            "B",
            False,
            mem.get("memory_usage_bytes_per_notification"),
        )
        for row in mem.get("key_families") or []:
            add("memory", str(row.get("family")), "B/notification", "B", False, row.get("bytes_per_notification"))
            add("memory", str(row.get("family")), "keys/notification", "x", False, row.get("keys_per_notification"))
        add("redis_cpu", "used_cpu per delivery", "µs/delivery", "µs", False, mem.get("redis_cpu_us_per_delivery"))
        for row in mem.get("redis_commands_per_delivery") or []:
            name = str(row.get("command"))
            add("redis_cpu", name, "calls/delivery", "x", False, row.get("calls_per_delivery"))
            add("redis_cpu", name, "µs/call", "µs", False, row.get("usec_per_call"))
            add("redis_cpu", name, "µs/delivery", "µs", False, row.get("usec_per_delivery"))
    return out


@dataclass(frozen=True)
class Spread:
    table: str
    row: str
    column: str
    unit: str
    higher_is_better: bool | None
    values: list[float]

    @property
    def median(self) -> float:
        return float(statistics.median(self.values))

    def as_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "row": self.row,
            "column": self.column,
            "unit": self.unit,
            "median": round(self.median, 3),
            "min": min(self.values),
            "max": max(self.values),
            "values": self.values,
        }


def summarize(runs: Iterable[dict[str, Any]]) -> dict[str, Spread]:
    """Each figure's values over the runs that measured it, in first-seen order."""
    out: dict[str, Spread] = {}
    for run in runs:
        for f in figures(run):
            if f.id not in out:
                out[f.id] = Spread(f.table, f.row, f.column, f.unit, f.higher_is_better, [])
            out[f.id].values.append(f.value)
    return out


def summarize_targets(per_run: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per target: the median measured over the runs, PASS if the median meets the goal."""
    rows: dict[str, dict[str, Any]] = {}
    for targets in per_run:
        for t in targets:
            row = rows.setdefault(
                t["target"],
                {
                    "target": t["target"],
                    "goal": t["goal"],
                    "op": t.get("op"),
                    "threshold": t.get("threshold"),
                    "values": [],
                    "results": [],
                },
            )
            if t.get("measured") is not None:
                row["values"].append(float(t["measured"]))
            row["results"].append(t["result"])
    out = []
    for row in rows.values():
        values, results = row.pop("values"), row.pop("results")
        if not values:
            out.append({**row, "measured": None, "result": "n/a", "runs": len(results)})
            continue
        median = round(float(statistics.median(values)), 3)
        met = median >= row["threshold"] if row["op"] == ">=" else median <= row["threshold"]
        # a run that missed for another reason (errors, incomplete) counts against the median too
        result = "PASS" if met and results.count("PASS") * 2 > len(results) else "MISS"
        out.append(
            {
                **row,
                "measured": median,
                "min": min(values),
                "max": max(values),
                "result": result,
                "runs": len(results),
                "passed": f"{results.count('PASS')}/{len(results)}",
            }
        )
    return out


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "x":
        return f"{value:.2f}"
    if unit == "ms" and abs(value) < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def cell(s: Spread | None) -> str:
    if s is None:
        return "–"
    lo, hi = fmt(min(s.values), s.unit), fmt(max(s.values), s.unit)
    if lo == hi:  # one run, or runs that agree to the digits shown
        return fmt(s.median, s.unit)
    return f"{fmt(s.median, s.unit)} ({lo}–{hi})"


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    return "\n".join(
        ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers), *("| " + " | ".join(r) + " |" for r in rows)]
    )


def _tables(spreads: dict[str, Spread]) -> dict[str, tuple[list[str], list[str]]]:
    """table -> (rows, columns), each in first-seen order."""
    out: dict[str, tuple[list[str], list[str]]] = {}
    for s in spreads.values():
        rows, cols = out.setdefault(s.table, ([], []))
        if s.row not in rows:
            rows.append(s.row)
        if s.column not in cols:
            cols.append(s.column)
    return out


TABLE_TITLES = {
    "ingress": "ingress, {connections} connections, {unique}signed 1.5 KB IPNs",
    "delivery": "delivery to 8 endpoints",
    "cost": "cost",
    "memory": "Redis memory per notification delivered to 8 endpoints, by key family (MEMORY USAGE)",
    "reads": "operator reads, page of 50, notifications pending to 8 endpoints (÷ detail: API reads over the API's)",
    "redis_cpu": "Redis CPU per delivery (INFO commandstats; a script's µs include its commands')",
}


def markdown(doc: dict[str, Any]) -> str:
    """The tables of a results file as markdown, each cell the median (min–max) over its runs."""
    runs = runs_of(doc)
    spreads = summarize(runs)
    machine = doc.get("machine") or {}
    opts = doc.get("options") or {}
    code = (machine.get("code") or {}).get("commit", "unknown")
    parts = [
        f"Measured at commit `{code}`, {len(runs)} run{'s' if len(runs) != 1 else ''}"
        + (" (each cell: median (min–max))" if len(runs) > 1 else "")
        + f": {machine.get('cores', '?')} cores ({machine.get('cpu', '?')}), {machine.get('memory_gb', '?')} GB,"
        f" Python {machine.get('python', '?')}, Redis {machine.get('redis', '?')}; {opts.get('duration', '?')} s"
        " per load" + (" (quick)" if opts.get("quick") else "") + "." + _busy_note(runs)
    ]
    for table, (rows, cols) in _tables(spreads).items():
        # schema 1 benches repeated every 20th ingress body
        title = TABLE_TITLES.get(table, table).format(
            connections=opts.get("connections", "?"), unique="unique " if doc.get("schema", 1) >= 2 else ""
        )
        parts.append(
            _md_table([title, *cols], [[row, *(cell(spreads.get(f"{table}|{row}|{c}")) for c in cols)] for row in rows])
        )
    targets = doc.get("targets") or []
    if targets:
        parts.append(
            _md_table(
                ["target", "measured", "goal", "result"],
                [
                    [
                        t["target"],
                        _target_cell(t),
                        str(t["goal"]),
                        str(t["result"]) + (f" ({t['passed']} runs)" if t.get("runs", 1) > 1 and "passed" in t else ""),
                    ]
                    for t in targets
                ],
            )
        )
    return "\n\n".join(parts) + "\n"


def _busy_note(runs: list[dict[str, Any]]) -> str:
    """How many measurements other jobs disturbed (the tables' WARNING lines, counted)."""
    measured = [
        x
        for run in runs
        for x in [*((run.get("ingress") or {}).values()), *((run.get("delivery") or {}).get("runs") or [])]
        if isinstance(x, dict) and isinstance(x.get("cpu_pct"), dict)
    ]
    busy = sum(1 for x in measured if float(x["cpu_pct"].get("other", 0.0)) > QUIET_PCT)
    if not busy:
        return ""
    return (
        f" Other jobs on the machine used more than {QUIET_PCT:g} % of a core during {busy} of the"
        f" {len(measured)} measurements: their throughputs and latencies are low."
    )


def _target_cell(t: dict[str, Any]) -> str:
    if t.get("measured") is None:
        return "–"
    text = f"{t['measured']:g}"
    if t.get("runs", 1) > 1 and "min" in t:
        text += f" ({t['min']:g}–{t['max']:g})"
    return text


def _verdict(s_old: Spread, s_new: Spread) -> str:
    if s_old.higher_is_better is None or s_old.median == 0:
        return ""
    change = s_new.median / s_old.median - 1
    if abs(change) < NOISE:
        return ""
    return "better" if (change > 0) == s_old.higher_is_better else "worse"


def _describe(doc: dict[str, Any], name: str) -> str:
    machine = doc.get("machine") or {}
    opts = doc.get("options") or {}
    n = len(runs_of(doc))
    return (
        f"{name}: {doc.get('started_at', '?')}, commit {(machine.get('code') or {}).get('commit', '?')}, "
        f"schema {doc.get('schema', 1)}, {n} run{'s' if n != 1 else ''}, duration {opts.get('duration', '?')} s"
        + (" (quick)" if opts.get("quick") else "")
        + f", {machine.get('cores', '?')} cores"
    )


def compare(old: dict[str, Any], new: dict[str, Any]) -> list[list[str]]:
    """Rows (figure, old, new, new/old, new - old, better/worse) for every figure of either file."""
    a, b = summarize(runs_of(old)), summarize(runs_of(new))
    ids = list(b)
    old_ids = list(a)
    for n, i in enumerate(old_ids):  # a figure only the old file has goes after its old neighbour
        if i not in ids:
            prev = next((old_ids[j] for j in range(n - 1, -1, -1) if old_ids[j] in ids), None)
            ids.insert(ids.index(prev) + 1 if prev else 0, i)
    rows = []
    for i in ids:
        s_old, s_new = a.get(i), b.get(i)
        s = s_new or s_old
        assert s is not None
        ratio = delta = verdict = ""
        if s_old is not None and s_new is not None:
            if s_old.median:
                ratio = f"{s_new.median / s_old.median:.2f}"
            d = s_new.median - s_old.median
            delta = ("+" if d > 0 else "") + fmt(d, s.unit)
            verdict = _verdict(s_old, s_new)
        rows.append([f"{s.table}: {s.row} · {s.column}", cell(s_old), cell(s_new), ratio, delta, verdict])
    return rows


def compare_text(old: dict[str, Any], new: dict[str, Any], old_name: str, new_name: str) -> str:
    lines = [_describe(old, f"OLD {old_name}"), _describe(new, f"NEW {new_name}")]
    mo, mn = old.get("machine") or {}, new.get("machine") or {}
    if (mo.get("cpu"), mo.get("cores")) != (mn.get("cpu"), mn.get("cores")):
        lines.append("note: the two files come from different machines; their throughputs do not compare")
    oo, on = old.get("options") or {}, new.get("options") or {}
    differ = [k for k in ("duration", "connections", "notifications", "quick") if oo.get(k) != on.get(k)]
    if differ:
        lines.append("note: options differ: " + ", ".join(f"{k} {oo.get(k)} vs {on.get(k)}" for k in differ))
    rows = compare(old, new)
    if not rows:
        return "\n".join([*lines, "no figures in either file"])
    lines += [
        "",
        report.table(["figure", "old", "new", "new/old", "new - old", f"(beyond ±{NOISE:.0%})"], rows),
        "",
        "Cells are medians (min–max) over a file's runs; – : the figure is in only one file.",
    ]
    return "\n".join(lines)

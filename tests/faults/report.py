"""Print the docs/reliability.md table from a results file written by the fault suite.

    RELAY_SOAK=1 RELAY_FAULTS_REPORT=.relay/faults.jsonl python -m pytest -q tests/faults
    python -m tests.faults.report .relay/faults.jsonl [--mode soak|ci]

The latest line of each scenario (of the chosen mode) makes its row.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

COLUMNS = (
    "scenario",
    "load held",
    "faults injected",
    "inputs tried",
    "acknowledged",
    "delivered",
    "lost",
    "duplicated",
    "notes",
    "reproduce",
)


def rows(lines: list[dict[str, Any]], mode: str) -> list[list[str]]:
    latest: dict[str, dict[str, Any]] = {}
    for doc in lines:
        if doc.get("mode") == mode:
            latest[doc["scenario"]] = doc
    out = []
    for name in sorted(latest, key=lambda s: (s.split(" ", 1)[0].zfill(3), s)):
        d = latest[name]
        delivered = f"{d['delivered']}/{d['expected']}" if d["expected"] else "n/a"
        extra = d.get("extra") or {}
        notes = "; ".join(f"{_NOTES[key]}: {_plain(extra[key])}" for key in _NOTES if key in extra)
        out.append(
            [
                name,
                d["load"],
                d["faults"],
                d["inputs"],
                str(d["acknowledged"]),
                delivered,
                str(d["lost"]),
                str(d["duplicated"]),
                notes,
                f"`{d['command']}`",
            ]
        )
    return out


_NOTES = {
    "answered_503": "503s answered",
    "kills": "kills",
    "outage_s": "outage s",
    "settle_s": "settled in s",
    "requests": "requests",
    "classes": "answers",
    "failed_attempts": "failed attempts",
    "longest_failed_attempt_ms": "longest failed attempt ms",
    "stored_from_rejected": "stored from rejected",
    "worker_restart_delays_s": "worker restart delays s",
}


def _plain(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_plain(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "/".join(_plain(v) for v in value)
    return str(value)


def table(lines: list[dict[str, Any]], mode: str) -> str:
    body = rows(lines, mode)
    cells = [list(COLUMNS), ["---"] * len(COLUMNS), *body]
    return "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    parser.add_argument("--mode", choices=("soak", "ci"), default="soak")
    ns = parser.parse_args(argv)
    lines = [json.loads(line) for line in ns.results.read_text(encoding="utf-8").splitlines() if line.strip()]
    print(table(lines, ns.mode))
    return 0


if __name__ == "__main__":
    sys.exit(main())

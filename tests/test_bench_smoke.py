"""The benchmark suite starts, measures the ingress end to end and writes its JSON (no speed is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import ingress

pytestmark = pytest.mark.slow  # left out of make check's fast tier (make test runs it)

ROOT = Path(__file__).resolve().parents[1]


def test_quick_ingress_bench_runs_and_writes_its_results(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "ingress", "--duration", "1", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert {"schema", "started_at", "options", "machine", "runs", "summary", "targets", "elapsed_s"} <= doc.keys()
    assert doc["schema"] == 2 and len(doc["runs"]) == 1
    assert doc["options"]["quick"] is True and doc["scenarios"] == ["ingress"]
    assert {"cpu", "cores", "python", "redis"} <= doc["machine"].keys()

    ingress = doc["runs"][0]["ingress"]
    assert {"relay", "const", "naive", "ratios"} <= ingress.keys()
    relay = ingress["relay"]
    assert relay["ok"] > 0, relay
    assert relay["errors"] == 0, relay["error_kinds"]
    assert relay["stored"] >= relay["ok_total"]  # every body unique: every one acknowledged was stored
    for target in ("relay", "const", "naive"):
        assert {"rate_per_s", "latency_ms", "cpu_pct", "errors", "server_cpu_us_per_request"} <= ingress[target].keys()
        assert {"p50", "p99", "max"} <= ingress[target]["latency_ms"].keys()
    assert {"relay_over_const", "relay_over_naive"} <= ingress["ratios"].keys()
    assert doc["summary"]["ingress|relay serve|notifications/s"]["values"] == [relay["rate_per_s"]]
    assert {t["result"] for t in doc["targets"]} <= {"PASS", "MISS", "n/a"}
    assert "relay serve" in proc.stdout and "relay/(b)" in proc.stdout


def test_every_run_measures_the_servers_in_an_order_turned_by_one() -> None:
    servers = ["relay", "relay_p2", "const", "naive"]
    orders = [ingress.turned(servers, run) for run in range(5)]
    assert orders[:4] == [
        ["relay", "relay_p2", "const", "naive"],
        ["relay_p2", "const", "naive", "relay"],
        ["const", "naive", "relay", "relay_p2"],
        ["naive", "relay", "relay_p2", "const"],
    ]
    assert orders[4] == orders[0]

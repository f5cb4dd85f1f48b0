"""The relay's log lines: JSON when not on a terminal, one object a line, the fields as logged."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import structlog

from config.logs import iso_utc

SCRIPT = """
import structlog
from config.logs import configure_logging
configure_logging("json")
log = structlog.get_logger()
log.info("notification_accepted", source="default", channel="ipn", nid="ipn_0", outcome="stored", seq=None,
         algo="sha3-256", duration_ms=1.25, name="Jürgen Müller – 東京", obj=object(), secret="s3cret")
log.warning("second", n=2)
"""


def test_json_lines_are_what_json_dumps_writes() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True)
    first, second = done.stderr.splitlines()
    line = json.loads(first)
    # the renderer's bytes are json.dumps's (its separators, ASCII escapes), keys in the order logged
    assert first == json.dumps(line)
    assert list(line)[:8] == ["source", "channel", "nid", "outcome", "seq", "algo", "duration_ms", "name"]
    assert line["name"] == "Jürgen Müller – 東京" and "\\u00fc" in first
    assert line["obj"].startswith("<object object at ")  # structlog's fallback: the repr
    assert line["secret"] == "**********"
    assert (line["event"], line["level"], line["seq"]) == ("notification_accepted", "info", None)
    assert line["timestamp"].endswith("Z")
    assert json.loads(second)["n"] == 2


def test_timestamps_are_what_structlogs_iso_utc_stamper_writes() -> None:
    # the relay's stamper formats the date and time of day once a second; the text is datetime's
    seconds = [0, 1, 59, 60, 86_399, 86_400, 951_782_400, 1_765_000_000, 4_102_444_799]
    cases = [s * 10**9 + frac for s in seconds for frac in (0, 1, 999, 1_000, 123_456_789, 999_999_999)]
    cases += [random.randrange(0, 4 * 10**18) for _ in range(20_000)]
    for ns in sorted(cases) + cases:
        second, micros = divmod(ns // 1000, 1_000_000)
        at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=second, microseconds=micros)
        assert iso_utc(ns) == at.isoformat().replace("+00:00", "Z")
    # and the clock is the one structlog's stamper reads (datetime.now is time.time_ns, floored to µs)
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    before = stamp(None, "info", {})["timestamp"]
    ours = iso_utc(time.time_ns())
    after = stamp(None, "info", {})["timestamp"]
    assert datetime.fromisoformat(before) <= datetime.fromisoformat(ours) <= datetime.fromisoformat(after)

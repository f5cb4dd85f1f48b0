"""The relay's log lines: JSON when not on a terminal, one object a line, the fields as logged."""

from __future__ import annotations

import json
import subprocess
import sys

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

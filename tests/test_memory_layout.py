"""What issue 26 changed in the stored records to use less Redis memory, and that readers take both the
old and the new shapes."""

from __future__ import annotations

import json

from relay.store.detail import attempt_record, delivery_record
from workers.attempt import compact

FULL = {
    "n": 2,
    "at": 1_765_000_000_000,
    "ms": 0,
    "outcome": "retry",
    "status": None,
    "error": "timeout",
    "message": None,
    "response": "",
    "next": 1_765_000_060_000,
    "resend": False,
}


def test_a_compact_attempt_record_leaves_out_only_the_fields_that_say_nothing() -> None:
    stored = json.loads(compact(FULL))
    # 0 ms is a measurement, kept; null, false and "" are left out
    assert stored == {
        "n": 2,
        "at": 1_765_000_000_000,
        "ms": 0,
        "outcome": "retry",
        "error": "timeout",
        "next": 1_765_000_060_000,
    }
    assert len(compact(FULL)) < len(json.dumps(FULL, separators=(",", ":"))) - 40


def test_old_full_records_and_compact_ones_read_the_same() -> None:
    old = json.dumps(FULL).encode()
    new = compact(FULL).encode()
    assert attempt_record(old) == attempt_record(new) == FULL
    d = {"state": "retrying", "attempts": "2", "next": "1765000060000", "updated": "1765000000000"}
    old_doc, new_doc = delivery_record(d, [old], None), delivery_record(d, [new], None)
    assert old_doc == new_doc
    [a] = new_doc["attempt_log"]
    assert a["resend"] is False and a["status"] is None and a["message"] is None and a["response"] == ""
    assert a["next"] == "2025-12-06T05:47:40.000Z"

"""bench.profile.summarize: py-spy's collapsed stacks grouped as docs/benchmarks.md's tables read them."""

from __future__ import annotations

from bench.profile import summarize, text

STACKS = [
    # a leaf in relay code is charged to its own group
    "<module> (relay/__main__.py);receive (relay/web/ingress.py);parse_form (relay/protocol.py) 30",
    # C code (no file of a group) is charged to the nearest caller that has one
    "<module> (relay/__main__.py);receive (relay/web/ingress.py);digest (<built-in>) 10",
    "<module> (relay/__main__.py);Store._write (relay/store/ingest.py);pack (redis/asyncio/connection.py) 20",
    "<module> (relay/__main__.py);msg (config/logs.py) 15",
    "<module> (relay/__main__.py);run (asyncio/runners.py) 25",
    "not a stack line",
    # a thread-pool thread waiting on its queue: idle, though py-spy samples it as running
    "Thread._bootstrap (threading.py);Thread.run (threading.py);_worker (concurrent/futures/thread.py) 40",
]


def test_samples_are_charged_to_groups_by_leaf_or_nearest_caller() -> None:
    p = summarize(STACKS)
    assert p.samples == 100
    groups = dict(p.by_group)
    assert groups == {
        "protocol: parse, HMAC, receipt": 30,
        "relay: ingress and store": 10,  # digest's caller, receive
        "Redis client (redis-py, hiredis)": 20,
        "logging (structlog, stdlib logging)": 15,
        "event loop (asyncio, uvloop)": 25,
    }
    assert dict(p.self_top)["parse_form (relay/protocol.py)"] == 30
    inclusive = dict(p.total_top)
    assert inclusive["<module> (relay/__main__.py)"] == 100
    assert inclusive["receive (relay/web/ingress.py)"] == 40


def test_the_table_converts_shares_to_microseconds() -> None:
    out = text(summarize(STACKS), 400.0, "request")
    assert "100 busy samples, ≈ µs per request at 400 µs" in out
    assert "protocol: parse, HMAC, receipt" in out and "30.0%" in out and "120" in out

"""The short form of the compressed soak (tests/soak.py): under steady load for many retention
periods, Redis's used_memory and key count level off."""

from __future__ import annotations

from pathlib import Path

from tests.soak import run


async def test_memory_and_keys_level_off_under_steady_load(tmp_path: Path) -> None:
    soak = await run(duration=45, retention=3, rate=10, workdir=tmp_path)
    summary = soak.summary()
    # the load really ran, through every retention period of the last third (how much a machine
    # manages is its own business: a slow one posts less, and the bound must still hold)
    last_third = [t for t in soak.accepted_at if t >= 30]
    assert {int(t // 3) for t in last_third} >= set(range(10, 15)), summary
    assert soak.growth("used_memory") < 0.02, summary
    assert soak.growth("keys") < 0.02, summary

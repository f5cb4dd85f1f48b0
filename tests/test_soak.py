"""The short form of the compressed soak (tests/soak.py): under steady load for many retention
periods, Redis's used_memory and key count level off."""

from __future__ import annotations

from pathlib import Path

from tests.soak import run


async def test_memory_and_keys_level_off_under_steady_load(tmp_path: Path) -> None:
    soak = await run(duration=45, retention=3, rate=10, workdir=tmp_path)
    summary = soak.summary()
    assert soak.posted > 0.9 * 45 * 10, summary  # the load really ran
    assert soak.growth("used_memory") < 0.02, summary
    assert soak.growth("keys") < 0.02, summary

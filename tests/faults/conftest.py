"""The fault suite: short versions under plain ``pytest``, long ones with ``RELAY_SOAK=1`` (``make soak``).

Each scenario prints a one-line summary; they are repeated at the end of the session, and appended as
JSON lines to the file named by ``RELAY_FAULTS_REPORT`` when it is set.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.faults.harness import RESULTS, SOAK, Cluster


def pytest_report_header(config: pytest.Config) -> str:
    return f"relay fault suite: {'soak (RELAY_SOAK=1)' if SOAK else 'short CI versions (RELAY_SOAK=1 for soak)'}"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if RESULTS:
        terminalreporter.section("fault scenarios: acknowledged / delivered / lost / duplicated")
        for summary in RESULTS:
            terminalreporter.write_line(summary.line())


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Cluster]]]:
    """Factory of clusters (redis-server + relay processes + endpoints); all stopped at the end."""
    made: list[Cluster] = []
    async with aiohttp.ClientSession() as session:

        async def make(**kwargs: Any) -> Cluster:
            where = tmp_path / f"cluster{len(made)}"
            where.mkdir()
            c = Cluster(where, session=session, **kwargs)
            made.append(c)
            return c

        try:
            yield make
        finally:
            for c in made:
                await c.close()

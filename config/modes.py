"""An endpoint's ``mode``: how its deliveries may overlap (docs/configuration.md).

- ``serial``: one request in flight, in order of receipt; a delivery waiting to retry holds back all.
- ``concurrent``: up to ``max_in_flight`` at once, in any order.
- ``per_order``: one request in flight per order (IPN REFNO, LCN LICENSE_CODE, INS sale_id, the
  notification's ``ref``), in order of receipt within it; different orders up to ``max_in_flight``.

``rate_limit`` (requests per second, fractions allowed) and ``rate_burst`` (how many may start at
once, default 1) limit the pace of any mode, across all workers (workers/lua/rate.lua).

``concurrent = true/false`` is the older spelling of ``concurrent`` / ``serial`` and stays accepted;
given beside a ``mode`` that says otherwise it is an error, never a silent choice of one of them.
"""

from __future__ import annotations

from typing import Literal

Mode = Literal["serial", "concurrent", "per_order"]
MODES: tuple[Mode, ...] = ("serial", "concurrent", "per_order")
# what ``concurrent`` means as a mode
_ALIAS: dict[bool, Mode] = {True: "concurrent", False: "serial"}


def resolve(mode: Mode | None, concurrent: bool | None) -> Mode:
    """The endpoint's mode from ``mode`` and the alias ``concurrent``; ValueError when they disagree."""
    if mode is None:
        return _ALIAS[bool(concurrent)]
    if concurrent is not None and _ALIAS[concurrent] != mode:
        alias = "true" if concurrent else "false"
        raise ValueError(
            f"mode = {mode!r} and concurrent = {alias} disagree (concurrent = {alias} means "
            f"mode = {_ALIAS[concurrent]!r}); keep only mode"
        )
    return mode


def check_rate(rate_limit: float | None, rate_burst: int | None) -> None:
    """rate_burst alone would limit nothing: an error rather than a setting silently ignored."""
    if rate_burst is not None and rate_limit is None:
        raise ValueError(f"rate_burst = {rate_burst} needs rate_limit (requests per second), e.g. rate_limit = 20")

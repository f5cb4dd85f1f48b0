"""Times as the relay shows them: one place, so a field means the same on every surface.

Epoch milliseconds are what Redis keeps (on its own clock); people and programs read ISO 8601 UTC.
Two precisions, named apart because both are shown: ``iso_seconds`` for health, alerts and
reconciliation (incident starts, last-seen times), ``iso_millis`` for a notification's and a delivery's
own record (receipt, attempts), where order within a second matters.
"""

from __future__ import annotations

from datetime import UTC, datetime


def iso_seconds(ms: int | float | None) -> str | None:
    """``2024-01-02T03:00:11Z``; None stays None."""
    if ms is None:
        return None
    return datetime.fromtimestamp(int(ms) / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def iso_millis(ms: int | str | bytes | None) -> str | None:
    """``2024-01-02T03:00:11.123Z``, from a number or Redis's bytes; None for a missing or unreadable value."""
    if ms is None or ms == "" or ms == b"":
        return None
    try:
        when = datetime.fromtimestamp(int(ms) / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def span(ms: int) -> str:
    """How long an incident lasted, coarse: ``2 h 5 min``, ``12 min``, ``40 s``."""
    s = max(0, ms // 1000)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60} min"
    if s >= 60:
        return f"{s // 60} min"
    return f"{s} s"

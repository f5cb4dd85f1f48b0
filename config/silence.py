"""A source's ``expect_within_hours`` against ``delivery.retention_days``.

source_silent reads the newest notification in the source's index, which the sweeper trims to the
retention: a watch longer than it would find the index empty once the last notification expired, and
count from the start of the watch instead, raising source_silent about a source that was heard from
within its N hours (a shop renewing subscriptions monthly, ``expect_within_hours = 840`` with the
default 30 days). docs/operations.md, "Thresholds".
"""

from __future__ import annotations

from config.wording import item


def retention_problems(retention_days: float, sources: list[tuple[str, float | None]]) -> list[str]:
    problems = []
    for i, (name, hours) in enumerate(sources):
        if hours is not None and hours >= retention_days * 24:
            problems.append(
                f"{item('sources', i, name)}: expect_within_hours = {hours:g} must be shorter than "
                f"delivery.retention_days (now {retention_days:g}, {retention_days * 24:g} h): the "
                "last notification would expire before the source counts as silent"
            )
    return problems

"""docs/operations.md names what the relay writes: every log event in "Log events" (an operator who meets
``claim_failed`` or ``admin_auth_failed`` in the journal finds what it means; 46 of 86 were named nowhere
in that section), and every key of the health report in "relay health"."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}
EVENT = re.compile(r"[a-z][a-z0-9_]+")


def logged_events() -> dict[str, str]:
    """event -> where, for every ``<...log...>.<level>("event", ...)`` call in the product's code."""
    found: dict[str, str] = {}
    for package in ("relay", "workers", "config"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                receiver = node.func.value
                name = receiver.id if isinstance(receiver, ast.Name) else getattr(receiver, "attr", "")
                first = node.args[0] if node.args else None
                if (
                    node.func.attr in LEVELS
                    and "log" in name.lower()
                    and isinstance(first, ast.Constant)
                    and isinstance(first.value, str)
                    and EVENT.fullmatch(first.value)
                ):
                    found.setdefault(first.value, f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_logged_event_is_in_the_log_events_section() -> None:
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    start = text.index("## Log events")
    section = text[start : text.index("\n## ", start + 1)]
    events = logged_events()
    assert len(events) > 50, events  # the scan finds the relay's events
    missing = {event: where for event, where in events.items() if f"`{event}`" not in section}
    assert not missing, f"log events not in docs/operations.md, 'Log events': {missing}"


async def test_every_key_of_the_health_report_is_in_the_relay_health_section(make_settings: Any, redis: Any) -> None:
    """operations.md, "relay health", lists the report's keys (``relay health --json``, ``GET /api/health``):
    ``config`` (whether the live processes run one configuration) and ``reconcile`` at the top, and
    ``cancelled``, ``paused_deliveries``, ``paused_age_s`` and ``url_host`` per endpoint, were in the report
    and nowhere in it."""
    from relay.store.connection import clock_ms
    from relay.store.stats import health_report

    settings = make_settings(endpoints=[{"name": "a", "url": "http://127.0.0.1:9/h"}])
    report = await health_report(redis, settings, await clock_ms(redis))
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    start = text.index("### `relay health`")
    section = text[start : text.index("\n## ", start)]
    keys = {*report, *report["endpoints"]["a"], *report["sources"]["default"]}
    missing = sorted(key for key in keys if f"`{key}`" not in section)
    assert not missing, f"health report keys not in docs/operations.md, 'relay health': {missing}"


def test_the_api_docs_state_parameter_lists_every_state() -> None:
    """docs/api.md's `state` row listed six states; the API takes eight (paused and cancelled too)."""
    from relay import constants as k

    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    [row] = [line for line in text.splitlines() if line.startswith("| `state` | a delivery state")]
    assert not [state for state in k.STATES if f"`{state}`" not in row], row


def test_the_send_test_example_names_the_one_secret_an_ipn_is_signed_with() -> None:
    """The example listed every variable of .relay/dev-secrets.json, as send-test once did (it names only
    the one that signs the test now: tests/test_cli_convention.py)."""
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    notes = [line for line in text.splitlines() if line.startswith("send-test: using the development secrets")]
    assert notes == ["send-test: using the development secrets in .relay/dev-secrets.json for TCO_SECRET_KEY"], notes

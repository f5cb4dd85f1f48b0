"""Which endpoints get a notification, and why a filtered one is skipped."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from config.match import rejects
from config.settings import Endpoint

# the event document of the notification being routed, built only if an endpoint has a ``match``
# (None: the body cannot be parsed, so no ``match`` can pass)
Document = Callable[[], Mapping[str, Any] | None]

Route = tuple[str, str, str]  # endpoint name, mode (serial|concurrent|per_order|skip), skip reason


def route(
    endpoints: Iterable[Endpoint],
    *,
    source: str,
    channel: str,
    mtype: str,
    status: str,
    test: bool,
    etype: str = "",
    only: frozenset[str] | None = None,
    document: Document | None = None,
) -> list[Route]:
    routes: list[Route] = []
    built: list[Mapping[str, Any] | None] = []  # the document, built at most once for every endpoint
    for ep in endpoints:
        if source not in ep.sources or channel not in ep.channels:
            continue
        if only is not None and ep.name not in only:
            continue
        reason = ""
        if only is not None:
            pass  # an operator named this endpoint (a resend): their choice overrides its filters
        elif ep.event_types is not None and etype not in ep.event_types:
            reason = f"event type {etype or '(none)'} is not in event_types"
        elif channel == "ins" and ep.message_types is not None and mtype not in ep.message_types:
            reason = f"message_type {mtype or '(none)'} is not in message_types"
        elif channel == "ipn" and ep.order_statuses is not None and status not in ep.order_statuses:
            reason = f"ORDERSTATUS {status or '(none)'} is not in order_statuses"
        elif ep.test_orders is False and test:
            reason = "test order, and test_orders = false"
        elif ep.test_orders is True and not test:
            reason = "not a test order, and test_orders = true"
        elif ep.match is not None:
            if not built:
                built.append(document() if document is not None else None)
            doc = built[0]
            why = rejects(ep.match, doc) if doc is not None else "match: the notification has no event document"
            reason = why or ""
        mode = "skip" if reason else ep.mode
        routes.append((ep.name, mode, reason))
    return routes

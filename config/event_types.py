"""The event type vocabulary of ``format = "event"`` (relay/events/ maps 2Checkout's values onto it).

It lives in ``config`` because an endpoint's ``event_types`` list is checked against it when the
settings load, and ``config`` imports nothing of ``relay`` (the import contracts).
"""

from __future__ import annotations

UNMAPPED = "2checkout.unmapped"

EVENT_TYPES: tuple[str, ...] = (
    "order.created",
    "order.authorized",
    "order.completed",
    "order.refunded",
    "order.reversed",
    "order.chargeback",
    "order.canceled",
    "order.shipping_updated",
    "subscription.renewed",
    "subscription.renewal_failed",
    "subscription.stopped",
    "subscription.completed",
    "subscription.restarted",
    "license.updated",
    "license.expired",
    "license.past_due",
    "license.canceled",
    "fraud.status_changed",
    UNMAPPED,
)

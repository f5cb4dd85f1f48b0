"""Prometheus metrics of the ingress process. Delivery metrics live in Redis (see relay/web/delivery_metrics.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from relay.constants import LATENCY_BUCKETS


class IngressMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.received = Counter(
            "relay_notifications_received", "Notification POSTs received", ["source", "channel"],
            registry=registry,
        )
        self.accepted = Counter(
            "relay_notifications_accepted", "Notifications stored and acknowledged (duplicate=true: a repeat)",
            ["source", "channel", "duplicate"], registry=registry,
        )
        self.rejected = Counter(
            "relay_notifications_rejected", "Notification POSTs refused, by reason",
            ["source", "channel", "reason"], registry=registry,
        )
        self.ack_latency = Histogram(
            "relay_ack_latency_seconds", "Time from request start to read receipt", ["channel"],
            buckets=LATENCY_BUCKETS, registry=registry,
        )

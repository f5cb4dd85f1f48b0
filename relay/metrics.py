"""Prometheus metrics of the ingress process. Delivery metrics live in Redis (see relay/health.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class IngressMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
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

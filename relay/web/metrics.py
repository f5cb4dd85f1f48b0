"""Prometheus metrics of the ingress process. Delivery metrics live in Redis (see relay/web/delivery_metrics.py)."""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics import MetricWrapperBase

from relay.constants import LATENCY_BUCKETS

M = TypeVar("M", bound=MetricWrapperBase)


class Children(Generic[M]):
    """A metric's labelled children, looked up once per label values: ``labels()`` takes a lock and
    builds its key on every call, which cost ~3 µs a request on the ingress's hot path. The label
    values are bounded (configured sources, three channels, fixed reason codes), and so is the cache."""

    def __init__(self, metric: M) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


class IngressMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.received = Counter(
            "relay_notifications_received",
            "Notification POSTs received",
            ["source", "channel"],
            registry=registry,
        )
        self.accepted = Counter(
            "relay_notifications_accepted",
            "Notifications stored and acknowledged (duplicate=true: a repeat)",
            ["source", "channel", "duplicate"],
            registry=registry,
        )
        self.rejected = Counter(
            "relay_notifications_rejected",
            "Notification POSTs refused, by reason",
            ["source", "channel", "reason"],
            registry=registry,
        )
        self.ack_latency = Histogram(
            "relay_ack_latency_seconds",
            "Time from request start to read receipt",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.received_for = Children(self.received)
        self.accepted_for = Children(self.accepted)
        self.rejected_for = Children(self.rejected)
        self.ack_latency_for = Children(self.ack_latency)

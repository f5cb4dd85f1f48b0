"""Prometheus metrics of the ingress process. Delivery metrics live in Redis (see relay/web/delivery_metrics.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric

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


class MembersCollector:
    """The ingress counters of every member of ``relay serve --processes N``, summed from the
    multiprocess directory, and every family this process defines that none has a sample of yet, empty.

    prometheus_client's MultiProcessCollector reads the members' files only, and a file holds samples:
    before the first refusal /metrics had no ``relay_notifications_rejected_total`` at all, where one
    process (its own registry) shows the family's HELP and TYPE with no sample. A rule or a dashboard
    over the family then saw it missing, not at nothing. ``own``: this member's registry, for the names."""

    def __init__(self, path: str, own: CollectorRegistry) -> None:
        self._summed = multiprocess.MultiProcessCollector(None, path=path)  # type: ignore[no-untyped-call]
        self._own = own

    def collect(self) -> Iterator[Metric]:
        seen: set[str] = set()
        for family in self._summed.collect():  # type: ignore[no-untyped-call]
            seen.add(family.name)
            yield family
        for family in self._own.collect():
            if family.name not in seen:  # its samples, if any, are in the files: the summed side has them
                yield Metric(family.name, family.documentation, family.type, family.unit)

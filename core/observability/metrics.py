"""Prometheus metrics: one registry per process, built in bootstrap and passed in (never the global one)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    service: str
    outbox_published: Counter
    outbox_relay_batches: Counter
    outbox_lag_seconds: Histogram
    bus_consumed: Counter
    bus_duplicates: Counter
    bus_handler_failures: Counter
    bus_retried: Counter
    bus_dead_lettered: Counter
    bus_claimed: Counter
    uow_commit_seconds: Histogram
    concurrency_conflicts: Counter
    bad_input: Counter
    _extra: dict[str, Counter | Histogram | Gauge] = field(default_factory=dict)

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        """Get or create a counter of an outer tier in this process's registry."""
        if name not in self._extra:
            self._extra[name] = Counter(name, doc, list(labels), registry=self.registry)
        metric = self._extra[name]
        assert isinstance(metric, Counter)
        return metric

    def histogram(
        self, name: str, doc: str, labels: Sequence[str] = (), buckets: Sequence[float] | None = None
    ) -> Histogram:
        if name not in self._extra:
            self._extra[name] = Histogram(
                name, doc, list(labels), registry=self.registry, buckets=tuple(buckets or _LATENCY_BUCKETS)
            )
        metric = self._extra[name]
        assert isinstance(metric, Histogram)
        return metric

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        if name not in self._extra:
            self._extra[name] = Gauge(name, doc, list(labels), registry=self.registry)
        metric = self._extra[name]
        assert isinstance(metric, Gauge)
        return metric


def build_metrics(service: str) -> Metrics:
    """A fresh registry with the kernel's metrics; tests build their own and never clash."""
    r = CollectorRegistry()
    return Metrics(
        registry=r,
        service=service,
        outbox_published=Counter("patriot_outbox_published", "Outbox rows published", ["stream"], registry=r),
        outbox_relay_batches=Counter("patriot_outbox_relay_batches", "Relay batches published", registry=r),
        outbox_lag_seconds=Histogram(
            "patriot_outbox_lag_seconds", "Commit to publish lag", registry=r, buckets=_LATENCY_BUCKETS
        ),
        bus_consumed=Counter(
            "patriot_bus_messages_consumed", "Messages applied and acked", ["stream", "consumer"], registry=r
        ),
        bus_duplicates=Counter(
            "patriot_bus_duplicates_skipped", "Redelivered messages skipped", ["consumer"], registry=r
        ),
        bus_handler_failures=Counter(
            "patriot_bus_handler_failures", "Handler failures", ["consumer", "error"], registry=r
        ),
        bus_retried=Counter("patriot_bus_messages_retried", "Messages scheduled for retry", ["consumer"], registry=r),
        bus_dead_lettered=Counter(
            "patriot_bus_dead_lettered",
            "Messages dead-lettered",
            ["stream", "consumer", "reason"],
            registry=r,
        ),
        bus_claimed=Counter(
            "patriot_bus_messages_claimed", "Messages claimed from dead consumers", ["consumer"], registry=r
        ),
        uow_commit_seconds=Histogram(
            "patriot_uow_commit_seconds", "Unit of work commit time", registry=r, buckets=_LATENCY_BUCKETS
        ),
        concurrency_conflicts=Counter(
            "patriot_concurrency_conflicts",
            "Optimistic concurrency conflicts",
            ["aggregate_type"],
            registry=r,
        ),
        bad_input=Counter("patriot_bad_input", "Rejected bad input", ["source", "reason"], registry=r),
    )


def render_metrics(metrics: Metrics) -> tuple[bytes, str]:
    """Body and content type for a /metrics endpoint."""
    return generate_latest(metrics.registry), CONTENT_TYPE_LATEST


def serve_metrics(metrics: Metrics, port: int, addr: str = "127.0.0.1") -> None:
    start_http_server(port, addr=addr, registry=metrics.registry)

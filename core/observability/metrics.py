"""Prometheus metrics: one registry per process (never the library's global one), built in bootstrap and passed in.

The kernel's own metrics are fields of :class:`Metrics`; outer tiers add theirs with ``counter`` / ``histogram`` /
``gauge``, which return the existing metric when asked for the same name twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    start_http_server,
)
from prometheus_client.metrics import MetricWrapperBase

# Commits are sub-millisecond to tens of milliseconds; default buckets (5ms..10s) would hide regressions.
UOW_COMMIT_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
OUTBOX_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_M = TypeVar("_M", bound=MetricWrapperBase)


@dataclass(frozen=True)
class Metrics:
    """The process's registry, the kernel's metrics in it, and get-or-create for outer tiers' metrics."""

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
    _by_name: dict[str, MetricWrapperBase] = field(default_factory=dict, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Asking for a kernel metric by name returns the field's object instead of a duplicate-name error.
        for value in vars(self).values():
            if isinstance(value, MetricWrapperBase):
                self._by_name[value._name] = value

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        """The counter called ``name`` (``_total`` suffix optional), created on first request."""
        return self._get_or_create(
            Counter, name.removesuffix("_total"), labels, lambda: Counter(name, doc, labels, registry=self.registry)
        )

    def histogram(
        self, name: str, doc: str, labels: Sequence[str] = (), buckets: Sequence[float] | None = None
    ) -> Histogram:
        """The histogram called ``name``, created on first request (Prometheus default buckets unless given)."""
        bucket_bounds = tuple(buckets) if buckets is not None else Histogram.DEFAULT_BUCKETS
        return self._get_or_create(
            Histogram,
            name,
            labels,
            lambda: Histogram(name, doc, labels, registry=self.registry, buckets=bucket_bounds),
        )

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        """The gauge called ``name``, created on first request."""
        return self._get_or_create(Gauge, name, labels, lambda: Gauge(name, doc, labels, registry=self.registry))

    def _get_or_create(self, kind: type[_M], key: str, labels: Sequence[str], create: Callable[[], _M]) -> _M:
        with self._lock:
            existing = self._by_name.get(key)
            if existing is None:
                metric = create()
                self._by_name[key] = metric
                return metric
        if not isinstance(existing, kind):
            raise ValueError(f"metric {key!r} already exists as a {type(existing).__name__}, not a {kind.__name__}")
        if tuple(existing._labelnames) != tuple(labels):
            raise ValueError(f"metric {key!r} already exists with labels {existing._labelnames}, not {tuple(labels)}")
        return existing


def build_metrics(service: str) -> Metrics:
    """A fresh registry with the kernel's metrics and process/GC/platform collectors; tests get isolated ones."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return Metrics(
        registry=registry,
        service=service,
        outbox_published=Counter(
            "patriot_outbox_published", "Outbox rows published to the bus", ("stream",), registry=registry
        ),
        outbox_relay_batches=Counter(
            "patriot_outbox_relay_batches", "Outbox relay batches published", registry=registry
        ),
        outbox_lag_seconds=Histogram(
            "patriot_outbox_lag_seconds",
            "Seconds from outbox commit to publish (oldest row of each batch)",
            registry=registry,
            buckets=OUTBOX_LAG_BUCKETS,
        ),
        bus_consumed=Counter(
            "patriot_bus_messages_consumed",
            "Bus messages handled and acknowledged",
            ("stream", "consumer"),
            registry=registry,
        ),
        bus_duplicates=Counter(
            "patriot_bus_duplicates_skipped",
            "Redelivered messages skipped because their consumer already processed them",
            ("consumer",),
            registry=registry,
        ),
        bus_handler_failures=Counter(
            "patriot_bus_handler_failures", "Handler exceptions", ("consumer", "error"), registry=registry
        ),
        bus_retried=Counter(
            "patriot_bus_messages_retried",
            "Messages left pending for another attempt",
            ("consumer",),
            registry=registry,
        ),
        bus_dead_lettered=Counter(
            "patriot_bus_dead_lettered",
            "Messages moved to the dead-letter stream",
            ("stream", "consumer", "reason"),
            registry=registry,
        ),
        bus_claimed=Counter(
            "patriot_bus_messages_claimed",
            "Pending messages claimed from idle consumers",
            ("consumer",),
            registry=registry,
        ),
        uow_commit_seconds=Histogram(
            "patriot_uow_commit_seconds", "Unit-of-work commit duration", registry=registry, buckets=UOW_COMMIT_BUCKETS
        ),
        concurrency_conflicts=Counter(
            "patriot_concurrency_conflicts",
            "Optimistic-concurrency conflicts on append",
            ("aggregate_type",),
            registry=registry,
        ),
        bad_input=Counter("patriot_bad_input", "Inputs rejected as malformed", ("source", "reason"), registry=registry),
    )


def render_metrics(metrics: Metrics) -> tuple[bytes, str]:
    """Body and content type for a ``/metrics`` endpoint served by the API."""
    return generate_latest(metrics.registry), CONTENT_TYPE_LATEST


def serve_metrics(metrics: Metrics, port: int, addr: str = "127.0.0.1") -> None:
    """Serve the registry on ``addr:port`` from a daemon thread, for processes without a web server of their own."""
    start_http_server(port, addr=addr, registry=metrics.registry)

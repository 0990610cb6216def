"""The API's Prometheus metrics, registered on the process registry (``/metrics``). deploy/ alert rules and the
Grafana dashboard use exactly these names."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from core.observability.metrics import Metrics

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


@dataclass(frozen=True)
class ApiMetrics:
    request_seconds: Histogram
    requests: Counter
    missing_correlation_id: Counter
    orders_placed: Counter
    orders_failed: Counter
    order_seconds: Histogram
    websocket_clients: Gauge
    rate_limited: Counter
    requests_refused: Counter


def build_api_metrics(metrics: Metrics) -> ApiMetrics:
    return ApiMetrics(
        request_seconds=metrics.histogram(
            "patriot_api_request_duration_seconds",
            "API request latency by route template",
            ("method", "route", "status"),
            LATENCY_BUCKETS,
        ),
        requests=metrics.counter("patriot_api_requests_total", "API requests", ("method", "route", "status")),
        missing_correlation_id=metrics.counter(
            "patriot_api_requests_without_correlation_id_total",
            "Requests that arrived without X-Correlation-ID (one was generated)",
        ),
        orders_placed=metrics.counter(
            "patriot_api_orders_placed_total", "Orders accepted by the order service through the API", ("order_type",)
        ),
        orders_failed=metrics.counter(
            "patriot_api_orders_failed_total", "Orders denied, rejected or timed out through the API", ("reason",)
        ),
        order_seconds=metrics.histogram(
            "patriot_api_order_duration_seconds",
            "POST /orders from request to the order service's answer",
            (),
            LATENCY_BUCKETS,
        ),
        websocket_clients=metrics.gauge("patriot_api_websocket_clients", "Open WebSocket stream connections"),
        rate_limited=metrics.counter("patriot_api_rate_limited_total", "Requests answered 429", ("scope",)),
        requests_refused=metrics.counter(
            "patriot_api_requests_refused_total",
            "Requests refused for their input: too_large (413), unstorable_text or validation (422)",
            ("reason",),
        ),
    )

"""OpenTelemetry tracing: one tracer provider per process, exporting over OTLP only when an endpoint is configured."""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Tracer


def configure_tracing(service: str, otlp_endpoint: str | None = None) -> TracerProvider:
    """Install the process's tracer provider (later calls return the installed one unchanged).

    Spans are exported only when ``otlp_endpoint`` is given; otherwise they exist just to correlate logs.
    """
    installed = trace.get_tracer_provider()
    if isinstance(installed, TracerProvider):
        return installed
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    if otlp_endpoint:
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(otlp_endpoint)))
    trace.set_tracer_provider(provider)
    # OpenTelemetry keeps the first provider set; if another thread won the race, use that one.
    winner = trace.get_tracer_provider()
    if winner is not provider and isinstance(winner, TracerProvider):
        provider.shutdown()
        return winner
    return provider


def get_tracer(name: str) -> Tracer:
    """A tracer from the process's provider; safe to call before :func:`configure_tracing` (it upgrades later)."""
    return trace.get_tracer(name)


def current_trace_id() -> str | None:
    """Hex trace id of the active span, or None outside a (recording) span; used to correlate logs with traces."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return trace.format_trace_id(context.trace_id)


def _otlp_exporter(endpoint: str) -> SpanExporter:
    """The OTLP span exporter, imported lazily so processes without tracing never need the package."""
    # The standard OTel variables choose the wire protocol; gRPC is the Python SDK's usual default.
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
    )
    try:
        if protocol.startswith("http"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

            # An explicit endpoint is used verbatim by the HTTP exporter, so it must name the traces path.
            url = endpoint if endpoint.rstrip("/").endswith("/v1/traces") else endpoint.rstrip("/") + "/v1/traces"
            exporter: SpanExporter = HttpExporter(endpoint=url)
        else:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

            exporter = GrpcExporter(endpoint=endpoint)
    except ImportError as exc:
        raise RuntimeError(
            "an OTLP endpoint is configured but the exporter is not installed: pip install opentelemetry-exporter-otlp"
        ) from exc
    return exporter

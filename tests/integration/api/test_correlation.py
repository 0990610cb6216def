"""One request followed through the platform: the correlation id sent on ``POST /orders`` appears in the log lines
of the API (access log), the order service (command handled) and the exchange call (order placed on the venue),
and the request's trace continues through the order command into the venue call's span."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from core.observability.logging import configure_logging
from tests.integration.api.conftest import ApiHarness

pytestmark = pytest.mark.integration

CID = "follow-me-7f3a"


async def test_one_request_is_found_in_api_order_service_and_exchange_call_logs_and_one_trace(
    api: ApiHarness, recorded_spans: InMemorySpanExporter
) -> None:
    stream = io.StringIO()
    configure_logging("test", stream=stream)
    exporter = recorded_spans
    try:
        user = await api.new_user(with_account=True)
        body = {"account_id": user.account_id, "symbol": "BTCUSDT", "side": "buy", "order_type": "market"}
        placed = await api.client.post(
            "/orders", json={**body, "quantity": "0.01"}, headers=api.headers(user, **{"X-Correlation-ID": CID})
        )
        assert placed.status_code == 201, placed.text
        for _ in range(200):
            if "order placed on the venue" in stream.getvalue():
                break
            await asyncio.sleep(0.05)
    finally:
        configure_logging("test")

    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    mine = [line for line in lines if line.get("correlation_id") == CID]
    events = {(line["logger"], line["event"]) for line in mine}
    assert ("api.access", "http.request") in events, sorted(events)
    assert ("realtime.orders.commands", "command handled") in events, sorted(events)
    assert ("realtime.orders.execution", "order placed on the venue") in events, sorted(events)
    access = next(line for line in mine if line["event"] == "http.request")
    assert access["route"] == "/orders" and access["status"] == 201

    spans = exporter.get_finished_spans()
    by_name = {span.name: span for span in spans}
    request, command, venue = by_name["POST /orders"], by_name["command PlaceOrder"], by_name["exchange.place_order"]
    assert request.context.trace_id == command.context.trace_id == venue.context.trace_id
    # the command's parent arrived over the bus (remote) from a span of the request's own trace
    assert command.parent is not None and command.parent.is_remote
    assert command.parent.span_id in {
        s.context.span_id for s in spans if s.context.trace_id == request.context.trace_id
    }
    assert venue.attributes is not None and venue.attributes["correlation_id"] == CID

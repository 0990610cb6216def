"""The app's frame: health and readiness over real HTTP, the correlation id round trip, the JSON error body,
the body size limit, and bearer authentication being required."""

from __future__ import annotations

import pytest

from tests.integration.api.conftest import ApiHarness, error_code

pytestmark = pytest.mark.integration


async def test_health_and_ready_answer_with_real_dependencies(api: ApiHarness) -> None:
    assert (await api.client.get("/health")).json() == {"status": "ok"}
    ready = await api.client.get("/ready")
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "postgres": True, "redis": True}


async def test_correlation_id_is_returned_as_given_or_generated(api: ApiHarness) -> None:
    given = await api.client.get("/health", headers={"X-Correlation-ID": "req-123"})
    assert given.headers["x-correlation-id"] == "req-123"
    generated = await api.client.get("/health")
    assert len(generated.headers["x-correlation-id"]) == 32
    bad = await api.client.get("/health", headers={"X-Correlation-ID": "has spaces and \\n"})
    assert bad.headers["x-correlation-id"] != "has spaces and \\n"


async def test_unknown_route_gets_the_json_error_body_with_the_correlation_id(api: ApiHarness) -> None:
    response = await api.client.get("/no-such-thing", headers={"X-Correlation-ID": "abc"})
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "Not Found"}, "correlation_id": "abc"}


async def test_body_over_the_limit_is_refused_with_413(api: ApiHarness) -> None:
    limit = api.app.state.settings.api.max_body_bytes
    response = await api.client.post(
        "/auth/login", content=b"x" * (limit + 1), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413 and error_code(response) == "payload_too_large"


async def test_metrics_expose_request_latency_by_route(api: ApiHarness) -> None:
    await api.client.get("/health")
    body = (await api.client.get("/metrics")).text
    assert 'patriot_api_request_duration_seconds_count{method="GET",route="/health",status="200"}' in body

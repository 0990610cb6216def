"""/orders over real HTTP: orders go through the real order service to the simulator and fill; a user reaches
only their own orders and accounts; Idempotency-Key retries answer the first response; the correlation id of the
request is recorded on the order's events."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from tests.integration.api.conftest import ApiHarness, ApiUser, error_code, market_buy

pytestmark = pytest.mark.integration


async def wait_order(api: ApiHarness, user: ApiUser, order_id: str, *statuses: str) -> dict[str, Any]:
    """Poll GET /orders/{id} as the owner until the order reaches one of ``statuses``."""
    order: dict[str, Any] = {}
    for _ in range(300):
        response = await api.client.get(f"/orders/{order_id}", headers=api.headers(user))
        assert response.status_code == 200, response.text
        order = response.json()
        if order["status"] in statuses:
            return order
        await asyncio.sleep(0.05)
    raise AssertionError(f"order {order_id} did not reach {statuses}; it is {order.get('status')}")


async def test_market_order_fills_and_its_events_carry_the_request_correlation_id(api: ApiHarness) -> None:
    user = await api.new_user(with_account=True)
    placed = await api.client.post(
        "/orders", json=market_buy(user), headers=api.headers(user, **{"X-Correlation-ID": "corr-order-1"})
    )
    assert placed.status_code == 201, placed.text
    assert placed.headers["x-correlation-id"] == "corr-order-1"
    order = placed.json()
    assert order["status"] in ("submitted", "accepted", "filled") and order["quantity"] == "0.01"
    filled = await wait_order(api, user, order["id"], "filled")
    assert Decimal(filled["filled_quantity"]) == Decimal("0.01") and Decimal(filled["avg_fill_price"]) > 0

    with psycopg.connect(api.database_url) as conn:
        rows = conn.execute(
            "SELECT event_type, metadata->>'correlation_id' FROM event_store WHERE aggregate_id = %s "
            "ORDER BY event_version",
            (order["id"],),
        ).fetchall()
    correlation: dict[str, str | None] = dict(rows)
    # every event of the order, the venue's acceptance and fill included, names the request that placed it
    assert set(correlation) >= {"OrderInitialized", "OrderSubmitted", "OrderAccepted", "OrderFilled"}
    assert set(correlation.values()) == {"corr-order-1"}

    listed = await api.client.get(
        "/orders", params={"status": "filled", "symbol": "BTCUSDT"}, headers=api.headers(user)
    )
    assert [o["id"] for o in listed.json()] == [order["id"]]
    assert (await api.client.get("/orders", params={"status": "open"}, headers=api.headers(user))).json() == []
    metrics = (await api.client.get("/metrics")).text
    assert 'patriot_api_orders_placed_total{order_type="market"} 1.0' in metrics


async def test_another_user_cannot_see_cancel_or_place_on_what_is_not_theirs(api: ApiHarness) -> None:
    owner = await api.new_user(with_account=True)
    intruder = await api.new_user(with_account=True)
    placed = await api.client.post("/orders", json=market_buy(owner), headers=api.headers(owner))
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["id"]

    seen = await api.client.get(f"/orders/{order_id}", headers=api.headers(intruder))
    assert seen.status_code == 404 and error_code(seen) == "order_not_found"
    cancelled = await api.client.delete(f"/orders/{order_id}", headers=api.headers(intruder))
    assert cancelled.status_code == 404
    on_their_account = await api.client.post(
        "/orders", json=market_buy(intruder, account_id=owner.account_id), headers=api.headers(intruder)
    )
    assert on_their_account.status_code == 404 and error_code(on_their_account) == "account_not_found"
    assert (await api.client.get("/orders", headers=api.headers(intruder))).json() == []
    with psycopg.connect(api.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM orders WHERE user_id = %s", (intruder.user_id,)).fetchone() == (0,)


async def test_idempotency_key_replays_the_first_answer_and_refuses_another_body(api: ApiHarness) -> None:
    user = await api.new_user(with_account=True)
    key = f"idem-{uuid.uuid4().hex[:12]}"
    first = await api.client.post(
        "/orders", json=market_buy(user), headers=api.headers(user, **{"Idempotency-Key": key})
    )
    again = await api.client.post(
        "/orders", json=market_buy(user), headers=api.headers(user, **{"Idempotency-Key": key})
    )
    assert first.status_code == again.status_code == 201, first.text
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert first.json()["client_order_id"] == key
    with psycopg.connect(api.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM orders WHERE user_id = %s", (user.user_id,)).fetchone() == (1,)

    other_body = market_buy(user, quantity="0.02")
    reused = await api.client.post("/orders", json=other_body, headers=api.headers(user, **{"Idempotency-Key": key}))
    assert reused.status_code == 409 and error_code(reused) == "idempotency_key_reused"

    denied_body = market_buy(user, symbol="NOPEUSDT")
    denied_key = {"Idempotency-Key": f"idem-{uuid.uuid4().hex[:12]}"}
    denied = await api.client.post("/orders", json=denied_body, headers=api.headers(user, **denied_key))
    replayed = await api.client.post("/orders", json=denied_body, headers=api.headers(user, **denied_key))
    assert denied.status_code == replayed.status_code == 422
    assert replayed.json()["error"] == denied.json()["error"]


async def test_resting_limit_order_is_cancelled_and_cannot_be_cancelled_twice(api: ApiHarness) -> None:
    user = await api.new_user(with_account=True)
    last = api.platform.sim.market.last_trade("BTCUSDT")
    assert last is not None
    price = (Decimal(str(last.price)) / 2).quantize(Decimal("0.01"))
    body = market_buy(user, order_type="limit", price=str(price))
    placed = await api.client.post("/orders", json=body, headers=api.headers(user))
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["id"]
    await wait_order(api, user, order_id, "accepted")
    assert [o["id"] for o in (await api.client.get("/orders?status=open", headers=api.headers(user))).json()] == [
        order_id
    ]

    cancel = await api.client.delete(f"/orders/{order_id}", headers=api.headers(user))
    assert cancel.status_code == 202 and cancel.json()["status"] in ("pending_cancel", "canceled")
    await wait_order(api, user, order_id, "canceled")
    twice = await api.client.delete(f"/orders/{order_id}", headers=api.headers(user))
    assert twice.status_code == 409 and error_code(twice) == "order_not_open"


async def test_denied_order_is_422_with_the_reason(api: ApiHarness) -> None:
    user = await api.new_user(with_account=True)
    denied = await api.client.post("/orders", json=market_buy(user, symbol="NOPEUSDT"), headers=api.headers(user))
    assert denied.status_code == 422 and error_code(denied) == "order_denied"
    assert "unknown symbol NOPEUSDT" in denied.json()["error"]["details"]["reason"]
    no_price = await api.client.post("/orders", json=market_buy(user, order_type="limit"), headers=api.headers(user))
    assert no_price.status_code == 422 and "price is required" in no_price.json()["error"]["message"]
    invalid = await api.client.post("/orders", json=market_buy(user, quantity="-1"), headers=api.headers(user))
    assert invalid.status_code == 422 and error_code(invalid) == "validation_error"
    metrics = (await api.client.get("/metrics")).text
    assert 'patriot_api_orders_failed_total{reason="denied"} 2.0' in metrics

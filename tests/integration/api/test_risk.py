"""/risk over real HTTP: limits and kill switches go to the real order service and change what it allows next."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from tests.integration.api.conftest import ApiHarness, ApiUser, error_code, market_buy

pytestmark = pytest.mark.integration


async def order_status(api: ApiHarness, user: ApiUser, order_id: str, wanted: str) -> str:
    status = ""
    for _ in range(300):
        status = (await api.client.get(f"/orders/{order_id}", headers=api.headers(user))).json()["status"]
        if status == wanted:
            break
        await asyncio.sleep(0.05)
    return status


async def test_kill_switch_cancels_open_orders_blocks_new_ones_until_lifted(api: ApiHarness) -> None:
    manager = await api.new_user("fund_manager")
    user = await api.new_user(with_account=True)
    last = api.platform.sim.market.last_trade("BTCUSDT")
    assert last is not None
    resting = {
        **market_buy(user),
        "order_type": "limit",
        "price": str((Decimal(str(last.price)) / 2).quantize(Decimal("0.01"))),
    }
    placed = await api.client.post("/orders", json=resting, headers=api.headers(user))
    assert placed.status_code == 201, placed.text
    assert await order_status(api, user, placed.json()["id"], "accepted") == "accepted"

    scope = {"scope": "user", "scope_id": user.user_id}
    on = await api.client.post("/risk/kill-switch", json={**scope, "reason": "test"}, headers=api.headers(manager))
    assert on.status_code == 200, on.text
    assert on.json()["active"] is True and "1 open orders cancelled" in on.json()["message"]
    assert await order_status(api, user, placed.json()["id"], "canceled") == "canceled"
    blocked = await api.client.post("/orders", json=market_buy(user), headers=api.headers(user))
    assert blocked.status_code == 422 and error_code(blocked) == "order_denied"
    assert "kill switch" in blocked.json()["error"]["message"]
    limits = (await api.client.get("/risk/limits", params={"scope": "user"}, headers=api.headers(manager))).json()
    assert [(r["scope_id"], r["limit_type"], r["value"]) for r in limits] == [(user.user_id, "kill_switch", "1")]

    off = await api.client.delete("/risk/kill-switch", params=scope, headers=api.headers(manager))
    assert off.status_code == 200 and off.json()["active"] is False
    allowed = await api.client.post("/orders", json=market_buy(user), headers=api.headers(user))
    assert allowed.status_code == 201, allowed.text


async def test_order_notional_limit_denies_larger_orders_until_lifted(api: ApiHarness) -> None:
    manager = await api.new_user("admin")
    user = await api.new_user(with_account=True)
    limit = {"scope": "account", "scope_id": user.account_id, "limit_type": "max_order_notional", "value": "10"}
    set_ = await api.client.put("/risk/limits", json=limit, headers=api.headers(manager))
    assert set_.status_code == 200 and set_.json()["value"] == "10" and set_.json()["active"] is True
    denied = await api.client.post("/orders", json=market_buy(user), headers=api.headers(user))
    assert denied.status_code == 422 and "exceeds the maximum 10 per order" in denied.json()["error"]["message"]

    lifted = await api.client.put("/risk/limits", json={**limit, "value": None}, headers=api.headers(manager))
    assert lifted.status_code == 200 and lifted.json()["active"] is False
    assert (await api.client.get("/risk/limits", headers=api.headers(manager))).json() == []
    assert (await api.client.post("/orders", json=market_buy(user), headers=api.headers(user))).status_code == 201


async def test_risk_needs_the_risk_manage_permission_and_a_valid_scope(api: ApiHarness) -> None:
    user = await api.new_user()
    manager = await api.new_user("fund_manager")
    switch = {"scope": "fund", "reason": "no"}
    assert (await api.client.post("/risk/kill-switch", json=switch, headers=api.headers(user))).status_code == 403
    assert (await api.client.get("/risk/limits", headers=api.headers(user))).status_code == 403
    no_id = await api.client.post("/risk/kill-switch", json={"scope": "user"}, headers=api.headers(manager))
    assert no_id.status_code == 422 and error_code(no_id) == "validation_error"
    bad_delete = await api.client.delete("/risk/kill-switch", params={"scope": "account"}, headers=api.headers(manager))
    assert bad_delete.status_code == 422
    unknown = await api.client.put(
        "/risk/limits",
        json={"scope": "fund", "limit_type": "max_everything", "value": "1"},
        headers=api.headers(manager),
    )
    assert unknown.status_code == 422

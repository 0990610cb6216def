"""/market, /strategies and /admin over real HTTP: candles and mark prices read from PostgreSQL with their inputs
validated; strategies defined, changed and assigned by an admin (commands, each leaving its event) and listed
(own assignments only) for users; the system view counting real stream entries, a real dead letter, the outbox
backlog and live account streams."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

from core.messaging.streams import Stream
from tests.integration.api.conftest import ApiHarness, error_code

pytestmark = pytest.mark.integration


async def test_candles_and_prices_are_read_from_postgres_and_bad_input_is_422(api: ApiHarness) -> None:
    user = await api.new_user("user")
    start = datetime(2025, 3, 1, tzinfo=UTC)
    with psycopg.connect(api.database_url) as conn:
        for n in range(5):
            price = Decimal(84000 + n)
            conn.execute(
                "INSERT INTO market_candles (exchange, symbol, interval, open_time, open, high, low, close, volume)"
                " VALUES ('binance', 'BTCUSDT', '1h', %s, %s, %s, %s, %s, 2.5)",
                (start + timedelta(hours=n), price, price + 10, price - 10, price + 1),
            )
        conn.execute("DELETE FROM mark_prices")
        conn.execute("INSERT INTO mark_prices VALUES ('binance', 'ETHUSDT', 2100.5, now())")
        conn.commit()
    headers = api.headers(user)
    params = {"exchange": "binance", "symbol": "BTCUSDT", "interval": "1h", "limit": 3}
    candles = (await api.client.get("/market/candles", params=params, headers=headers)).json()
    assert [c["open_time"][:13] for c in candles] == ["2025-03-01T02", "2025-03-01T03", "2025-03-01T04"]
    assert [c["close"] for c in candles] == ["84003", "84004", "84005"] and candles[0]["volume"] == "2.5"
    other = {**params, "interval": "1m"}
    assert (await api.client.get("/market/candles", params=other, headers=headers)).json() == []
    prices = (await api.client.get("/market/prices", headers=headers)).json()
    assert [(p["exchange"], p["symbol"], p["price"]) for p in prices] == [("binance", "ETHUSDT", "2100.5")]
    assert (await api.client.get("/market/prices", params={"symbol": "BTCUSDT"}, headers=headers)).json() == []

    for bad in ({"limit": 0}, {"limit": 1001}, {"symbol": "btc/usdt"}, {"interval": "1x"}, {"exchange": ""}):
        refused = await api.client.get("/market/candles", params={**params, **bad}, headers=headers)
        assert refused.status_code == 422 and error_code(refused) == "validation_error", bad
    assert (await api.client.get("/market/candles", params=params)).status_code == 401


async def test_admin_defines_and_assigns_strategies_and_users_see_only_their_own_assignments(
    api: ApiHarness,
) -> None:
    admin = await api.new_user("admin")
    manager = await api.new_user("fund_manager")
    alice = await api.new_user("user", with_account=True)
    bob = await api.new_user("user", with_account=True)
    body = {"name": "BTC momentum", "kind": "momentum", "params": {"lookback": 20}}
    for who in (manager, alice):
        refused = await api.client.post("/strategies", json=body, headers=api.headers(who))
        assert refused.status_code == 403 and error_code(refused) == "forbidden"

    created = await api.client.post("/strategies", json=body, headers=api.headers(admin))
    assert created.status_code == 201
    strategy = created.json()
    assert (strategy["name"], strategy["status"], strategy["params"], strategy["assignments"]) == (
        "BTC momentum",
        "inactive",
        {"lookback": 20},
        [],
    )
    again = await api.client.post("/strategies", json=body, headers=api.headers(admin))
    assert again.status_code == 409 and error_code(again) == "strategy_name_taken"

    path = f"/strategies/{strategy['id']}"
    changed = await api.client.patch(
        path, json={"status": "active", "params": {"lookback": 50}}, headers=api.headers(admin)
    )
    assert changed.status_code == 200
    assert (changed.json()["status"], changed.json()["params"], changed.json()["name"]) == (
        "active",
        {"lookback": 50},
        "BTC momentum",
    )
    missing = await api.client.patch(
        "/strategies/00000000-0000-4000-8000-000000000000", json={"status": "paused"}, headers=api.headers(admin)
    )
    assert missing.status_code == 404 and error_code(missing) == "strategy_not_found"
    invalid = await api.client.patch(path, json={"status": "running"}, headers=api.headers(admin))
    assert invalid.status_code == 422

    unknown = "00000000-0000-4000-8000-000000000001"
    put = f"{path}/assignments"
    bad = await api.client.put(
        put, json={"assignments": [{"account_id": unknown, "allocation": "1"}]}, headers=api.headers(admin)
    )
    assert bad.status_code == 422 and bad.json()["error"]["details"] == {"account_ids": [unknown]}
    both = [{"account_id": alice.account_id, "allocation": "0.6"}, {"account_id": bob.account_id, "allocation": "0.4"}]
    assigned = await api.client.put(put, json={"assignments": both}, headers=api.headers(admin))
    assert sorted((a["account_id"], a["allocation"]) for a in assigned.json()["assignments"]) == sorted(
        [(alice.account_id, "0.6"), (bob.account_id, "0.4")]
    )

    listed = (await api.client.get("/strategies", headers=api.headers(alice))).json()
    assert [(s["name"], [a["account_id"] for a in s["assignments"]]) for s in listed] == [
        ("BTC momentum", [alice.account_id])
    ]
    staff = (await api.client.get("/strategies", headers=api.headers(manager))).json()
    assert len(staff[0]["assignments"]) == 2

    narrowed = await api.client.put(put, json={"assignments": both[1:]}, headers=api.headers(admin))
    assert [a["account_id"] for a in narrowed.json()["assignments"]] == [bob.account_id]
    assert (await api.client.get("/strategies", headers=api.headers(alice))).json()[0]["assignments"] == []

    # every change went through a command and left its event, by whom, in the same transaction; refusals none
    with psycopg.connect(api.database_url) as conn:
        events = conn.execute(
            "SELECT event_type, event_data->>'by_user_id', event_data FROM event_store"
            " WHERE aggregate_type = 'strategy' AND event_data->>'strategy_id' = %s ORDER BY global_position",
            (strategy["id"],),
        ).fetchall()
    assert [(kind, by) for kind, by, _ in events] == [
        ("StrategyDefined", admin.user_id),
        ("StrategyChanged", admin.user_id),
        ("StrategyAllocationsSet", admin.user_id),
        ("StrategyAllocationsSet", admin.user_id),
    ]
    assert events[1][2]["changes"] == {"status": "active", "params": {"lookback": 50}}
    assert events[3][2]["allocations"] == [{"account_id": bob.account_id, "allocation": "0.4", "active": True}]


async def test_admin_system_counts_streams_a_real_dead_letter_the_outbox_and_live_account_streams(
    api: ApiHarness,
) -> None:
    admin = await api.new_user("admin")
    alice = await api.new_user("user", with_account=True)
    placed = await api.platform.place(api.platform.users[-1])
    await api.platform.wait_status(placed["order_id"], "filled")
    # an undecodable message on a stream the lifecycle consumes: its consumer parks it on the dead-letter stream
    kernel = api.platform.kernel
    await kernel.redis.xadd(kernel.names.key(Stream.ACCOUNT_EVENTS, alice.user_id), {"p": b"not a message"})
    for _ in range(100):
        if await kernel.redis.xlen(kernel.names.dead_letter):
            break
        await asyncio.sleep(0.05)
    assert await api.platform.streams.heartbeat() == 1

    dead = (await api.client.get("/admin/dead-letters", headers=api.headers(admin))).json()
    assert dead == {"total": 1, "by_stream": {"account.events": 1}, "scanned": 1, "truncated": False}

    system = (await api.client.get("/admin/system", headers=api.headers(admin))).json()
    streams = {s["stream"]: s for s in system["streams"]}
    assert set(streams) == {str(s) for s in Stream}
    assert streams["order.commands"]["length"] >= 1
    assert {g["group"] for g in streams["account.events"]["groups"]} >= {"lifecycle"}
    assert all(g["pending"] == 0 for g in streams["account.events"]["groups"])
    async with kernel.pool.connection() as conn:
        backlog = (await (await conn.execute("SELECT count(*) FROM outbox")).fetchone())[0]  # type: ignore[index]
    assert system["outbox"]["backlog"] == backlog > 0  # no relay runs in the test platform
    assert system["dead_letters"]["by_stream"] == {"account.events": 1}
    assert system["heartbeats"] == {"account_streams_live": 1}

    assert (await api.client.get("/admin/system", headers=api.service_headers())).status_code == 200
    for who in (await api.new_user("fund_manager"), alice):
        refused = await api.client.get("/admin/system", headers=api.headers(who))
        assert refused.status_code == 403 and error_code(refused) == "forbidden"

"""/portfolio over real HTTP: a fill placed through the order service shows in its user's portfolio and nobody
else's; users cannot ask for another user's portfolio, fund managers can; the hot read is served from the read
models' Redis cache, by api.hot without FastAPI's router, answering as the routes do."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import orjson
import psycopg
import pytest

from api.hot import HotReadsMiddleware
from core.domain.orders import OrderType
from tests.integration.api.conftest import ApiHarness, ApiUser, error_code

pytestmark = pytest.mark.integration


async def portfolio_when(api: ApiHarness, user: ApiUser, ready: Any, timeout_s: float = 5.0) -> dict[str, Any]:
    """GET /portfolio until ``ready(body)``: the lifecycle drops the cache just after the fill's transaction."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        response = await api.client.get("/portfolio", headers=api.headers(user))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if ready(body) or asyncio.get_running_loop().time() > deadline:
            return body
        await asyncio.sleep(0.05)


async def test_filled_order_shows_in_its_users_portfolio_and_only_staff_see_it_for_them(api: ApiHarness) -> None:
    alice = await api.new_user("user", with_account=True)
    trader = api.platform.users[-1]
    bob = await api.new_user("user", with_account=True)
    manager = await api.new_user("fund_manager")
    before = (await api.client.get("/portfolio", headers=api.headers(alice))).json()
    assert before["positions"] == [] and before["summary"]["open_positions"] == 0  # and now cached

    placed = await api.platform.place(trader, quantity=Decimal("0.01"))
    filled = await api.platform.wait_status(placed["order_id"], "filled")
    mine = await portfolio_when(api, alice, lambda body: body["positions"])
    assert mine["user_id"] == alice.user_id
    assert [(p["account_id"], p["symbol"], Decimal(p["quantity"])) for p in mine["positions"]] == [
        (alice.account_id, "BTCUSDT", filled["filled_quantity"])
    ]
    assert mine["summary"]["open_positions"] == 1 and Decimal(mine["summary"]["cash"]) > 0
    assert {b["asset"] for b in mine["balances"]} >= {"USDT", "BTC"}
    positions = (await api.client.get("/portfolio/positions", headers=api.headers(alice))).json()
    assert positions == mine["positions"]
    balances = (await api.client.get("/portfolio/balances", headers=api.headers(alice))).json()
    assert all(b["account_id"] == alice.account_id for b in balances) and balances == mine["balances"]

    theirs = (await api.client.get("/portfolio", headers=api.headers(bob))).json()
    assert theirs["user_id"] == bob.user_id and theirs["positions"] == []
    assert all(b["account_id"] == bob.account_id for b in theirs["balances"])
    for path in ("/portfolio", "/portfolio/positions", "/portfolio/balances", "/portfolio/open-orders"):
        refused = await api.client.get(path, params={"user_id": alice.user_id}, headers=api.headers(bob))
        assert refused.status_code == 403 and error_code(refused) == "forbidden", path

    seen = await api.client.get("/portfolio", params={"user_id": alice.user_id}, headers=api.headers(manager))
    assert seen.status_code == 200 and seen.json()["positions"] == mine["positions"]
    unknown = await api.client.get(
        "/portfolio", params={"user_id": "00000000-0000-4000-8000-000000000000"}, headers=api.headers(manager)
    )
    assert unknown.status_code == 404 and error_code(unknown) == "user_not_found"
    assert (
        await api.client.get("/portfolio", params={"user_id": "nope"}, headers=api.headers(manager))
    ).status_code == 422
    assert (await api.client.get("/portfolio")).status_code == 401
    assert (await api.client.get("/portfolio", headers=api.service_headers())).status_code == 403


async def set_marks(api: ApiHarness, marks: dict[str, str]) -> None:
    """Mark prices on Binance (where simulator accounts are marked), as the risk monitor stores them."""
    with psycopg.connect(api.database_url) as conn:
        for symbol, price in marks.items():
            conn.execute(
                "INSERT INTO mark_prices (exchange, symbol, price, ts) VALUES ('binance', %s, %s, now())"
                " ON CONFLICT (exchange, symbol) DO UPDATE SET price = EXCLUDED.price, ts = EXCLUDED.ts",
                (symbol, Decimal(price)),
            )
        conn.commit()


def equity_of(balances: list[dict[str, Any]], marks: dict[str, str]) -> Decimal:
    """Every priced balance (free + locked) at its mark, stablecoins at par: the expected equity."""
    prices = {symbol.removesuffix("USDT"): Decimal(price) for symbol, price in marks.items()}
    prices |= dict.fromkeys(("USDT", "USDC", "FDUSD", "USD"), Decimal(1))
    return sum(
        ((Decimal(b["free"]) + Decimal(b["locked"])) * prices[b["asset"]] for b in balances if b["asset"] in prices),
        Decimal(0),
    )


async def test_coins_held_without_a_fill_count_in_equity_and_an_unmarked_one_is_listed(api: ApiHarness) -> None:
    marks = {"BTCUSDT": "95000", "ETHUSDT": "3300"}
    await set_marks(api, marks)
    funding = {"USDT": "1000", "BTC": "0.5", "ETH": "2", "ZZZ": "7"}  # ZZZ: no ZZZ<stablecoin> mark anywhere
    alice = await api.new_user("user", with_account=True, balances=funding)
    trader = api.platform.users[-1]
    body = await portfolio_when(api, alice, lambda body: {b["asset"] for b in body["balances"]} == set(funding))
    summary = body["summary"]
    assert Decimal(summary["cash"]) == Decimal("1000")
    assert Decimal(summary["holdings_value"]) == Decimal("0.5") * 95000 + 2 * 3300
    assert Decimal(summary["equity"]) == Decimal("1000") + Decimal("47500") + Decimal("6600")
    assert summary["unpriced_assets"] == ["ZZZ"]
    assert Decimal(summary["positions_value"]) == 0  # nothing traded yet: no position

    placed = await api.platform.place(trader, quantity=Decimal("0.01"))
    await api.platform.wait_status(placed["order_id"], "filled")
    traded = await portfolio_when(
        api, alice, lambda body: body["positions"] and Decimal(body["summary"]["cash"]) < 1000
    )
    summary = traded["summary"]
    # the bought BTC is in the BTC balance: equity is every balance at its mark, the position is not added again
    assert Decimal(summary["equity"]) == equity_of(traded["balances"], marks)
    assert Decimal(summary["equity"]) == Decimal(summary["cash"]) + Decimal(summary["holdings_value"])
    assert Decimal(summary["positions_value"]) == Decimal("0.01") * 95000
    assert Decimal(summary["equity"]) > Decimal("55000")
    assert summary["unpriced_assets"] == ["ZZZ"]


async def test_resting_limit_order_is_listed_in_open_orders_until_canceled_elsewhere(api: ApiHarness) -> None:
    alice = await api.new_user("user", with_account=True)
    trader = api.platform.users[-1]
    resting = await api.platform.place(trader, order_type=OrderType.LIMIT, price=Decimal("1000.00"))
    await api.platform.wait_status(resting["order_id"], "accepted")
    response = await api.client.get("/portfolio/open-orders", headers=api.headers(alice))
    assert response.status_code == 200
    assert [(o["order_id"], o["symbol"], Decimal(o["price"])) for o in response.json()] == [
        (resting["order_id"], "BTCUSDT", Decimal("1000"))
    ]
    bob = await api.new_user("user", with_account=True)
    assert (await api.client.get("/portfolio/open-orders", headers=api.headers(bob))).json() == []


async def test_cached_portfolio_is_answered_from_redis_without_reading_postgres(api: ApiHarness) -> None:
    alice = await api.new_user("user", with_account=True)
    # once the account's opening balances are in, nothing else of alice's moves (no more cache invalidations)
    first = await portfolio_when(api, alice, lambda body: body["balances"])
    models, redis = api.state.read_models, api.state.kernel.redis
    # a cached value PostgreSQL could never produce: if the route read SQL, it would not come back
    planted = {**first["summary"], "open_orders": 4242}
    for _ in range(3):  # a late invalidation may drop the planted value; the route must never produce it from SQL
        await redis.set(models.key(alice.user_id, "summary"), orjson.dumps(planted), px=60_000)
        second = (await api.client.get("/portfolio", headers=api.headers(alice))).json()
        if second["summary"]["open_orders"] == 4242:
            break
    assert second["summary"]["open_orders"] == 4242
    await redis.delete(models.key(alice.user_id, "summary"))
    third = (await api.client.get("/portfolio", headers=api.headers(alice))).json()
    assert third["summary"]["open_orders"] == 0 and await redis.exists(models.key(alice.user_id, "summary"))


async def test_a_stale_portfolio_is_served_at_once_and_refreshed_in_the_background(api: ApiHarness) -> None:
    alice = await api.new_user("user", with_account=True)
    first = await portfolio_when(api, alice, lambda body: body["balances"])
    models, redis = api.state.read_models, api.state.kernel.redis
    kinds = ("summary", "positions", "balances")
    planted = {**first["summary"], "open_orders": 4242}
    for _ in range(3):  # a late invalidation may drop the planted copies: plant again
        # past their freshness (the marks are gone) but still kept: the stale copies
        await redis.set(models.key(alice.user_id, "summary"), orjson.dumps(planted), px=60_000)
        await redis.set(models.key(alice.user_id, "positions"), b'["stale"]', px=60_000)
        await redis.delete(*(models._fresh_key(alice.user_id, kind) for kind in kinds))
        stale = (await api.client.get("/portfolio", headers=api.headers(alice))).json()
        if stale["summary"]["open_orders"] == 4242:
            break
    # served as they were, without waiting for PostgreSQL ...
    assert stale["summary"]["open_orders"] == 4242 and stale["positions"] == ["stale"]
    # ... and refreshed behind the answer: every stale part, with fresh marks again
    for _ in range(100):
        refreshed = (await api.client.get("/portfolio", headers=api.headers(alice))).json()
        if refreshed["summary"]["open_orders"] == 0 and refreshed["positions"] != ["stale"]:
            break
        await asyncio.sleep(0.05)
    assert refreshed["summary"]["open_orders"] == 0 and refreshed["positions"] == first["positions"]
    assert await redis.exists(*[models._fresh_key(alice.user_id, kind) for kind in kinds]) == len(kinds)


PORTFOLIO_PATHS = ("/portfolio", "/portfolio/positions", "/portfolio/balances", "/portfolio/open-orders")


async def test_hot_reads_answer_as_the_routes_do(api: ApiHarness) -> None:
    alice = await api.new_user("user", with_account=True)
    await portfolio_when(api, alice, lambda body: body["balances"])
    own = {"user_id": alice.user_id}  # with a query string the request goes on to FastAPI's route
    for path in PORTFOLIO_PATHS:
        for _ in range(3):  # a fill's late cache invalidation may land between the two reads: read both again
            hot = await api.client.get(path, headers=api.headers(alice))
            routed = await api.client.get(path, params=own, headers=api.headers(alice))
            if hot.content == routed.content:
                break
        assert hot.status_code == routed.status_code == 200, path
        assert hot.headers["content-type"] == routed.headers["content-type"] == "application/json"
        assert hot.content == routed.content, path
        for headers, status in (({"Authorization": "Bearer not-a-token"}, 401), (api.service_headers(), 403)):
            hot = await api.client.get(path, headers=headers)
            routed = await api.client.get(path, params=own, headers=headers)
            assert hot.status_code == routed.status_code == status, path
            assert error_code(hot) == error_code(routed) and hot.headers.get("www-authenticate") == routed.headers.get(
                "www-authenticate"
            )


async def test_hot_reads_skip_the_router_and_leave_every_other_request_to_it(api: ApiHarness) -> None:
    alice = await api.new_user("user", with_account=True)
    await portfolio_when(api, alice, lambda body: body["balances"])
    reached: list[str] = []

    async def router(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached.append(f"{scope['method']} {scope['path']}?{scope['query_string'].decode()}")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    def request(path: str, query: bytes = b"", method: str = "GET", token: str | None = "own") -> dict[str, Any]:
        headers = [] if token is None else [(b"authorization", f"Bearer {api.token(alice)}".encode())]
        return {"type": "http", "method": method, "path": path, "query_string": query, "headers": headers,
                "app": api.app, "client": ("127.0.0.1", 50000)}  # fmt: skip

    hot = HotReadsMiddleware(router)
    for path in PORTFOLIO_PATHS:
        await hot(request(path), receive, send)
        assert sent[-2]["status"] == 200, sent[-1]
    assert reached == []
    assert orjson.loads(sent[1]["body"])["user_id"] == alice.user_id
    for elsewhere in (
        request("/portfolio", query=f"user_id={alice.user_id}".encode()),
        request("/portfolio", token=None),
        request("/portfolio/"),
        request("/portfolio", method="HEAD"),
        request("/portfolio/history"),
        request("/orders"),
    ):
        await hot(elsewhere, receive, send)
    assert reached == [
        f"GET /portfolio?user_id={alice.user_id}",
        "GET /portfolio?",
        "GET /portfolio/?",
        "HEAD /portfolio?",
        "GET /portfolio/history?",
        "GET /orders?",
    ]

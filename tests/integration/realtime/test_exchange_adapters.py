"""Both Binance adapters (ccxt's and the native REST one) against the local simulator over real HTTP: Decimal
values, domain errors, retries and weights. Every case runs once per implementation through the ``adapter`` fixture."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from core.domain.orders import OrderSide, OrderStatus, OrderType
from core.security.account_secrets import ExchangeCredentials
from realtime.exchanges.base import (
    AuthenticationFailed,
    ClockSkew,
    ExchangeAdapter,
    ExchangeUnavailable,
    InsufficientFunds,
    OrderNotFound,
    OrderRejected,
    OrderRequest,
    RateLimited,
)
from realtime.exchanges.binance import (
    BinanceRestAdapter,
    build_binance_adapter,
    build_binance_rest_adapter,
    simulator_urls,
)
from realtime.exchanges.simulator.app import SimAccount, SimulatorConfig, bound_port, serve
from realtime.exchanges.simulator.candles import SimTrade
from realtime.exchanges.simulator.state import STATE_KEY, SimulatorState

D = Decimal
DATA = Path(__file__).resolve().parents[3] / "data" / "binance-spot-1m" / "2025"
ALICE = SimAccount("alice", "aliceKey01", "alice-secret", {"USDT": D(10_000), "BTC": D("0.5")})
BOB = SimAccount("bob", "bobKey01", "bob-secret", {"USDT": D(10)})


@dataclass
class Sim:
    state: SimulatorState
    base: str


@dataclass
class RecordingBudget:
    """A fake rate limiter (same protocol) that records the weights taken and the penalties imposed."""

    taken: list[int] = field(default_factory=list)
    penalties: list[float] = field(default_factory=list)

    async def acquire(self, weight: int = 1) -> float:
        self.taken.append(weight)
        return 0.0

    async def penalize(self, seconds: float) -> None:
        self.penalties.append(seconds)


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Sim]:
    files = {}
    for symbol in ("BTCUSDT", "ETHUSDT"):
        lines = gzip.decompress((DATA / f"{symbol}_1m.csv.gz").read_bytes()).decode().splitlines()[:261]
        files[symbol] = tmp_path / f"{symbol}_1m.csv"
        files[symbol].write_text("\n".join(lines) + "\n")
    config = SimulatorConfig(
        port=0, candle_files=files, replay=False, warmup_candles=200, accounts=(ALICE, BOB), ws_routes=False
    )
    runner = await serve(config)
    try:
        yield Sim(runner.app[STATE_KEY], f"http://127.0.0.1:{bound_port(runner)}")
    finally:
        await runner.cleanup()


AdapterFactory = Callable[..., AbstractAsyncContextManager[ExchangeAdapter]]


@pytest.fixture(params=["ccxt", "native"])
def adapter(request: pytest.FixtureRequest) -> AdapterFactory:
    """``adapter(sim, account=ALICE, secret=..., clock_behind_ms=..., **adapter_kwargs)``: one implementation's
    adapter on ``sim``, closed on exit; ``clock_behind_ms`` signs with a clock that far behind the venue's."""
    implementation: str = request.param

    @asynccontextmanager
    async def build(
        sim: Sim, account: SimAccount = ALICE, clock_behind_ms: int = 0, **kwargs: Any
    ) -> AsyncIterator[ExchangeAdapter]:
        credentials = ExchangeCredentials(account.api_key, kwargs.pop("secret", account.secret))
        built: ExchangeAdapter
        if implementation == "ccxt":
            if clock_behind_ms:
                kwargs["options"] = {"timeDifference": clock_behind_ms}
            built = build_binance_adapter(credentials, simulator_urls(sim.base), **kwargs)
        else:
            built = build_binance_rest_adapter(credentials, sim.base, time_offset_ms=-clock_behind_ms, **kwargs)
        try:
            yield built
        finally:
            await built.close()

    return build


async def inject_fault(sim: Sim, **fault: Any) -> None:
    async with aiohttp.ClientSession() as http, http.post(f"{sim.base}/admin/faults", json=fault) as resp:
        assert resp.status == 200


def limit_buy(client_id: str, qty: str, price: str) -> OrderRequest:
    return OrderRequest(client_id, "BTCUSDT", OrderSide.BUY, OrderType.LIMIT, D(qty), D(price))


async def test_adapter_satisfies_the_protocol_and_masks_its_key(sim: Sim, adapter: AdapterFactory) -> None:
    async with adapter(sim) as binance:
        assert isinstance(binance, ExchangeAdapter)
        assert ALICE.api_key not in repr(binance) and ALICE.secret not in repr(binance)


async def test_markets_and_balances_come_back_as_decimal_filters(sim: Sim, adapter: AdapterFactory) -> None:
    async with adapter(sim) as binance:
        markets = await binance.load_markets()
        balances = await binance.fetch_balances()
    btc = markets["BTCUSDT"]
    assert (btc.base, btc.quote, btc.tick_size, btc.step_size) == ("BTC", "USDT", D("0.01"), D("0.00001"))
    assert (btc.min_qty, btc.min_notional) == (D("0.00001"), D(5))
    assert markets["ETHUSDT"].step_size == D("0.0001")
    assert (balances["USDT"].free, balances["BTC"].total, balances["BTC"].locked) == (D(10_000), D("0.5"), D(0))


async def test_limit_order_lifecycle_place_fetch_list_fill_and_trades(sim: Sim, adapter: AdapterFactory) -> None:
    async with adapter(sim) as binance:
        ack = await binance.place_order(limit_buy("cid-limit-1", "0.02", "50000"))
        assert (ack.status, ack.client_order_id, ack.price, ack.filled_qty) == (
            OrderStatus.ACCEPTED,
            "cid-limit-1",
            D(50000),
            D(0),
        )
        assert [o.exchange_order_id for o in await binance.fetch_open_orders("BTCUSDT")] == [ack.exchange_order_id]
        assert [o.client_order_id for o in await binance.fetch_open_orders()] == ["cid-limit-1"]
        assert (await binance.fetch_balances())["USDT"].locked == D(1000)
        sim.state.market.publish_trade("BTCUSDT", SimTrade(10**6, D("49999.5"), D(1), 0, True))
        by_client_id = await binance.fetch_order("BTCUSDT", client_order_id="cid-limit-1")
        trades = await binance.fetch_my_trades("BTCUSDT")
    assert (by_client_id.status, by_client_id.filled_qty, by_client_id.avg_price) == (
        OrderStatus.FILLED,
        D("0.02"),
        D(50000),
    )
    assert [(t.exchange_order_id, t.is_maker, t.price, t.qty, t.fee, t.fee_asset) for t in trades] == [
        (ack.exchange_order_id, True, D(50000), D("0.02"), D("0.00002"), "BTC")
    ]


async def test_market_order_fills_with_fee_and_cancel_releases_the_lock(sim: Sim, adapter: AdapterFactory) -> None:
    async with adapter(sim) as binance:
        market = OrderRequest("cid-mkt-1", "BTCUSDT", OrderSide.BUY, OrderType.MARKET, D("0.01"))
        filled = await binance.place_order(market)
        assert (filled.status, filled.filled_qty, filled.fee, filled.fee_asset) == (
            OrderStatus.FILLED,
            D("0.01"),
            D("0.00001"),
            "BTC",
        )
        assert filled.avg_price is not None and filled.avg_price > 0
        sell = OrderRequest("cid-sell-1", "BTCUSDT", OrderSide.SELL, OrderType.LIMIT, D("0.1"), D(200_000))
        resting = await binance.place_order(sell)
        assert (await binance.fetch_balances())["BTC"].locked == D("0.1")
        cancelled = await binance.cancel_order("BTCUSDT", resting.exchange_order_id)
        assert cancelled.status == OrderStatus.CANCELED
        assert (await binance.fetch_balances())["BTC"].locked == D(0)
        assert await binance.fetch_open_orders("BTCUSDT") == []


async def test_venue_refusals_raise_domain_errors(sim: Sim, adapter: AdapterFactory) -> None:
    async with adapter(sim) as binance, adapter(sim, BOB) as poor:
        with pytest.raises(InsufficientFunds):
            await poor.place_order(limit_buy("cid-poor", "0.001", "50000"))
        with pytest.raises(OrderRejected, match="NOTIONAL"):
            await binance.place_order(limit_buy("cid-tiny", "0.00001", "50000"))
        with pytest.raises(OrderRejected, match="PRICE_FILTER"):
            await binance.place_order(limit_buy("cid-tick", "0.001", "50000.001"))
        with pytest.raises(OrderNotFound):
            await binance.cancel_order("BTCUSDT", "424242")
        with pytest.raises(OrderNotFound):
            await binance.fetch_order("BTCUSDT", client_order_id="never-placed")
        with pytest.raises(OrderRejected, match="no market 'DOGEUSDT'"):
            await binance.fetch_open_orders("DOGEUSDT")
    async with adapter(sim, secret="wrong-secret") as forger:
        with pytest.raises(AuthenticationFailed):
            await forger.fetch_balances()
    async with adapter(sim, clock_behind_ms=15_000) as late:
        with pytest.raises(ClockSkew):
            await late.fetch_balances()


async def test_duplicate_client_order_id_returns_the_existing_order(sim: Sim, adapter: AdapterFactory) -> None:
    async with adapter(sim) as binance:
        first = await binance.place_order(limit_buy("cid-dup", "0.001", "50000"))
        again = await binance.place_order(limit_buy("cid-dup", "0.001", "50000"))
        assert again.exchange_order_id == first.exchange_order_id
        assert len(await binance.fetch_open_orders("BTCUSDT")) == 1


async def test_transient_failures_are_retried_with_backoff_then_succeed(sim: Sim, adapter: AdapterFactory) -> None:
    sleeps: list[float] = []

    async def record(seconds: float) -> None:
        sleeps.append(seconds)

    budget = RecordingBudget()
    async with adapter(sim, rate_limiter=budget, max_retries=4, sleep=record, base_backoff_s=0.1) as binance:
        await binance.load_markets()
        await inject_fault(sim, status=503, count=2, path_prefix="/api/v3/order")
        ack = await binance.place_order(limit_buy("cid-retry", "0.001", "50000"))
        await inject_fault(sim, status=429, count=1, path_prefix="/api/v3/order")
        fetched = await binance.fetch_order("BTCUSDT", ack.exchange_order_id)
    assert fetched.client_order_id == "cid-retry"
    assert len(sleeps) == 3 and 0.05 <= sleeps[0] <= 0.1 and 0.1 <= sleeps[1] <= 0.2
    assert sleeps[2] == 60.0  # the 429's Retry-After, honoured over the shorter backoff
    assert budget.penalties == [60.0]  # ... and shared with every process on the same key
    assert budget.taken == [20, 1, 1, 1, 4, 4]  # exchangeInfo, three order attempts, two order queries


async def test_persistent_failures_give_up_after_max_retries(sim: Sim, adapter: AdapterFactory) -> None:
    sleeps: list[float] = []

    async def record(seconds: float) -> None:
        sleeps.append(seconds)

    async with adapter(sim, max_retries=2, sleep=record) as binance:
        await binance.load_markets()
        await inject_fault(sim, status=503, count=10, path_prefix="/api/v3/account")
        with pytest.raises(ExchangeUnavailable):
            await binance.fetch_balances()
        assert len(sleeps) == 2
        await inject_fault(sim, status=429, count=10, path_prefix="/api/v3/account")
        with pytest.raises(RateLimited) as limited:
            await binance.fetch_balances()
        assert limited.value.retry_after == 60.0 and len(sleeps) == 4
        await inject_fault(sim, reset=True)
        assert (await binance.fetch_balances())["USDT"].free == D(10_000)


async def test_timeouts_are_retried_then_raise_unavailable(sim: Sim, adapter: AdapterFactory) -> None:
    sleeps: list[float] = []

    async def record(seconds: float) -> None:
        sleeps.append(seconds)

    async with adapter(sim, max_retries=1, sleep=record, timeout_ms=200) as binance:
        await inject_fault(sim, delay_ms=1_000, path_prefix="/api/v3/account")
        try:
            with pytest.raises(ExchangeUnavailable):
                await binance.fetch_balances()
        finally:
            await inject_fault(sim, reset=True)
        assert len(sleeps) == 1
        assert (await binance.fetch_balances())["BTC"].free == D("0.5")


async def test_weights_follow_the_endpoint_and_markets_load_once(sim: Sim, adapter: AdapterFactory) -> None:
    budget = RecordingBudget()
    async with adapter(sim, rate_limiter=budget) as binance:
        await binance.place_order(limit_buy("cid-w-1", "0.001", "50000"))
        await binance.place_order(limit_buy("cid-w-2", "0.001", "50000"))
        await binance.fetch_open_orders()
        await binance.fetch_open_orders("BTCUSDT")
        assert await binance.fetch_my_trades("BTCUSDT", since_ms=4_102_444_800_000) == []  # since 2100: none yet
    assert budget.taken == [20, 1, 1, 80, 6, 20]  # exchangeInfo on first use only


async def test_native_cancel_answer_names_the_order_by_its_own_client_id(sim: Sim) -> None:
    # Native only: ccxt reads the cancel answer's ``clientOrderId``, which Binance fills with the cancel request's own
    # id (``origClientOrderId`` is the order's), so CcxtAdapter.cancel_order reports the cancel's id instead.
    binance = build_binance_rest_adapter(ExchangeCredentials(ALICE.api_key, ALICE.secret), sim.base)
    try:
        assert isinstance(binance, BinanceRestAdapter)
        resting = await binance.place_order(limit_buy("grid:7/a.b_c-d", "0.001", "50000"))  # needs percent-encoding
        cancelled = await binance.cancel_order("BTCUSDT", client_order_id="grid:7/a.b_c-d")
        fetched = await binance.fetch_order("BTCUSDT", resting.exchange_order_id)
    finally:
        await binance.close()
    assert (cancelled.status, cancelled.client_order_id) == (OrderStatus.CANCELED, "grid:7/a.b_c-d")
    assert (fetched.status, fetched.client_order_id) == (OrderStatus.CANCELED, "grid:7/a.b_c-d")

"""The simulator's matching engine and candle->trade derivation: pure, deterministic, no I/O."""

from __future__ import annotations

import gzip
import itertools
import time
from decimal import Decimal
from pathlib import Path

import pytest

from realtime.exchanges.simulator.binance_guard import BinanceError, Credential, verify_signed
from realtime.exchanges.simulator.binance_wire import account_position, execution_report
from realtime.exchanges.simulator.candles import (
    TRADES_PER_CANDLE,
    CandleRow,
    candle_trades,
    load_candles,
    trades_from_candle,
)
from realtime.exchanges.simulator.engine import MatchingEngine
from realtime.exchanges.simulator.engine_types import (
    BalancesUpdated,
    EngineEvent,
    FeeSchedule,
    OrderRejected,
    OrderRequest,
    OrderUpdated,
    SymbolRules,
    default_symbol_rules,
)
from realtime.exchanges.simulator.market import CandleFeed, Market

D = Decimal
CANDLES = Path(__file__).resolve().parents[3] / "data" / "binance-spot-1m" / "2025" / "BTCUSDT_1m.csv.gz"


def make_engine(**balances: str) -> tuple[MatchingEngine, list[EngineEvent]]:
    clock = iter(range(1_000, 10**9))
    engine = MatchingEngine(default_symbol_rules(), FeeSchedule(D("0.001"), D("0.002")), lambda: next(clock))
    engine.open_account("a", {asset: D(amount) for asset, amount in balances.items()})
    events: list[EngineEvent] = []
    engine.subscribe(events.append)
    engine.on_depth("BTCUSDT", [(D(99), D("0.5")), (D(98), D(1))], [(D(100), D("0.5")), (D(101), D(1))])
    return engine, events


def limit(side: str, qty: str, price: str, tif: str = "GTC", client_id: str | None = None) -> OrderRequest:
    return OrderRequest("BTCUSDT", side, "LIMIT", D(qty), None, D(price), tif, client_id)


def market(side: str, qty: str | None = None, quote: str | None = None) -> OrderRequest:
    return OrderRequest("BTCUSDT", side, "MARKET", D(qty) if qty else None, D(quote) if quote else None)


def test_market_buy_walks_the_book_and_pays_taker_fee_in_base() -> None:
    engine, _ = make_engine(USDT="100000")
    order = engine.place_order("a", market("BUY", "1"))
    fills = engine.my_trades("a", "BTCUSDT")
    assert order.status == "FILLED"
    assert [(f.price, f.qty, f.is_maker) for f in fills] == [(D(100), D("0.5"), False), (D(101), D("0.5"), False)]
    assert order.cumulative_quote_qty == D("100.5")
    balances = engine.balances("a")
    assert balances["USDT"].free == D("99899.5")
    assert balances["BTC"].free == D(1) - D("0.002")  # 0.2% taker on each fill, in BTC
    assert engine.book("BTCUSDT").asks == [[D(101), D("0.5")]]  # the takers consumed the liquidity


def test_market_order_beyond_the_book_fills_partially_and_expires() -> None:
    engine, _ = make_engine(BTC="5")
    order = engine.place_order("a", market("SELL", "2"))
    assert (order.status, order.executed_qty) == ("EXPIRED", D("1.5"))
    assert engine.balances("a")["BTC"].free == D("3.5")
    assert engine.balances("a")["USDT"].free == D("147.5") - D("0.295")  # 49.5 + 98 quote, minus 0.2%


def test_market_buy_by_quote_amount_spends_at_most_it() -> None:
    engine, _ = make_engine(USDT="1000")
    order = engine.place_order("a", market("BUY", quote="75"))
    assert order.status == "FILLED"
    assert order.executed_qty == D("0.5") + D("0.24752")  # 50 at 100, then 24.99952 at 101 in 0.00001 steps
    assert order.cumulative_quote_qty <= D(75)


def test_resting_limit_fills_only_on_trades_through_its_price_up_to_their_size() -> None:
    engine, _ = make_engine(USDT="1000")
    order = engine.place_order("a", limit("BUY", "1", "99.5"))
    assert order.status == "NEW"
    assert engine.balances("a")["USDT"].locked == D("99.5")
    assert engine.on_trade("BTCUSDT", D("99.5"), D(5), 1) == []  # at the price: the queue is unknown
    first = engine.on_trade("BTCUSDT", D(99), D("0.4"), 2)
    assert [(f.price, f.qty, f.is_maker) for f in first] == [(D("99.5"), D("0.4"), True)]
    assert order.status == "PARTIALLY_FILLED"
    engine.on_trade("BTCUSDT", D(98), D(5), 3)
    assert order.status == "FILLED"
    balances = engine.balances("a")
    assert balances["USDT"].locked == 0
    assert balances["USDT"].free == D("900.5")
    assert balances["BTC"].free == D(1) - D("0.001")  # maker 0.1%
    assert engine.open_orders("a") == []


def test_fill_at_touch_option_fills_on_a_trade_at_the_price() -> None:
    engine = MatchingEngine(default_symbol_rules(), fill_at_touch=True)
    engine.open_account("a", {"USDT": D(1000)})
    engine.on_book("BTCUSDT", D(99), D(1), D(100), D(1))
    order = engine.place_order("a", limit("BUY", "1", "99.5"))
    assert order.status == "NEW"
    engine.on_trade("BTCUSDT", D("99.5"), D(5), 1)
    assert order.status == "FILLED"


def test_better_priced_and_older_orders_fill_first_from_one_trade() -> None:
    engine, _ = make_engine(USDT="10000")
    low = engine.place_order("a", limit("BUY", "1", "97"))
    old = engine.place_order("a", limit("BUY", "1", "97.5"))
    new = engine.place_order("a", limit("BUY", "1", "97.5"))
    engine.on_trade("BTCUSDT", D(96), D("1.5"), 1)
    assert (old.executed_qty, new.executed_qty, low.executed_qty) == (D(1), D("0.5"), D(0))


def test_crossing_limit_takes_at_book_prices_and_returns_the_price_improvement() -> None:
    engine, _ = make_engine(USDT="1000")
    order = engine.place_order("a", limit("BUY", "1", "100.5"))
    assert (order.status, order.executed_qty) == ("PARTIALLY_FILLED", D("0.5"))
    balances = engine.balances("a")
    assert balances["USDT"].locked == D("50.25")  # the unfilled half at its limit
    assert balances["USDT"].free == D(1000) - D(50) - D("50.25")


def test_ioc_takes_what_crosses_and_expires_the_rest() -> None:
    engine, events = make_engine(USDT="1000")
    order = engine.place_order("a", limit("BUY", "1", "100", "IOC"))
    assert (order.status, order.executed_qty) == ("EXPIRED", D("0.5"))
    assert engine.balances("a")["USDT"].locked == 0
    kinds = [(e.execution_type, e.order.status) for e in events if isinstance(e, OrderUpdated)]
    assert kinds == [("NEW", "NEW"), ("TRADE", "PARTIALLY_FILLED"), ("EXPIRED", "EXPIRED")]


def test_fok_expires_untouched_without_enough_liquidity_and_fills_with_it() -> None:
    engine, _ = make_engine(USDT="1000")
    short = engine.place_order("a", limit("BUY", "1", "100", "FOK"))
    assert (short.status, short.executed_qty) == ("EXPIRED", D(0))
    assert engine.my_trades("a", "BTCUSDT") == []
    assert engine.balances("a")["USDT"].free == D(1000)
    full = engine.place_order("a", limit("BUY", "1", "101", "FOK"))
    assert (full.status, full.executed_qty) == ("FILLED", D(1))


@pytest.mark.parametrize(
    ("request_", "failure"),
    [
        (limit("BUY", "0.01", "100.001"), "Filter failure: PRICE_FILTER"),
        (limit("BUY", "0.000015", "100"), "Filter failure: LOT_SIZE"),
        (limit("BUY", "0.000001", "100"), "Filter failure: LOT_SIZE"),
        (limit("BUY", "0.01", "100"), "Filter failure: NOTIONAL"),  # 1 USDT < 5
        (market("BUY", "0.001"), "Filter failure: NOTIONAL"),  # ~0.1 USDT at the reference price
    ],
)
def test_filters_reject_with_binance_messages(request_: OrderRequest, failure: str) -> None:
    engine, events = make_engine(USDT="1000")
    with pytest.raises(OrderRejected) as rejected:
        engine.place_order("a", request_)
    assert (rejected.value.code, rejected.value.msg) == (-1013, failure)
    assert events == [] and engine.balances("a")["USDT"].free == D(1000)


def test_legacy_min_notional_filter_reports_its_own_name() -> None:
    rules = SymbolRules(
        "BTCUSDT", "BTC", "USDT", D("0.01"), D("0.001"), D("0.001"), D(10), notional_filter="MIN_NOTIONAL"
    )
    engine = MatchingEngine([rules])
    engine.open_account("a", {"USDT": D(100)})
    with pytest.raises(OrderRejected, match="MIN_NOTIONAL"):
        engine.place_order("a", limit("BUY", "0.001", "100"))


def test_insufficient_balance_rejects_and_locks_nothing() -> None:
    engine, _ = make_engine(USDT="50")
    with pytest.raises(OrderRejected) as rejected:
        engine.place_order("a", limit("BUY", "1", "99"))
    assert rejected.value.code == -2010
    assert rejected.value.msg == "Account has insufficient balance for requested action."
    assert engine.balances("a")["USDT"].free == D(50)


def test_cancel_releases_the_lock_and_unknown_orders_are_binance_errors() -> None:
    engine, _ = make_engine(BTC="1")
    order = engine.place_order("a", limit("SELL", "0.5", "105"))
    assert engine.balances("a")["BTC"].locked == D("0.5")
    engine.cancel_order("a", "BTCUSDT", order.order_id)
    assert order.status == "CANCELED"
    assert engine.balances("a")["BTC"].free == D(1)
    with pytest.raises(OrderRejected, match="-2011"):
        engine.cancel_order("a", "BTCUSDT", order.order_id)
    with pytest.raises(OrderRejected, match="-2013"):
        engine.get_order("a", "BTCUSDT", 999)
    with pytest.raises(OrderRejected, match="-1121"):
        engine.get_order("a", "DOGEUSDT", 1)


def test_duplicate_client_order_id_rejected_while_the_first_is_open() -> None:
    engine, _ = make_engine(USDT="1000")
    first = engine.place_order("a", limit("BUY", "0.1", "90", client_id="mine"))
    with pytest.raises(OrderRejected, match=r"Duplicate order sent\."):
        engine.place_order("a", limit("BUY", "0.1", "90", client_id="mine"))
    engine.cancel_order("a", "BTCUSDT", client_order_id="mine")
    again = engine.place_order("a", limit("BUY", "0.1", "90", client_id="mine"))
    assert again.order_id != first.order_id
    assert engine.get_order("a", "BTCUSDT", client_order_id="mine") is again


def test_limit_maker_that_would_take_is_rejected() -> None:
    engine, _ = make_engine(USDT="1000")
    with pytest.raises(OrderRejected, match=r"Order would immediately match and take\."):
        engine.place_order("a", OrderRequest("BTCUSDT", "BUY", "LIMIT_MAKER", D(1), None, D(100)))


def test_value_is_conserved_except_fees_across_a_trading_session() -> None:
    engine, events = make_engine(USDT="10000", BTC="2")
    engine.place_order("a", market("BUY", "0.7"))
    engine.place_order("a", limit("SELL", "1.2", "99", "IOC"))
    resting = engine.place_order("a", limit("BUY", "0.9", "97.25"))
    engine.on_trade("BTCUSDT", D("97.2"), D("0.3"), 1)
    engine.place_order("a", limit("SELL", "0.3", "102"))
    engine.on_trade("BTCUSDT", D("102.5"), D(1), 2)
    engine.cancel_order("a", "BTCUSDT", resting.order_id)
    fills = engine.my_trades("a", "BTCUSDT")
    assert len(fills) >= 4
    balances = engine.balances("a")
    base = sum((f.qty if f.is_buyer else -f.qty for f in fills), D(0))
    quote = sum((-f.quote_qty if f.is_buyer else f.quote_qty for f in fills), D(0))
    base_fees = sum((f.commission for f in fills if f.commission_asset == "BTC"), D(0))
    quote_fees = sum((f.commission for f in fills if f.commission_asset == "USDT"), D(0))
    assert balances["BTC"].total == D(2) + base - base_fees
    assert balances["USDT"].total == D(10000) + quote - quote_fees
    assert balances["BTC"].locked == 0 and balances["USDT"].locked == 0
    last = events[-1]
    assert isinstance(last, BalancesUpdated)
    assert account_position(last)["B"] == [{"a": "USDT", "f": f"{balances['USDT'].free:.8f}", "l": "0.00000000"}]


def test_events_follow_binance_execution_report_sequence() -> None:
    engine, events = make_engine(USDT="1000")
    engine.place_order("a", market("BUY", "0.6"))
    reports = [execution_report(e) for e in events if isinstance(e, OrderUpdated)]
    assert [(r["x"], r["X"], r["l"], r["L"]) for r in reports] == [
        ("NEW", "NEW", "0.00000000", "0.00000000"),
        ("TRADE", "PARTIALLY_FILLED", "0.50000000", "100.00000000"),
        ("TRADE", "FILLED", "0.10000000", "101.00000000"),
    ]
    assert reports[-1]["z"] == "0.60000000" and reports[-1]["N"] == "BTC" and reports[-1]["t"] == 2


def test_signature_check_matches_binance_documented_example() -> None:
    # The HMAC example of Binance's spot API documentation (SIGNED endpoint security).
    credential = Credential(
        "a",
        "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A",
        "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j",
    )
    payload = (
        "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
    )
    params = dict(p.split("=") for p in payload.split("&"))
    params["signature"] = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
    verify_signed(params, payload, credential, now_ms=1499827319559 + 100)
    with pytest.raises(BinanceError) as stale:
        verify_signed(params, payload, credential, now_ms=1499827319559 + 5001)
    assert stale.value.code == -1021
    params["signature"] = "0" * 64
    with pytest.raises(BinanceError) as forged:
        verify_signed(params, payload, credential, now_ms=1499827319559 + 100)
    assert forged.value.code == -1022


def first_candles(tmp_path: Path, count: int) -> list[CandleRow]:
    """The first ``count`` shipped BTCUSDT candles, through the production reader."""
    lines = gzip.decompress(CANDLES.read_bytes()).decode().splitlines()[: count + 1]
    path = tmp_path / "BTCUSDT_1m.csv"
    path.write_text("\n".join(lines) + "\n")
    return load_candles(path)


def test_load_candles_reads_utc_text_times_as_epoch_ms(tmp_path: Path) -> None:
    first = first_candles(tmp_path, 2)[0]
    assert first == CandleRow(1735700400000, D("94098.9"), D("94098.91"), D("94049.47"), D("94049.47"), D("7.50148"))


def test_trades_from_candle_are_deterministic_and_rebuild_the_candle(tmp_path: Path) -> None:
    for row in first_candles(tmp_path, 60):
        trades = trades_from_candle(row, 1)
        assert trades == trades_from_candle(row, 1)
        prices = [t.price for t in trades]
        assert (prices[0], prices[-1], max(prices), min(prices)) == (row.open, row.close, row.high, row.low)
        assert sum((t.qty for t in trades), D(0)) == row.volume
        assert all(t.qty > 0 for t in trades)
        assert all(p % D("0.01") == 0 for p in prices)
        assert [t.trade_id for t in trades] == list(range(1, TRADES_PER_CANDLE + 1))
        times = [t.ts_ms for t in trades]
        assert times == sorted(set(times)) and row.open_time_ms == times[0] and times[-1] < row.open_time_ms + 60_000
        for before, after in itertools.pairwise(trades):
            if after.price != before.price:
                assert after.is_buyer_maker == (after.price < before.price)


def test_candle_trade_ids_are_positions_in_the_file(tmp_path: Path) -> None:
    candles = first_candles(tmp_path, 3)
    assert [t.trade_id for t in candle_trades(candles, 2)] == list(range(25, 37))


def test_candle_feed_klines_fold_back_to_the_candles(tmp_path: Path) -> None:
    candles = first_candles(tmp_path, 30)
    engine = MatchingEngine(default_symbol_rules())
    tape = Market(engine)
    tape.load_history("BTCUSDT", candles[:10], D("0.25"))
    feed = CandleFeed(tape, {"BTCUSDT": candles}, {"BTCUSDT": 10})
    assert feed.advance(5) == 5 * TRADES_PER_CANDLE
    klines = tape.klines("BTCUSDT", 60_000, None, None, 100)
    ohlcv = [(k.open_time_ms, k.open, k.high, k.low, k.close, k.volume) for k in klines]
    assert ohlcv == [(c.open_time_ms, c.open, c.high, c.low, c.close, c.volume) for c in candles[:15]]
    five = tape.klines("BTCUSDT", 300_000, None, None, 10)
    assert [k.volume for k in five] == [sum((c.volume for c in candles[i : i + 5]), D(0)) for i in (0, 5, 10)]
    assert five[0].high == max(c.high for c in candles[:5])
    last = tape.last_trade("BTCUSDT")
    assert last is not None and last.price == candles[14].close
    book = engine.book("BTCUSDT")
    assert book.bids[0][0] < book.asks[0][0] and last.price in (book.bids[0][0], book.asks[0][0])


async def test_candle_feed_run_paces_by_candle_time_and_publishes_everything(tmp_path: Path) -> None:
    candles = first_candles(tmp_path, 2)
    tape = Market(MatchingEngine(default_symbol_rules()))
    started = time.monotonic()
    await CandleFeed(tape, {"BTCUSDT": candles}).run(speed=1000)  # 115 s of trades at 1000x
    assert time.monotonic() - started >= 0.11
    last = tape.last_trade("BTCUSDT")
    assert last is not None and (last.trade_id, last.price) == (24, candles[1].close)
    fast = Market(MatchingEngine(default_symbol_rules()))
    await CandleFeed(fast, {"BTCUSDT": candles}).run(speed=None)
    assert fast.trades("BTCUSDT") == tape.trades("BTCUSDT")

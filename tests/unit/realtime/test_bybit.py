"""Bybit v5: the encoders speak the documented wire format, and encode -> parse gives back the Binance-parsed data."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import msgspec
import pytest

from realtime.marketdata.binance import BinanceParser, is_depth_snapshot, iter_capture
from realtime.marketdata.bybit import (
    BybitParser,
    tick_direction,
    to_bybit_book_ticker_message,
    to_bybit_kline_message,
    to_bybit_orderbook_message,
    to_bybit_trade_message,
    trade_id_from_bybit,
)
from realtime.marketdata.errors import MalformedMessage
from realtime.marketdata.models import BookDelta, BookTicker, Candle, MarketEvent, Trade
from realtime.marketdata.orderbook import BookStatus, OrderBook

CAPTURE = Path(__file__).resolve().parents[3] / "data" / "binance-ws-capture"


def binance_events(path: Path, exchange: str) -> tuple[list[MarketEvent], BookDelta]:
    parser = BinanceParser(exchange)
    events: list[MarketEvent] = []
    snapshot = None
    for received_ns, raw in iter_capture(path):
        if is_depth_snapshot(raw):
            snapshot = parser.parse_depth_snapshot(raw, received_ns, "BTCUSDT")
        elif (event := parser.parse(raw, received_ns)) is not None:
            events.append(event)
    assert snapshot is not None
    return events, snapshot


@pytest.fixture(scope="module")
def spot() -> tuple[list[MarketEvent], BookDelta]:
    return binance_events(CAPTURE / "spot" / "btcusdt_20240808.gz", "binance")


@pytest.mark.parametrize("category", ["linear", "spot"])
def test_bybit_replay_of_the_capture_gives_the_same_normalised_trades(spot, category: str) -> None:
    trades = [e for e in spot[0] if isinstance(e, Trade)]
    parser = BybitParser()
    replayed: list[Trade] = []
    for start in range(0, len(trades), 37):
        batch = trades[start : start + 37]
        wire = to_bybit_trade_message(batch, category=category)  # type: ignore[arg-type]
        for event, original in zip(parser.parse(wire, 0), batch, strict=True):
            assert isinstance(event, Trade) and event.exchange == "bybit"
            # the venue name and the local receive time are the only fields a Bybit replay cannot carry
            replayed.append(msgspec.structs.replace(event, exchange="binance", received_ns=original.received_ns))
    assert len(replayed) == 9_757
    assert replayed == trades


def test_trade_message_has_the_documented_v5_shape(spot) -> None:
    trades = [e for e in spot[0] if isinstance(e, Trade)][:3]
    message = json.loads(to_bybit_trade_message(trades))
    assert list(message) == ["topic", "type", "ts", "data"]
    assert (message["topic"], message["type"]) == ("publicTrade.BTCUSDT", "snapshot")
    assert message["ts"] >= max(t.exchange_ts_ms for t in trades)
    item = message["data"][0]
    assert list(item) == ["T", "s", "S", "v", "p", "L", "i", "BT"]
    assert item == {
        "T": 1723161255342,
        "s": "BTCUSDT",
        "S": "Sell",  # Binance m=true: the buyer was the maker, so the taker sold
        "v": "0.02",
        "p": "61837.63",
        "L": "ZeroPlusTick",
        "i": "3735683259",
        "BT": False,
    }
    assert "L" not in json.loads(to_bybit_trade_message(trades, category="spot"))["data"][0]


def test_tick_direction_follows_price_moves() -> None:
    assert tick_direction(10.0, 9.0, None) == "PlusTick"
    assert tick_direction(10.0, 10.0, "PlusTick") == "ZeroPlusTick"
    assert tick_direction(9.0, 10.0, "ZeroPlusTick") == "MinusTick"
    assert tick_direction(9.0, 9.0, "MinusTick") == "ZeroMinusTick"


def test_orderbook_messages_rebuild_the_same_book_as_binance_diffs(spot) -> None:
    events, snapshot = spot
    binance_book = OrderBook("BTCUSDT", "binance_spot")
    bybit_book = OrderBook("BTCUSDT", "bybit")
    parser = BybitParser()
    update_id = 0
    for event in [snapshot, *[e for e in events if isinstance(e, BookDelta)]]:
        status = binance_book.apply_snapshot(event) if event.snapshot else binance_book.apply(event)
        if status is not BookStatus.APPLIED:
            continue
        update_id += 1
        if event.snapshot:
            wire = to_bybit_orderbook_message(binance_book.snapshot(event.received_ns), depth=5000, update_id=update_id)
        else:
            wire = to_bybit_orderbook_message(event, depth=5000, update_id=update_id)
        [delta] = parser.parse(wire, event.received_ns)
        assert isinstance(delta, BookDelta)
        assert bybit_book.apply(delta) is BookStatus.APPLIED
    assert update_id > 3_000
    assert bybit_book.levels() == binance_book.levels()


def test_orderbook_message_has_the_documented_v5_shape(spot) -> None:
    _, snapshot = spot
    message = json.loads(to_bybit_orderbook_message(snapshot, depth=50, update_id=7, seq=99))
    assert list(message) == ["topic", "type", "ts", "data", "cts"]
    assert (message["topic"], message["type"]) == ("orderbook.50.BTCUSDT", "snapshot")
    assert list(message["data"]) == ["s", "b", "a", "u", "seq"]
    assert (message["data"]["u"], message["data"]["seq"]) == (7, 99)
    bids = [float(p) for p, _ in message["data"]["b"]]
    asks = [float(p) for p, _ in message["data"]["a"]]
    assert len(bids) == len(asks) == 50 and bids == sorted(bids, reverse=True) and asks == sorted(asks)


def test_book_ticker_round_trips_through_orderbook_level_1() -> None:
    events, _ = binance_events(CAPTURE / "usdm" / "btcusdt_20240808.gz", "binanceusdm")
    tickers = [e for e in events if isinstance(e, BookTicker)][:500]
    parser = BybitParser("binanceusdm")
    for ticker in tickers:
        wire = to_bybit_book_ticker_message(ticker)
        assert json.loads(wire)["topic"] == "orderbook.1.BTCUSDT"
        assert parser.parse(wire, ticker.received_ns) == [ticker]


def test_kline_round_trips_and_has_the_documented_v5_shape() -> None:
    candle = Candle("bybit", "BTCUSDT", "1m", 1723161240000, 61837.63, 61850.1, 61790.01, 61800.0, 12.5, True, "kline")
    candle = msgspec.structs.replace(candle, quote_volume=772500.5)
    message = json.loads(to_bybit_kline_message(candle))
    assert message["topic"] == "kline.1.BTCUSDT" and message["type"] == "snapshot"
    assert list(message["data"][0]) == [
        "start",
        "end",
        "interval",
        "open",
        "close",
        "high",
        "low",
        "volume",
        "turnover",
        "confirm",
        "timestamp",
    ]
    assert message["data"][0]["end"] == 1723161299999
    assert BybitParser().parse(to_bybit_kline_message(candle), 0) == [candle]


def test_trade_ids_numeric_uuid_and_garbage() -> None:
    assert trade_id_from_bybit("2290000000061666327") == 2290000000061666327
    uid = "20f43950-d8dd-5b31-9112-a178eb6023af"
    assert 0 <= trade_id_from_bybit(uid) < 2**63
    assert trade_id_from_bybit(uid) == uuid.UUID(uid).int >> 65
    with pytest.raises(MalformedMessage):
        trade_id_from_bybit("not-an-id")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"success":true,"ret_msg":"","conn_id":"c1","req_id":"","op":"subscribe"}',
        b'{"success":true,"ret_msg":"pong","conn_id":"c1","op":"ping"}',
        b'{"topic":"tickers.BTCUSDT","type":"snapshot","ts":1,"data":{"symbol":"BTCUSDT"}}',
    ],
    ids=["subscribe-ack", "pong", "unhandled-topic"],
)
def test_control_and_unhandled_messages_give_no_events(raw: bytes) -> None:
    assert BybitParser().parse(raw, 0) == []


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff garbage",
        b"[]",
        b'{"foo":1}',
        b'{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1}',
        b'{"topic":"publicTrade.BTCUSDT","ts":1,"data":[{"T":1,"s":"X","S":"Up","v":"1","p":"1","i":"1","BT":false}]}',
        b'{"topic":"publicTrade.BTCUSDT","ts":1,"data":[{"T":1,"s":"X","S":"Buy","v":"1","p":"1","i":"x","BT":false}]}',
        b'{"topic":"publicTrade.BTCUSDT","ts":1,"data":[{"T":1,"s":"X","S":"Buy","v":"1","p":"nan","i":"1"}]}',
        b'{"topic":"orderbook.50.BTCUSDT","type":"weird","ts":1,"data":{"s":"X","b":[],"a":[],"u":1,"seq":1}}',
        b'{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1,"data":{"s":"X","b":[["1"]],"a":[],"u":1}}',
        b'{"topic":"kline.1","data":[],"ts":1,"type":"snapshot"}',
        b'{"topic":"kline.1.BTCUSDT","data":[{"start":"x"}],"ts":1,"type":"snapshot"}',
        b'{"topic":"publicTrade.X","data":' + b"[" * 5000 + b"]" * 5000 + b"}",
    ],
)
def test_malformed_messages_raise_malformed_message(raw: bytes) -> None:
    with pytest.raises(MalformedMessage):
        BybitParser().parse(raw, 0)

"""BinanceParser on the shipped real capture, and on malformed, unknown and control messages."""

from __future__ import annotations

import itertools
import json
import random
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import pytest

from realtime.marketdata.binance import BinanceParser, is_depth_snapshot, iter_capture
from realtime.marketdata.errors import MalformedMessage
from realtime.marketdata.models import BookDelta, BookTicker, Candle, MarketEvent, Trade

CAPTURE = Path(__file__).resolve().parents[3] / "data" / "binance-ws-capture"
SPOT_BTC = CAPTURE / "spot" / "btcusdt_20240808.gz"
SPOT_ETH = CAPTURE / "spot" / "ethusdt_20240808.gz"
USDM_BTC = CAPTURE / "usdm" / "btcusdt_20240808.gz"
E = TypeVar("E")


def parse_capture(path: Path, exchange: str = "binance") -> tuple[list[MarketEvent], BookDelta, list[bytes]]:
    parser = BinanceParser(exchange)
    events: list[MarketEvent] = []
    snapshots: list[BookDelta] = []
    raws: list[bytes] = []
    for received_ns, raw in iter_capture(path):
        if is_depth_snapshot(raw):
            snapshots.append(parser.parse_depth_snapshot(raw, received_ns, "BTCUSDT"))
            continue
        event = parser.parse(raw, received_ns)
        assert event is not None, raw[:80]
        events.append(event)
        raws.append(raw)
    assert len(snapshots) == 1
    return events, snapshots[0], raws


@pytest.fixture(scope="module")
def spot_btc() -> tuple[list[MarketEvent], BookDelta, list[bytes]]:
    return parse_capture(SPOT_BTC)


def of_type(events: list[MarketEvent], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


def test_spot_capture_every_line_parses_with_the_documented_counts(spot_btc) -> None:
    events, snapshot, _ = spot_btc
    assert len(of_type(events, Trade)) == 9_757
    assert len(of_type(events, BookTicker)) == 28_040
    assert len(of_type(events, BookDelta)) == 3_451
    assert snapshot.snapshot and snapshot.last_update_id == 50_093_239_218
    assert len(snapshot.bids) == len(snapshot.asks) == 1_000


def test_usdm_capture_parses_with_futures_fields() -> None:
    events, snapshot, _ = parse_capture(USDM_BTC, "binanceusdm")
    deltas = of_type(events, BookDelta)
    tickers = of_type(events, BookTicker)
    assert (len(of_type(events, Trade)), len(tickers), len(deltas)) == (21_313, 66_089, 6_551)
    assert all(d.prev_last_update_id is not None for d in deltas)
    assert all(t.exchange_ts_ms is not None for t in tickers)  # futures bookTicker carries T/E, spot does not
    assert snapshot.exchange_ts_ms == 1_723_161_256_493  # the snapshot's T
    assert {e.exchange for e in events} == {"binanceusdm"}


@pytest.mark.parametrize("path", [SPOT_BTC, SPOT_ETH, USDM_BTC], ids=["spot-btc", "spot-eth", "usdm-btc"])
def test_capture_trade_ids_increase_by_one_without_gaps(path: Path) -> None:
    trades = of_type(parse_capture(path)[0], Trade)
    ids = [t.trade_id for t in trades]
    assert all(b == a + 1 for a, b in itertools.pairwise(ids))


def test_trade_fields_are_the_exchange_values_exactly(spot_btc) -> None:
    events, _, raws = spot_btc
    checked = 0
    for event, raw in zip(events, raws, strict=True):
        if not isinstance(event, Trade):
            continue
        data = json.loads(raw.decode())["data"]
        assert (event.trade_id, event.exchange_ts_ms, event.is_buyer_maker) == (data["t"], data["T"], data["m"])
        # the float's repr is the exchange's decimal text: nothing is lost on the hot path
        assert Decimal(repr(event.price)) == Decimal(data["p"])
        assert Decimal(repr(event.quantity)) == Decimal(data["q"])
        checked += 1
    assert checked == 9_757


def test_vwap_matches_an_independent_decimal_computation(spot_btc) -> None:
    events, _, raws = spot_btc
    trades = of_type(events, Trade)
    vwap = sum(t.price * t.quantity for t in trades) / sum(t.quantity for t in trades)
    notional = volume = Decimal(0)
    for raw in raws:
        message = json.loads(raw.decode(), parse_float=Decimal)
        if message["stream"].endswith("@trade"):
            price, quantity = Decimal(message["data"]["p"]), Decimal(message["data"]["q"])
            notional += price * quantity
            volume += quantity
    assert abs(Decimal(repr(vwap)) - notional / volume) < Decimal("1e-8")


def test_depth_levels_equal_python_float_of_the_text(spot_btc) -> None:
    events, _, raws = spot_btc
    for event, raw in zip(events, raws, strict=True):
        if isinstance(event, BookDelta):
            data = json.loads(raw.decode())["data"]
            assert event.bids == [(float(p), float(q)) for p, q in data["b"]]
            assert event.asks == [(float(p), float(q)) for p, q in data["a"]]
            assert (event.first_update_id, event.last_update_id, event.exchange_ts_ms) == (
                data["U"],
                data["u"],
                data["E"],
            )


def test_kline_and_agg_trade_messages_become_candle_and_trade() -> None:
    parser = BinanceParser()
    kline = (
        b'{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1723161300001,"s":"BTCUSDT","k":{"t":1723161240000,'
        b'"T":1723161299999,"s":"BTCUSDT","i":"1m","f":1,"L":9,"o":"61837.63","c":"61800.00","h":"61850.10",'
        b'"l":"61790.01","v":"12.5","n":9,"x":true,"q":"772500.5","V":"6","Q":"370800","B":"0"}}}'
    )
    candle = parser.parse(kline, 7)
    assert candle == Candle(
        "binance",
        "BTCUSDT",
        "1m",
        1723161240000,
        61837.63,
        61850.1,
        61790.01,
        61800.0,
        12.5,
        True,
        "kline",
        772500.5,
        9,
    )
    agg = (
        b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":2,"s":"BTCUSDT","a":42,"p":"1.5","q":"2",'
        b'"f":100,"l":105,"T":1,"m":false,"M":true}}'
    )
    assert parser.parse(agg, 9) == Trade("binance", "BTCUSDT", 42, 1.5, 2.0, False, 1, 9)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"result":null,"id":1}',
        b'{"error":{"code":2,"msg":"Invalid request"},"id":3}',
        b'{"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate","p":"1"}}',
        b'{"stream":"btcusdt@depth20@100ms","data":{"lastUpdateId":1,"bids":[],"asks":[]}}',
    ],
    ids=["ack", "request-error", "unknown-stream", "partial-depth"],
)
def test_control_and_unknown_stream_messages_return_none(raw: bytes) -> None:
    parser = BinanceParser()
    assert parser.parse(raw, 0) is None
    assert parser.parse(raw, 0) is None  # also once the stream is known to the fast path


TRADE = b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":5,"p":"1.5","q":"2","T":1,"m":true}}'
MALFORMED = [
    b"",
    b"garbage",
    b"\xff\xfe\x00\x01",
    b"[]",
    b"null",
    b"42",
    b'{"stream":1,"data":{}}',
    b'{"stream":"btcusdt@trade"}',
    b'{"stream":"btcusdt@trade","data":[]}',
    b'{"stream":"btcusdt@trade","data":{"s":"BTCUSDT","t":5,"p":"1.5","q":"2","T":1}}',  # no "m"
    TRADE.replace(b'"p":"1.5"', b'"p":"abc"'),
    TRADE.replace(b'"p":"1.5"', b'"p":"nan"'),
    TRADE.replace(b'"p":"1.5"', b'"p":"-1"'),
    TRADE.replace(b'"t":5', b'"t":"five"'),
    TRADE.replace(b'"m":true', b'"m":[1]'),
    TRADE[:-5],
    b'{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"1","B":"1","a":"2"}}',
    b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"b":[["1"]],"a":[]}}',
    b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"b":[["1","inf"]],"a":[]}}',
    b'{"lastUpdateId":1,"bids":[],"asks":[]}',  # the REST snapshot is not a stream message
    b'{"stream":"btcusdt@trade","data":' + b"[" * 5000 + b"]" * 5000 + b"}",
]


@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_messages_raise_malformed_message(raw: bytes) -> None:
    fresh, warmed = BinanceParser(), BinanceParser()
    warmed.parse(TRADE, 0)  # the fast path now knows btcusdt@trade
    for parser in (fresh, warmed):
        with pytest.raises(MalformedMessage):
            parser.parse(raw, 0)


def test_depth_snapshot_rejects_garbage() -> None:
    with pytest.raises(MalformedMessage):
        BinanceParser().parse_depth_snapshot(b'{"lastUpdateId":"x"}', 0, "BTCUSDT")


def test_mutated_real_messages_never_raise_anything_but_malformed_message(spot_btc) -> None:
    _, _, raws = spot_btc
    rng = random.Random(20240808)
    parser = BinanceParser()
    outcomes = {"event": 0, "none": 0, "malformed": 0}
    for _ in range(3_000):
        raw = bytearray(rng.choice(raws))
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(raw))
            if rng.random() < 0.5:
                raw[position] = rng.randrange(256)
            else:
                del raw[position : position + rng.randint(1, 8)]
        try:
            event = parser.parse(bytes(raw), 0)
        except MalformedMessage:
            outcomes["malformed"] += 1
        else:
            outcomes["event" if event is not None else "none"] += 1
    assert outcomes["malformed"] > 1_000  # the mutations do break messages, and only our error comes out

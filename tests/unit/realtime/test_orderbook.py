"""OrderBook: rebuilt from the real capture's snapshot + diffs, and its resync signals on gaps and crossed books.

What "matches the bookTicker" means here: Binance's bookTicker ``u`` and diff-depth ``u`` count the same order-book
updates, so whenever a depth event ends at an update id for which a bookTicker was also sent, the rebuilt book's
best bid/ask (price and size) must equal that bookTicker exactly. The 100 ms depth stream lags the real-time
bookTicker, so the final bookTicker of the capture (a later ``u``) is not comparable; the last equal-``u`` pair is.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from realtime.marketdata.binance import BinanceParser, is_depth_snapshot, iter_capture
from realtime.marketdata.errors import BookNotSynced
from realtime.marketdata.models import BookDelta, BookTicker
from realtime.marketdata.orderbook import BookStatus, OrderBook, Sequencing

CAPTURE = Path(__file__).resolve().parents[3] / "data" / "binance-ws-capture"


def load(path: Path, exchange: str) -> tuple[BookDelta, list[BookDelta], dict[int, BookTicker], int]:
    """Snapshot, depth events, bookTickers by update id, and how many depth events arrived before the snapshot."""
    parser = BinanceParser(exchange)
    snapshot: BookDelta | None = None
    deltas: list[BookDelta] = []
    tickers: dict[int, BookTicker] = {}
    before = 0
    for received_ns, raw in iter_capture(path):
        if is_depth_snapshot(raw):
            snapshot = parser.parse_depth_snapshot(raw, received_ns, "BTCUSDT")
            before = len(deltas)
            continue
        event = parser.parse(raw, received_ns)
        if isinstance(event, BookDelta):
            deltas.append(event)
        elif isinstance(event, BookTicker):
            tickers[event.update_id] = event
    assert snapshot is not None
    return snapshot, deltas, tickers, before


@pytest.fixture(scope="module")
def spot() -> tuple[BookDelta, list[BookDelta], dict[int, BookTicker], int]:
    return load(CAPTURE / "spot" / "btcusdt_20240808.gz", "binance")


def replay(book: OrderBook, snapshot: BookDelta, deltas: list[BookDelta], before: int) -> list[BookStatus]:
    """Feed events in capture order: those received before the snapshot are buffered, then it is applied."""
    statuses = [book.apply(d) for d in deltas[:before]]
    statuses.append(book.apply_snapshot(snapshot))
    statuses += [book.apply(d) for d in deltas[before:]]
    return statuses


@pytest.mark.parametrize(
    ("market", "exchange", "sequencing"),
    [
        ("spot/btcusdt", "binance", "binance_spot"),
        ("spot/ethusdt", "binance", "binance_spot"),
        ("usdm/btcusdt", "binanceusdm", "binance_usdm"),
    ],
)
def test_rebuilt_book_equals_book_ticker_at_every_shared_update_id(
    market: str, exchange: str, sequencing: Sequencing
) -> None:
    snapshot, deltas, tickers, before = load(CAPTURE / f"{market}_20240808.gz", exchange)
    book = OrderBook("BTCUSDT", sequencing)
    statuses = [book.apply(d) for d in deltas[:before]]
    assert set(statuses) == {BookStatus.BUFFERED}
    assert book.apply_snapshot(snapshot) is BookStatus.APPLIED
    compared = 0
    last_pair: tuple[object, object] | None = None
    for delta in deltas[before:]:
        status = book.apply(delta)
        assert status in (BookStatus.APPLIED, BookStatus.STALE)
        bid, ask = book.best_bid(), book.best_ask()
        assert bid is not None and ask is not None and bid[0] < ask[0]  # never crossed
        ticker = tickers.get(book.last_update_id or 0)
        if status is BookStatus.APPLIED and ticker is not None:
            last_pair = ((ticker.bid_price, ticker.bid_qty), (ticker.ask_price, ticker.ask_qty))
            assert (bid, ask) == last_pair
            compared += 1
    assert compared > 500 and last_pair is not None
    assert book.synced and book.last_update_id == deltas[-1].last_update_id


def test_spot_gap_in_update_ids_signals_resync_and_hides_the_book(spot) -> None:
    snapshot, deltas, _, before = spot
    book = OrderBook("BTCUSDT", "binance_spot")
    replay(book, snapshot, deltas[:100], before)
    assert book.apply(deltas[101]) is BookStatus.RESYNC  # deltas[100] lost
    assert not book.synced
    with pytest.raises(BookNotSynced):
        book.best_bid()
    with pytest.raises(BookNotSynced):
        book.top(5)
    assert book.apply(deltas[102]) is BookStatus.BUFFERED


def test_spot_resync_from_a_newer_snapshot_replays_the_buffer_and_catches_up(spot) -> None:
    snapshot, deltas, _, before = spot
    reference = OrderBook("BTCUSDT", "binance_spot")
    replay(reference, snapshot, deltas[:150], before)
    newer_snapshot = reference.snapshot(received_ns=0)  # what a REST call at update 150 would return
    gapped = OrderBook("BTCUSDT", "binance_spot")
    replay(gapped, snapshot, deltas[:100], before)
    assert gapped.apply(deltas[101]) is BookStatus.RESYNC
    for delta in deltas[102:200]:
        assert gapped.apply(delta) is BookStatus.BUFFERED
    assert gapped.apply_snapshot(newer_snapshot) is BookStatus.APPLIED  # stale buffered events dropped, rest applied
    for delta in deltas[150:200]:
        reference.apply(delta)
    assert gapped.levels() == reference.levels()
    assert gapped.digest() == reference.digest()


def test_snapshot_older_than_the_buffer_asks_for_another(spot) -> None:
    snapshot, deltas, _, before = spot
    book = OrderBook("BTCUSDT", "binance_spot")
    for delta in deltas[before + 10 : before + 20]:
        book.apply(delta)
    assert book.apply_snapshot(snapshot) is BookStatus.RESYNC
    assert not book.synced


def test_stale_events_are_dropped_without_changing_the_book(spot) -> None:
    snapshot, deltas, _, before = spot
    book = OrderBook("BTCUSDT", "binance_spot")
    replay(book, snapshot, deltas[:50], before)
    digest = book.digest(1000)
    assert book.apply(deltas[40]) is BookStatus.STALE
    assert book.digest(1000) == digest


def test_usdm_broken_pu_chain_signals_resync() -> None:
    snapshot, deltas, _, before = load(CAPTURE / "usdm" / "btcusdt_20240808.gz", "binanceusdm")
    book = OrderBook("BTCUSDT", "binance_usdm")
    replay(book, snapshot, deltas[:60], before)
    broken = msgspec.structs.replace(deltas[60], prev_last_update_id=(deltas[60].prev_last_update_id or 0) - 1)
    assert book.apply(broken) is BookStatus.RESYNC


def level_delta(u: int, bids: list[tuple[float, float]], asks: list[tuple[float, float]], **kw: object) -> BookDelta:
    return BookDelta("test", "BTCUSDT", u, u, bids, asks, None, 0, **kw)  # type: ignore[arg-type]


def test_crossed_book_signals_resync() -> None:
    book = OrderBook("BTCUSDT", "binance_spot")
    book.apply_snapshot(level_delta(10, [(100.0, 1.0)], [(101.0, 1.0)], snapshot=True))
    assert book.apply(level_delta(11, [(101.5, 2.0)], [])) is BookStatus.RESYNC
    assert not book.synced


def test_levels_are_sorted_best_first_and_zero_removes() -> None:
    book = OrderBook("BTCUSDT", "binance_spot")
    book.apply_snapshot(level_delta(1, [(99.0, 1.0), (100.0, 2.0)], [(102.0, 1.0), (101.0, 3.0)], snapshot=True))
    assert book.top(1) == ([(100.0, 2.0)], [(101.0, 3.0)])
    assert book.apply(level_delta(2, [(100.0, 0.0), (98.0, 5.0)], [(101.0, 0.0), (101.5, 1.0)])) is BookStatus.APPLIED
    assert book.levels() == ([(99.0, 1.0), (98.0, 5.0)], [(101.5, 1.0), (102.0, 1.0)])
    assert book.best_bid() == (99.0, 1.0) and book.best_ask() == (101.5, 1.0)


def test_bybit_sequence_snapshot_delta_gap_and_restart() -> None:
    book = OrderBook("BTCUSDT", "bybit")
    assert book.apply(level_delta(5, [(1.0, 1.0)], [])) is BookStatus.RESYNC  # no snapshot seen
    assert book.apply(level_delta(7, [(100.0, 1.0)], [(101.0, 1.0)], snapshot=True)) is BookStatus.APPLIED
    assert book.apply(level_delta(8, [(100.5, 1.0)], [])) is BookStatus.APPLIED
    assert book.apply(level_delta(8, [(100.5, 9.0)], [])) is BookStatus.STALE
    assert book.best_bid() == (100.5, 1.0)
    assert book.apply(level_delta(10, [], [(101.0, 0.0)])) is BookStatus.RESYNC  # u=9 lost
    assert book.apply(level_delta(1, [(200.0, 1.0)], [(201.0, 1.0)], snapshot=True)) is BookStatus.APPLIED  # restart
    assert book.apply(level_delta(2, [], [(200.5, 2.0)])) is BookStatus.APPLIED
    assert book.top(5) == ([(200.0, 1.0)], [(200.5, 2.0), (201.0, 1.0)])

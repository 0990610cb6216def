"""Replay source built from 1-minute candles: the deterministic trades of ``candles.py``, and a book around them.

Trades and their ids come from ``candles.candle_trades`` (ids are a function of the candle's position in its file), so
the WebSocket streams print exactly the trades the REST engine matches against. After every trade the synthetic ladder
of ``candles.book_around_trade`` is quoted: it goes out as a Binance ``depthUpdate`` diff and a ``bookTicker``, after
a REST-style snapshot that starts the book.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path

import orjson

from realtime.exchanges.simulator.candles import (
    TRADES_PER_CANDLE,
    SimTrade,
    book_around_trade,
    candle_trades,
    load_candles,
    symbol_of_file,
)
from realtime.exchanges.simulator.replay_state import ReplayEvent, fixed8, stream_message

_FIRST_UPDATE_ID = 1_000_000
Ladder = dict[str, str]  # price text -> quantity text, best first


class CandleSource:
    """Replay source over candle files named ``<SYMBOL>_1m.csv[.gz]``; several symbols are merged in time order."""

    def __init__(
        self,
        paths: Sequence[Path],
        *,
        start_ms: int | None = None,
        max_candles: int | None = None,
        tick_size: str = "0.01",
        level_qty: str = "0.25",
        book_levels: int = 20,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.start_ms = start_ms
        self.max_candles = max_candles
        self.tick = Decimal(tick_size)
        self.level_qty = Decimal(level_qty)
        self.book_levels = book_levels

    def events(self) -> Iterator[ReplayEvent]:
        return heapq.merge(*(self._symbol_events(path) for path in self.paths), key=lambda event: event.at_ns)

    def _symbol_events(self, path: Path) -> Iterator[ReplayEvent]:
        symbol = symbol_of_file(path)
        lower = symbol.lower()
        trade_stream, depth_stream, ticker_stream = f"{lower}@trade", f"{lower}@depth@100ms", f"{lower}@bookTicker"
        candles = load_candles(path)
        update_id = _FIRST_UPDATE_ID
        book: tuple[Ladder, Ladder] | None = None
        replayed = 0
        for index, row in enumerate(candles):
            if self.start_ms is not None and row.open_time_ms < self.start_ms:
                continue
            if self.max_candles is not None and replayed >= self.max_candles:
                return
            replayed += 1
            for trade in candle_trades(candles, index, TRADES_PER_CANDLE):
                new_book = self._ladder(trade)
                if book is None:
                    snapshot = {
                        "lastUpdateId": update_id,
                        "bids": list(new_book[0].items()),
                        "asks": list(new_book[1].items()),
                    }
                    raw = orjson.dumps(snapshot)
                    yield ReplayEvent(trade.ts_ms * 1_000_000 - 1, "snapshot", symbol, "", raw, raw)
                    book = new_book
                at_ns = trade.ts_ms * 1_000_000
                payload = orjson.dumps(
                    {
                        "e": "trade",
                        "E": trade.ts_ms,
                        "s": symbol,
                        "t": trade.trade_id,
                        "p": fixed8(trade.price),
                        "q": fixed8(trade.qty),
                        "T": trade.ts_ms,
                        "m": trade.is_buyer_maker,
                        "M": True,
                    }
                )
                yield ReplayEvent(at_ns, "trade", symbol, trade_stream, stream_message(trade_stream, payload), payload)
                update_id += 1
                depth = {
                    "e": "depthUpdate",
                    "E": trade.ts_ms,
                    "s": symbol,
                    "U": update_id,
                    "u": update_id,
                    "b": _diff(book[0], new_book[0]),
                    "a": _diff(book[1], new_book[1]),
                }
                book = new_book
                payload = orjson.dumps(depth)
                message = stream_message(depth_stream, payload)
                yield ReplayEvent(at_ns + 1, "depth", symbol, depth_stream, message, payload)
                (bid, bid_qty), (ask, ask_qty) = next(iter(book[0].items())), next(iter(book[1].items()))
                payload = orjson.dumps({"u": update_id, "s": symbol, "b": bid, "B": bid_qty, "a": ask, "A": ask_qty})
                message = stream_message(ticker_stream, payload)
                yield ReplayEvent(at_ns + 2, "bookTicker", symbol, ticker_stream, message, payload)

    def _ladder(self, trade: SimTrade) -> tuple[Ladder, Ladder]:
        bids, asks = book_around_trade(trade, self.tick, self.level_qty, self.book_levels)
        return {fixed8(p): fixed8(q) for p, q in bids}, {fixed8(p): fixed8(q) for p, q in asks}


def _diff(old: Ladder, new: Ladder) -> list[list[str]]:
    """Levels that changed, with zero quantity for those that went away (Binance diff-depth semantics)."""
    changed = [[price, qty] for price, qty in new.items() if old.get(price) != qty]
    return changed + [[price, fixed8(Decimal(0))] for price in old if price not in new]

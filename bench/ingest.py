"""Market-data ingest benchmark: parse + normalise versus cryptofeed, publish to Redis Streams, COPY into PostgreSQL.

    python -m bench.ingest [--min-messages 200000] [--repeats 3]

Input: the real Binance capture ``data/binance-ws-capture/spot/btcusdt_20240808.gz`` (trades, book tickers,
100 ms diff depth, one REST depth snapshot), replayed as many times as needed to reach ``--min-messages``; each
replay starts a fresh book from the captured snapshot. cryptofeed 2.4.1's Binance feed subscribes to ``aggTrade``
and drops ``@trade`` events, so trade messages are rewritten once, before timing, as the equivalent ``@aggTrade``
messages (same fields plus ``a``/``f``/``l``), and BOTH sides are timed on those identical bytes. Per message both
sides decode, normalise, keep the L2 book of the depth stream (cryptofeed's ``_book``, our ``OrderBook``) and hand
the event to a callback. cryptofeed runs its own ``message_handler`` coroutine; its REST snapshot request is served
from the captured snapshot, so its own ``_snapshot`` code runs without network. ``ours_raw_capture_msgs_per_s`` is our
path on the unmodified capture.

Publish: normalised trades, msgspec JSON, pipelined XADD (one entry per trade, approximate MAXLEN) in batches.
COPY: trades into a table with ``market_trades``' columns and primary key in a scratch database, text COPY (floats
written as their shortest repr, i.e. the exchange's decimal text, into NUMERIC; timestamps as timestamptz text), one
transaction per batch. Batches of 5,000 match ``MarketDataSink``'s default; building rows is inside the timing.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import orjson
import psycopg
import redis

from bench.common import Servers
from bench.ingest_lag import measure_lag
from core.db.timeseries import TIME_SERIES_TABLES
from core.db.urls import libpq_url, with_database
from core.messaging.streams import Stream, StreamNames
from realtime.marketdata.binance import BinanceParser, is_depth_snapshot, iter_capture
from realtime.marketdata.models import BookDelta, MarketEvent, Trade
from realtime.marketdata.orderbook import OrderBook

CAPTURE = Path(__file__).resolve().parent.parent / "data" / "binance-ws-capture" / "spot" / "btcusdt_20240808.gz"
SYMBOL = "BTCUSDT"


@dataclass(frozen=True)
class Replay:
    """One pass over the capture, split around the REST snapshot (which is not a stream message)."""

    before: list[tuple[int, bytes]]
    snapshot: tuple[int, bytes]
    after: list[tuple[int, bytes]]

    @property
    def messages(self) -> int:
        return len(self.before) + len(self.after)


def load_replay(path: Path, rewrite: Callable[[bytes], bytes] | None = None) -> Replay:
    lines = list(iter_capture(path))
    at = next(i for i, (_, raw) in enumerate(lines) if is_depth_snapshot(raw))
    fix = rewrite or (lambda raw: raw)
    return Replay(
        [(ns, fix(raw)) for ns, raw in lines[:at]], lines[at], [(ns, fix(raw)) for ns, raw in lines[at + 1 :]]
    )


def as_agg_trade(raw: bytes) -> bytes:
    """A ``@trade`` message as the ``@aggTrade`` message of that single trade; other messages unchanged."""
    if b'@trade"' not in raw[:40]:
        return raw
    message = orjson.loads(raw)
    d = message["data"]
    agg = {"e": "aggTrade", "E": d["E"], "s": d["s"], "a": d["t"], "p": d["p"], "q": d["q"]}
    agg |= {"f": d["t"], "l": d["t"], "T": d["T"], "m": d["m"], "M": d.get("M", True)}
    return orjson.dumps({"stream": message["stream"].replace("@trade", "@aggTrade"), "data": agg})


def run_ours(replay: Replay, passes: int, with_book: bool = True) -> tuple[float, int]:
    """Messages per second through BinanceParser (+ OrderBook for depth), and how many events reached the callback."""
    parser = BinanceParser()
    delivered = 0

    def on_event(event: MarketEvent) -> None:
        nonlocal delivered
        delivered += 1

    parse = parser.parse
    started = time.perf_counter()
    for _ in range(passes):
        book = OrderBook(SYMBOL, "binance_spot")
        apply = book.apply
        for part in (replay.before, None, replay.after):
            if part is None:
                ns, raw = replay.snapshot
                book.apply_snapshot(parser.parse_depth_snapshot(raw, ns, SYMBOL))
                continue
            for ns, raw in part:
                event = parse(raw, ns)
                if with_book and type(event) is BookDelta:
                    apply(event)
                on_event(event)  # type: ignore[arg-type]
        if with_book and not book.synced:
            raise RuntimeError("the replayed book lost sync: the figure would not be of a working path")
    elapsed = time.perf_counter() - started
    return replay.messages * passes / elapsed, delivered


class _CapturedRest:
    """Stands in for cryptofeed's HTTPAsyncConn: its depth-snapshot request gets the captured REST response."""

    def __init__(self, snapshot: str) -> None:
        self.snapshot = snapshot
        self.requests = 0

    async def read(self, address: str, **_: object) -> str:
        self.requests += 1
        return self.snapshot

    async def close(self) -> None:
        return None


def run_cryptofeed(replay: Replay, passes: int) -> tuple[float, int, int]:
    """Messages per second through cryptofeed's Binance ``message_handler``; events delivered; snapshots served."""
    from cryptofeed.defines import BINANCE, L2_BOOK, TICKER, TRADES
    from cryptofeed.exchanges.binance import Binance
    from cryptofeed.symbols import Symbols

    # What cryptofeed would read from /api/v3/exchangeInfo, parsed by its own code (no network here)
    info: dict[str, object] = {"symbol": SYMBOL, "baseAsset": "BTC", "quoteAsset": "USDT", "status": "TRADING"}
    info["filters"] = [{"tickSize": "0.01"}]
    Symbols.set(BINANCE, *Binance._parse_symbol_data({"symbols": [info]}))
    delivered = 0

    async def on_event(obj: object, receipt_timestamp: float) -> None:
        nonlocal delivered
        delivered += 1

    callbacks = {TRADES: on_event, TICKER: on_event, L2_BOOK: on_event}
    feed = Binance(symbols=["BTC-USDT"], channels=[TRADES, TICKER, L2_BOOK], callbacks=callbacks)
    rest = _CapturedRest(replay.snapshot[1].decode())
    feed.http_conn = rest
    # Text frames reach cryptofeed as str, with the receipt time as float seconds
    messages = [(raw.decode(), ns / 1e9) for ns, raw in replay.before + replay.after]

    async def drive() -> float:
        handler = feed.message_handler
        started = time.perf_counter()
        for _ in range(passes):
            feed._reset()  # a fresh book per pass: the first depth message fetches the (captured) snapshot
            for text, ts in messages:
                await handler(text, None, ts)
        return time.perf_counter() - started

    elapsed = asyncio.run(drive())
    return replay.messages * passes / elapsed, delivered, rest.requests


def normalised_trades(replay: Replay) -> list[Trade]:
    parser = BinanceParser()
    events = (parser.parse(raw, ns) for ns, raw in replay.before + replay.after)
    return [e for e in events if isinstance(e, Trade)]


def repeat_trades(trades: Sequence[Trade], count: int) -> list[Trade]:
    """``count`` trades cycling through the capture, trade ids shifted per cycle so the primary key stays unique."""
    span = max(t.trade_id for t in trades) - min(t.trade_id for t in trades) + 1
    return [
        msgspec.structs.replace(t, trade_id=t.trade_id + cycle * span)
        for cycle in range(-(-count // len(trades)))
        for t in trades
    ][:count]


def run_publish(trades: Sequence[Trade], redis_url: str, batch: int) -> float:
    """Trades per second published to a Redis Stream (pipelined XADD of msgspec JSON, one entry per trade)."""
    client = redis.Redis.from_url(redis_url)
    prefix = f"patriot_bench_{uuid.uuid4().hex[:10]}:"
    key = StreamNames(prefix, 1).key(Stream.MARKET_TRADES, SYMBOL)
    encode = msgspec.json.Encoder().encode
    try:
        started = time.perf_counter()
        for start in range(0, len(trades), batch):
            pipe = client.pipeline(transaction=False)
            for trade in trades[start : start + batch]:
                pipe.xadd(key, {"p": encode(trade)}, maxlen=1_000_000, approximate=True)
            pipe.execute()
        elapsed = time.perf_counter() - started
        if client.xlen(key) != len(trades):
            raise RuntimeError("not every trade reached the stream")
        return len(trades) / elapsed
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


class _TimestampText:
    """timestamptz input text for epoch times, the date and time memoised per second (trades come in bursts).

    psycopg's text dumper for datetime costs more than the rest of a row together; this keeps COPY client-cheap.
    """

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def _at(self, second: int) -> str:
        if second != self._second:
            self._second, self._prefix = second, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second))
        return self._prefix

    def from_ms(self, ms: int) -> str:
        second, millis = divmod(ms, 1000)
        return f"{self._at(second)}.{millis:03d}+00"

    def from_ns(self, ns: int) -> str:
        second, nanos = divmod(ns, 1_000_000_000)
        return f"{self._at(second)}.{nanos // 1000:06d}+00"


def run_copy(trades: Sequence[Trade], server_url: str, batch: int) -> float:
    """Rows per second COPYed (text format) into a ``market_trades``-shaped table with its primary key."""
    table = next(t for t in TIME_SERIES_TABLES if t.name == "market_trades")
    columns = "exchange, symbol, trade_id, price, quantity, is_buyer_maker, exchange_ts, exchange_ts_ms, received_at"
    name = f"patriot_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with psycopg.connect(with_database(server_url, name)) as conn:
            conn.execute(f"CREATE TABLE market_trades ({table.columns}, PRIMARY KEY ({', '.join(table.primary_key)}))")
            conn.commit()
            exchange_ts, received_at = _TimestampText(), _TimestampText()
            started = time.perf_counter()
            for start in range(0, len(trades), batch):
                with conn.transaction(), conn.cursor().copy(f"COPY market_trades ({columns}) FROM STDIN") as copy:
                    for t in trades[start : start + batch]:
                        copy.write_row(
                            (
                                t.exchange,
                                t.symbol,
                                t.trade_id,
                                t.price,  # the text dumper writes repr(float): the exchange's decimal text
                                t.quantity,
                                t.is_buyer_maker,
                                exchange_ts.from_ms(t.exchange_ts_ms),
                                t.exchange_ts_ms,
                                received_at.from_ns(t.received_ns),
                            )
                        )
            elapsed = time.perf_counter() - started
            stored = conn.execute("SELECT count(*) FROM market_trades").fetchone()
            if stored is None or stored[0] != len(trades):
                raise RuntimeError("not every trade was stored")
        return len(trades) / elapsed
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--min-messages", type=int, default=200_000)
    args.add_argument("--repeats", type=int, default=3, help="timed runs per figure; the best is reported")
    args.add_argument("--rows", type=int, default=200_000, help="trades published and COPYed")
    args.add_argument("--batch", type=int, default=5_000)
    opts = args.parse_args()
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    database_url = libpq_url(os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))

    raw_replay = load_replay(CAPTURE)
    replay = load_replay(CAPTURE, as_agg_trade)
    passes = -(-opts.min_messages // replay.messages)
    messages = replay.messages * passes
    run_ours(replay, 1)  # warm-up: decoder and handler caches
    ours = max(run_ours(replay, passes)[0] for _ in range(opts.repeats))
    ours_parse_only = max(run_ours(replay, passes, with_book=False)[0] for _ in range(opts.repeats))
    ours_raw = max(run_ours(raw_replay, passes)[0] for _ in range(opts.repeats))
    cryptofeed_runs = [run_cryptofeed(replay, passes) for _ in range(opts.repeats)]
    cryptofeed = max(rate for rate, _, _ in cryptofeed_runs)
    _, ours_delivered = run_ours(replay, 1)
    _, cf_delivered, cf_snapshots = run_cryptofeed(replay, 1)
    print(
        f"{messages} messages ({passes} passes of {replay.messages}); events delivered in one pass: ours "
        f"{ours_delivered}, cryptofeed {cf_delivered} (it skips depth events older than its snapshot); "
        f"cryptofeed snapshot requests served from the capture: {cf_snapshots}"
    )

    trades = repeat_trades(normalised_trades(raw_replay), opts.rows)
    publish = run_publish(trades, redis_url, opts.batch)
    copy_rate = run_copy(trades, database_url, opts.batch)

    result = {
        "benchmark": "ingest",
        "messages": messages,
        "ours_msgs_per_s": round(ours),
        "ours_parse_only_msgs_per_s": round(ours_parse_only),
        "ours_raw_capture_msgs_per_s": round(ours_raw),
        "cryptofeed_msgs_per_s": round(cryptofeed),
        "ratio_vs_cryptofeed": round(ours / cryptofeed, 2),
        "publish_msgs_per_s": round(publish),
        "copy_rows_per_s": round(copy_rate),
        "rows": len(trades),
        "batch": opts.batch,
    }
    result.update(asyncio.run(measure_lag(Servers(database_url, redis_url), CAPTURE, speed=10.0)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

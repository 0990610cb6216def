"""A generated fund in PostgreSQL, priced by the real shipped candles: users, accounts, strategies, deposits,
orders, fills, positions, balances, hourly candles and order events. For the pipeline's tests and benchmark and
for a demo warehouse; everything goes in with COPY, so a million fills take seconds.

Prices come from one of the shipped real series (``FundSpec.window``): a window of Binance 1-minute candles
(``2025``, ``Q4_2024``, ``2023-01``; about 28-35 days each, stored as hourly candles), or ``daily``: Bitstamp's
BTC/USD and ETH/USD daily bars (2014-2020) standing in for BTCUSDT/ETHUSDT, for funds that span up to five
years (stored as daily candles). With minute data a trade happens at the real close of its minute; with daily
bars at a price drawn inside the day's real low-high range. Each account alternates buys and sells of a few
percent of its capital, so positions move and PnL is realised both ways. Fees are 0.1 % in USDT.
"""

from __future__ import annotations

import gzip
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

import psycopg

DATA = Path(__file__).resolve().parent.parent / "data" / "binance-spot-1m"
DAILY = Path(__file__).resolve().parent.parent / "data" / "daily" / "bitstamp_BTC_ETH_LTC_USD_daily.csv"
DAILY_WINDOW = "daily"
FEE_RATE = Decimal("0.001")
STEP = {"BTCUSDT": Decimal("0.00001"), "ETHUSDT": Decimal("0.0001")}


@dataclass(frozen=True, slots=True)
class FundSpec:
    users: int = 4
    days: int = 60
    fills: int = 2_000
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    deposit: Decimal = Decimal(100_000)
    strategies: int = 2
    seed: int = 7
    window: str = "2025"  # a window of data/binance-spot-1m, or "daily" (Bitstamp daily bars, up to 5 years)


@dataclass(frozen=True, slots=True)
class Fund:
    users: list[str]
    accounts: list[str]
    strategies: list[str]
    start: datetime
    end: datetime
    fills: int


def minute_closes(
    symbol: str, window: str, days: int
) -> list[tuple[datetime, Decimal, Decimal, Decimal, Decimal, Decimal]]:
    """(open time, open, high, low, close, volume) of the first ``days`` days of the shipped 1-minute candles."""
    rows = []
    with gzip.open(DATA / window / f"{symbol}_1m.csv.gz", "rt") as fh:
        header = next(fh).strip().split(",")
        col = {name: i for i, name in enumerate(header)}
        for line in fh:
            f = line.rstrip().split(",")
            ts = datetime.fromisoformat(f[col["timestamp"]]).replace(tzinfo=UTC)
            if rows and ts - rows[0][0] >= timedelta(days=days):
                break
            rows.append((ts, *(Decimal(f[col[k]]) for k in ("open", "high", "low", "close", "volume"))))
    return rows


def daily_bars(symbol: str, days: int) -> list[tuple[datetime, Decimal, Decimal, Decimal, Decimal, Decimal]]:
    """(day, open, high, low, close, volume) of the last ``days`` complete days of the shipped Bitstamp daily bars
    for the base asset of ``symbol`` (BTCUSDT -> BTC)."""
    base = symbol.removesuffix("USDT")
    with DAILY.open(encoding="utf-8") as fh:
        header = next(fh).strip().split(",")
        col = {name: i for i, name in enumerate(header)}
        rows = []
        for line in fh:
            f = line.rstrip().split(",")
            if not f[col[f"{base}:close"]]:
                continue
            day = datetime.fromisoformat(f[0]).replace(tzinfo=UTC)
            rows.append((day, *(Decimal(f[col[f"{base}:{k}"]]) for k in ("open", "high", "low", "close", "volume"))))
    complete = rows[:-1]  # the file's last day was captured before it closed
    if len(complete) < days:
        raise ValueError(f"the daily bars of {base} cover {len(complete)} days, fewer than the {days} asked for")
    return complete[-days:]


def price_path(
    symbol: str, window: str, days: int
) -> list[tuple[datetime, Decimal, Decimal, Decimal, Decimal, Decimal]]:
    """The real bars a generated fund trades and is marked on: daily bars or 1-minute candles (see module doc)."""
    return daily_bars(symbol, days + 1) if window == DAILY_WINDOW else minute_closes(symbol, window, days)


def hourly(candles: list[tuple[datetime, Decimal, Decimal, Decimal, Decimal, Decimal]]) -> Iterator[tuple[object, ...]]:
    """1-minute candles rolled up to hours."""
    bucket: list[tuple[datetime, Decimal, Decimal, Decimal, Decimal, Decimal]] = []
    for row in candles:
        if bucket and row[0].replace(minute=0) != bucket[0][0].replace(minute=0):
            yield _roll(bucket)
            bucket = []
        bucket.append(row)
    if bucket:
        yield _roll(bucket)


def _roll(b: list[tuple[datetime, Decimal, Decimal, Decimal, Decimal, Decimal]]) -> tuple[object, ...]:
    return (
        b[0][0].replace(minute=0),
        b[0][1],
        max(r[2] for r in b),
        min(r[3] for r in b),
        b[-1][4],
        sum(r[5] for r in b),
    )


def generate_fund(database_url: str, spec: FundSpec = FundSpec(), progress: bool = False) -> Fund:
    """Write one generated fund; returns its ids and time span."""
    rng = random.Random(spec.seed)
    prices = {s: price_path(s, spec.window, spec.days) for s in spec.symbols}
    start, end = prices[spec.symbols[0]][0][0], prices[spec.symbols[0]][-1][0]
    if spec.window == DAILY_WINDOW:  # trading starts once the first day's close marks the book
        start, end = start + timedelta(days=1), end + timedelta(days=1) - timedelta(minutes=1)
    users = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(spec.users)]
    accounts = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(spec.users)]
    strategies = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(spec.strategies)]
    with psycopg.connect(database_url) as conn:
        with conn.cursor() as cur:
            with cur.copy("COPY users (id, username, role) FROM STDIN") as copy:
                for n, u in enumerate(users):
                    copy.write_row((u, f"trader-{n:04d}-{u[:6]}", "user"))
            with cur.copy(
                "COPY user_accounts (id, user_id, exchange, label, api_key_encrypted, api_secret_encrypted, "
                "key_version, api_key_masked) FROM STDIN"
            ) as copy:
                for u, a in zip(users, accounts, strict=True):
                    copy.write_row((a, u, "simulator", "main", b"\x00", b"\x00", 1, "****"))
            with cur.copy("COPY strategies (id, name, kind, status) FROM STDIN") as copy:
                for n, s in enumerate(strategies):
                    copy.write_row((s, f"strategy-{n}", "momentum" if n % 2 else "mean_reversion", "active"))
            with cur.copy("COPY strategy_assignments (id, strategy_id, account_id, allocation) FROM STDIN") as copy:
                for n, a in enumerate(accounts):
                    copy.write_row((uuid.uuid4(), strategies[n % len(strategies)], a, Decimal(1)))
            with cur.copy(
                "COPY capital_flows (id, account_id, user_id, asset, amount, ts, note, created_at) FROM STDIN"
            ) as copy:
                deposited = start - timedelta(minutes=1)  # recorded when it happened, as a live deposit would be
                for u, a in zip(users, accounts, strict=True):
                    copy.write_row((uuid.uuid4(), a, u, "USDT", spec.deposit, deposited, "initial", deposited))
            _candles(cur, prices, daily=spec.window == DAILY_WINDOW)
            fills = _trades(cur, rng, spec, users, accounts, strategies, prices, progress)
        conn.commit()
    return Fund(users, accounts, strategies, start, end, fills)


def _candles(
    cur: psycopg.Cursor[tuple[object, ...]],
    prices: dict[str, list[tuple[datetime, Decimal, Decimal, Decimal, Decimal, Decimal]]],
    daily: bool,
) -> None:
    with cur.copy(
        "COPY market_candles (exchange, symbol, interval, open_time, open, high, low, close, volume, source, closed) "
        "FROM STDIN"
    ) as copy:
        for symbol, rows in prices.items():
            for open_time, o, h, low, c, v in rows if daily else hourly(rows):
                copy.write_row(("binance", symbol, "1d" if daily else "1h", open_time, o, h, low, c, v, "kline", True))


def _trades(
    cur: psycopg.Cursor[tuple[object, ...]],
    rng: random.Random,
    spec: FundSpec,
    users: list[str],
    accounts: list[str],
    strategies: list[str],
    prices: dict[str, list[tuple[datetime, Decimal, Decimal, Decimal, Decimal, Decimal]]],
    progress: bool,
) -> int:
    minutes = len(prices[spec.symbols[0]])  # bars: minutes, or days with daily bars
    bar_seconds = 86_400 if spec.window == DAILY_WINDOW else 60
    first = 1 if spec.window == DAILY_WINDOW else 0  # the first daily bar only marks
    held: dict[tuple[int, str], Decimal] = {}
    cash = {n: spec.deposit for n in range(len(accounts))}
    order_rows: list[tuple[object, ...]] = []
    fill_rows: list[tuple[object, ...]] = []
    positions: dict[tuple[int, str], list[Decimal]] = {}  # qty, avg, realized, fees
    for k in range(spec.fills):
        n = k % len(accounts)
        symbol = spec.symbols[rng.randrange(len(spec.symbols))]
        minute = min(minutes - 1, first + int((k + rng.random()) * (minutes - first) / spec.fills))
        ts, _open, high, low, price, _volume = prices[symbol][minute]
        if bar_seconds > 60:  # a daily bar: somewhere in the day's real range
            price = (low + (high - low) * Decimal(str(rng.random()))).quantize(Decimal("0.01"))
        qty_held = held.get((n, symbol), Decimal(0))
        sell = qty_held > 0 and rng.random() < 0.5
        budget = cash[n] * Decimal(str(rng.uniform(0.01, 0.05)))
        qty = (qty_held * Decimal(str(rng.uniform(0.3, 1.0))) if sell else budget / price).quantize(
            STEP[symbol], ROUND_DOWN
        )
        if qty <= 0:
            continue
        notional = qty * price
        fee = (notional * FEE_RATE).quantize(Decimal("0.00000001"))
        side = "sell" if sell else "buy"
        cash[n] += (notional if sell else -notional) - fee
        held[(n, symbol)] = qty_held + (-qty if sell else qty)
        p = positions.setdefault((n, symbol), [Decimal(0), Decimal(0), Decimal(0), Decimal(0)])
        if sell:
            p[2] += (price - p[1]) * qty
            p[0] -= qty
            if p[0] == 0:
                p[1] = Decimal(0)
        else:
            p[1] = (p[1] * p[0] + price * qty) / (p[0] + qty)
            p[0] += qty
        p[3] += fee
        order_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        when = ts + timedelta(seconds=rng.randrange(bar_seconds))
        order_rows.append(
            (
                order_id,
                accounts[n],
                users[n],
                strategies[n % len(strategies)],
                f"gen-{k}",
                str(k),
                "simulator",
                symbol,
                side,
                "market",
                qty,
                "filled",
                qty,
                price,
                fee,
                2,
                when,
                when,
            )
        )
        fill_rows.append(
            (
                uuid.uuid4(),
                order_id,
                accounts[n],
                users[n],
                "simulator",
                symbol,
                side,
                f"t{k}",
                qty,
                price,
                fee,
                "USDT",
                "taker",
                when,
                int(when.timestamp() * 1000),
                when,
            )
        )
        if progress and k and k % 100_000 == 0:
            print(f"  generated {k:,} fills", flush=True)
    with cur.copy(
        "COPY orders (id, account_id, user_id, strategy_id, client_order_id, exchange_order_id, exchange, symbol, "
        "side, order_type, quantity, status, filled_quantity, avg_fill_price, fees, version, created_at, updated_at) "
        "FROM STDIN"
    ) as copy:
        for row in order_rows:
            copy.write_row(row)
    with cur.copy(
        "COPY fills (id, order_id, account_id, user_id, exchange, symbol, side, trade_id, quantity, price, fee, "
        "fee_asset, liquidity, filled_at, exchange_ts_ms, created_at) FROM STDIN"
    ) as copy:
        for row in fill_rows:
            copy.write_row(row)
    with cur.copy(
        "COPY positions (account_id, symbol, user_id, exchange, quantity, avg_entry_price, realized_pnl, fees) "
        "FROM STDIN"
    ) as copy:
        for (n, symbol), (qty, avg, realized, fees) in positions.items():
            copy.write_row((accounts[n], symbol, users[n], "simulator", qty, avg if qty else None, realized, fees))
    with cur.copy("COPY balances (account_id, asset, free, locked) FROM STDIN") as copy:
        for n, account in enumerate(accounts):
            copy.write_row((account, "USDT", cash[n], Decimal(0)))
            for symbol in spec.symbols:
                copy.write_row((account, symbol.removesuffix("USDT"), held.get((n, symbol), Decimal(0)), Decimal(0)))
    return len(fill_rows)

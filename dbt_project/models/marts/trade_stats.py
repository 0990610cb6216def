"""Round-trip statistics of every scope: FIFO matching of buys and sells per account and symbol.

Each fill either opens lots (same direction as the open lots, or flat) or closes the oldest open lots first;
every (opening lot, closing fill) match is one closed round trip, of quantity q, with
PnL = (exit - entry) x q x direction - the two fills' fees pro rata to q (quote currency, net of fees). A fill
that crosses flat closes what is open and opens the rest. Open lots are not round trips.

Per scope (weighted like NAV: a strategy owns its allocation share of each round trip's PnL; a round trip
counts once): trades, win_rate = wins / (wins + losses), profit_factor = gross win / |gross loss|,
expectancy = mean PnL per round trip, avg_win, avg_loss (negative). Same edge cases as docs/metrics.md:
profit_factor inf with gains and no loss, NaN with neither; undefined figures are NaN.
warehouse.metrics.performance cannot be reused here: it takes returns (>= -100%), these are quote PnLs.
"""

import math
from collections import deque
from decimal import Decimal

_ZERO = Decimal(0)


def _round_trips(fills):
    """(account_id, pnl) of every closed round trip; fills sorted by account, symbol, time, fill id.

    Quantities, prices and fees are exact Decimals (DuckDB returns DECIMAL columns as Decimal), so matching
    leaves no float dust lots behind.
    """
    trips = []
    lots = {}
    for account_id, symbol, signed_quantity, price, fee_quote in fills:
        book = lots.setdefault((account_id, symbol), deque())
        quantity = abs(signed_quantity)
        remaining = quantity
        while remaining > _ZERO and book and (book[0][0] > _ZERO) != (signed_quantity > _ZERO):
            lot = book[0]  # [signed open quantity, entry price, entry fee, entry quantity]
            lot_quantity = abs(lot[0])
            matched = min(lot_quantity, remaining)
            direction = 1 if lot[0] > _ZERO else -1
            fees = lot[2] * matched / lot[3] + fee_quote * matched / quantity
            trips.append((account_id, float((price - lot[1]) * matched * direction - fees)))
            remaining -= matched
            if matched == lot_quantity:
                book.popleft()
            else:
                lot[0] -= matched * direction
        if remaining > _ZERO:
            # The part that did not close anything opens a lot, carrying its pro-rata share of the fee.
            direction = 1 if signed_quantity > _ZERO else -1
            book.append([remaining * direction, price, fee_quote * remaining / quantity, remaining])
    return trips


def _statistics(pnls):
    """The trade_stats figures of a list of round-trip PnLs."""
    trades = len(pnls)
    wins = [p for p in pnls if p > 0]
    losses = [p for p in pnls if p < 0]
    gross_win, gross_loss = sum(wins), -sum(losses)
    if gross_loss > 0:
        profit_factor = gross_win / gross_loss
    else:
        profit_factor = math.inf if gross_win > 0 else math.nan
    active = len(wins) + len(losses)
    return {
        "trades": trades,
        "win_rate": len(wins) / active if active else math.nan,
        "profit_factor": profit_factor,
        "expectancy": sum(pnls) / trades if trades else math.nan,
        "avg_win": gross_win / len(wins) if wins else math.nan,
        "avg_loss": -gross_loss / len(losses) if losses else math.nan,
    }


def model(dbt, session):
    dbt.config(materialized="table")
    import pandas as pd

    fills = (
        dbt.ref("fct_fills")
        .project(
            "account_id, symbol, signed_quantity, price, fee_quote, filled_at, fill_id"
        )
        .order("account_id, symbol, filled_at, fill_id")
        .fetchall()
    )
    trips_by_account = {}
    for account_id, pnl in _round_trips(row[:5] for row in fills):
        trips_by_account.setdefault(account_id, []).append(pnl)

    members = {}
    for scope, scope_id, account_id, weight in dbt.ref("int_scope_accounts").project(
        "scope, scope_id, account_id, weight"
    ).fetchall():
        members.setdefault((scope, scope_id), []).append((account_id, weight))
    scopes = dbt.ref("nav_daily").project("scope, scope_id").distinct().order("scope, scope_id").fetchall()

    rows = []
    for scope, scope_id in scopes:
        pnls = [
            pnl * weight
            for account_id, weight in members.get((scope, scope_id), [])
            for pnl in trips_by_account.get(account_id, [])
        ]
        rows.append({"scope": scope, "scope_id": scope_id, **_statistics(pnls)})

    columns = ["scope", "scope_id", "trades", "win_rate", "profit_factor", "expectancy", "avg_win", "avg_loss"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype(
        {"scope": "string", "scope_id": "string", "trades": "int64", "win_rate": "float64",
         "profit_factor": "float64", "expectancy": "float64", "avg_win": "float64", "avg_loss": "float64"}
    )

"""Round-trip statistics of every scope: FIFO matching of buys and sells per account and symbol.

Each fill either opens lots (same direction as the open lots, or flat) or closes the oldest open lots first;
every (opening lot, closing fill) match is one closed round trip, of quantity q, with
PnL = (exit - entry) x q x direction - the two fills' fees pro rata to q (quote currency, net of fees). A fill
that crosses flat closes what is open and opens the rest. Open lots are not round trips. The matching is
warehouse.trades.fifo_round_trips, exact on fixed-point quantities; int_trade_books keeps each book's totals and
open lots, so an hourly build matches only the new fills.

Per scope (weighted like NAV: a strategy owns its allocation share of each round trip's PnL; a round trip
counts once): trades, win_rate = wins / (wins + losses), profit_factor = gross win / |gross loss|,
expectancy = mean PnL per round trip, avg_win, avg_loss (negative). Same edge cases as docs/metrics.md:
profit_factor inf with gains and no loss, NaN with neither; undefined figures are NaN.
warehouse.metrics.performance cannot be reused here: it takes returns (>= -100%), these are quote PnLs.
"""

import importlib
import os
import sys


def _warehouse(module):
    """warehouse.<module>, importable from the repository root (PATRIOT_ROOT, else the project's parent)."""
    try:
        return importlib.import_module(f"warehouse.{module}")
    except ImportError:
        sys.path.insert(0, os.environ.get("PATRIOT_ROOT") or os.path.dirname(os.path.abspath(os.getcwd())))
        return importlib.import_module(f"warehouse.{module}")


def _account_totals(books_relation):
    """Account ids; per account the counts (round trips, wins, losses) and PnL sums (wins, losses, all), added up
    from its books (int_trade_books) in (account_id, symbol) order."""
    import numpy as np

    books = books_relation.query(
        "books",
        "select account_id, trips, wins, losses, gross_win, gross_loss, pnl from books order by account_id, symbol",
    )
    rows = books.fetchall()
    account_index = {}
    account = np.array([account_index.setdefault(row[0], len(account_index)) for row in rows], dtype=np.int64)
    accounts = len(account_index)
    counts = np.array([row[1:4] for row in rows], dtype=np.int64).reshape(len(rows), 3)
    sums = np.array([row[4:7] for row in rows], dtype=np.float64).reshape(len(rows), 3)
    account_counts = np.zeros((accounts, 3), dtype=np.int64)
    np.add.at(account_counts, account, counts)
    account_sums = np.stack([np.bincount(account, weights=sums[:, k], minlength=accounts) for k in range(3)], axis=1)
    return list(account_index), account_counts, account_sums


def _scope_statistics(account_counts, account_sums, member_scope, member_account, weight, scopes):
    """The trade_stats figures of every scope, its member accounts' round trips weighted like NAV.

    A weighted PnL w x p has the sign of p for w > 0, the opposite for w < 0, and none for w = 0, so each member's
    wins, losses and their sums follow from its account's totals without going back to each round trip.
    """
    import numpy as np

    member_counts = account_counts[member_account]  # round trips, wins, losses
    member_sums = account_sums[member_account] * weight[:, None]  # gross win, gross loss (<= 0), total
    flip = weight < 0
    member_counts[flip, 1:] = member_counts[flip, 2:0:-1]
    member_sums[flip, :2] = member_sums[flip, 1::-1]
    idle = (weight == 0) | np.isnan(weight)
    member_counts[idle, 1:], member_sums[idle, :2] = 0, 0.0
    counts, sums = np.zeros((scopes, 3), dtype=np.int64), np.zeros((scopes, 3))
    np.add.at(counts, member_scope, member_counts)
    np.add.at(sums, member_scope, member_sums)

    (trades, wins, losses), (gross_win, gross_loss, total) = counts.T, sums.T
    gross_loss, active = -gross_loss, wins + losses
    with np.errstate(divide="ignore", invalid="ignore"):
        no_loss = np.where(gross_win > 0, np.inf, np.nan)
        return {
            "trades": trades,
            "win_rate": np.where(active > 0, wins / active, np.nan),
            "profit_factor": np.where(gross_loss > 0, gross_win / gross_loss, no_loss),
            "expectancy": np.where(trades > 0, total / trades, np.nan),
            "avg_win": np.where(wins > 0, gross_win / wins, np.nan),
            "avg_loss": np.where(losses > 0, -gross_loss / losses, np.nan),
        }


def model(dbt, session):
    dbt.config(materialized="table")
    import numpy as np
    import pyarrow as pa

    account_ids, account_counts, account_sums = _account_totals(dbt.ref("int_trade_books"))
    account_index = {account_id: index for index, account_id in enumerate(account_ids)}
    # The scopes with a NAV: those of the accounts with hours in the calendar (nav_hourly is built from these
    # two tables); asked of them rather than of nav_daily, this model need not wait for the NAV marts.
    members_relation = dbt.ref("int_scope_accounts")
    with_hours = dbt.ref("int_account_calendar").project("account_id").distinct()
    scopes = (
        members_relation.join(with_hours, "account_id")
        .project("scope, scope_id")
        .distinct()
        .order("scope, scope_id")
        .to_arrow_table()
    )
    scope_keys = zip(scopes.column(0).to_pylist(), scopes.column(1).to_pylist(), strict=True)
    scope_index = {key: index for index, key in enumerate(scope_keys)}
    # in a fixed order: a scope's float sums then add its members in the same order in every build (the table's
    # row order is whatever its last parallel build left)
    members = [
        (scope_index[(scope, scope_id)], account_index[account_id], weight)
        for scope, scope_id, account_id, weight in members_relation.project("scope, scope_id, account_id, weight")
        .order("scope, scope_id, account_id")
        .fetchall()
        if (scope, scope_id) in scope_index and account_id in account_index
    ]
    member_scope = np.array([scope for scope, _, _ in members], dtype=np.int64)
    member_account = np.array([account for _, account, _ in members], dtype=np.int64)
    weight = np.array([weight for _, _, weight in members], dtype=np.float64)
    figures = _scope_statistics(account_counts, account_sums, member_scope, member_account, weight, scopes.num_rows)

    # A relation, not the Arrow table: dbt-duckdb imports pyarrow.dataset (and with it pandas) for a returned table.
    columns = {"scope": scopes.column(0), "scope_id": scopes.column(1)}
    arrow_column = _warehouse("arrow_columns").arrow_column
    return session.from_arrow(pa.table(columns | {name: arrow_column(values) for name, values in figures.items()}))

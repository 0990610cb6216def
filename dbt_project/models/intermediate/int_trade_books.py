"""FIFO state of every book (account, symbol): its round-trip totals so far and the lots it still holds open.

trade_stats adds these up per scope (the matching rules are in its docstring and warehouse.trades).

Incremental: a build continues each book from its stored state with the fills after the last one it matched.
warehouse.trades.continue_fifo gives the round trips one pass over all the fills would give, PnL floats
included, and the sums continue the same sequence of additions, so the hourly path matches only the new fills
and still equals a full rebuild bit for bit. A book is matched again from its first fill when the fills up to
its last matched one are no longer exactly those its state was built on (their count and fingerprint differ:
a late fill, a changed fill), when it is new, and on a full refresh.

Columns: account_id, symbol (a missing one as ''); last_filled_at_us, last_fill_id: the last fill matched, in
matching order (time, a missing time last, then fill_id); fills, fingerprint: the count and the XOR of a hash
of the fills up to it; trips, wins, losses and gross_win, gross_loss (<= 0), pnl: the closed round trips and
their PnL sums (quote, net of fees); open_lots: JSON, oldest first, [quantity, price, fee, fee_quantity,
fee_opened] as decimal strings (warehouse.trades.OpenLots).
"""

import importlib
import json
import os
import sys

LAST_TIME = 9223372036854775807  # a fill without a time is matched after every fill with one

# The queries name Python variables of model() (DuckDB's replacement scans): book_fills (fct_fills), stored (the
# model's previous rows), intact (the stored books still valid), book_state (every book, numbered).
FILLS = f"""
    select coalesce(account_id, '') as account_id, coalesce(symbol, '') as symbol,
        coalesce(epoch_us(filled_at), {LAST_TIME}) as filled_at_us, fill_id, signed_quantity, price, fee_quote,
        cast(hash(fill_id, filled_at, signed_quantity, price, fee_quote) >> 1 as bigint) as fingerprint
    from book_fills
"""
# The stored books whose fills up to the last one matched are still exactly the ones matched.
INTACT = f"""
    with f as ({FILLS})
    select s.account_id, s.symbol
    from stored as s
    left join f on f.account_id = s.account_id and f.symbol = s.symbol
        and (f.filled_at_us < s.last_filled_at_us
            or (f.filled_at_us = s.last_filled_at_us and f.fill_id <= s.last_fill_id))
    group by s.account_id, s.symbol, s.fills, s.fingerprint
    having count(f.fill_id) = s.fills and coalesce(bit_xor(f.fingerprint), 0) = s.fingerprint
"""
# Every book, numbered in (account_id, symbol) order, with its stored state where that is intact.
BOOKS = f"""
    with keys as (
        select distinct account_id, symbol from ({FILLS})
        union
        select account_id, symbol from stored
    )
    select k.account_id, k.symbol, row_number() over (order by k.account_id, k.symbol) - 1 as book,
        s.last_filled_at_us, s.last_fill_id, s.fills, s.fingerprint, s.trips, s.wins, s.losses,
        s.gross_win, s.gross_loss, s.pnl, s.open_lots
    from keys as k
    left join (select * from stored semi join intact using (account_id, symbol)) as s using (account_id, symbol)
    order by book
"""
# The fills to match: those after each intact book's last matched fill, and every fill of the other books.
NEW_FILLS = f"""
    with f as ({FILLS})
    select b.book, f.filled_at_us, f.fill_id, f.signed_quantity, f.price, f.fee_quote, f.fingerprint
    from f
    join book_state as b on b.account_id = f.account_id and b.symbol = f.symbol
    where b.last_fill_id is null or f.filled_at_us > b.last_filled_at_us
        or (f.filled_at_us = b.last_filled_at_us and f.fill_id > b.last_fill_id)
"""
NO_STATE = """
    select cast(null as varchar) as account_id, cast(null as varchar) as symbol,
        cast(null as bigint) as last_filled_at_us, cast(null as varchar) as last_fill_id, cast(null as bigint) as fills,
        cast(null as bigint) as fingerprint, cast(null as bigint) as trips, cast(null as bigint) as wins,
        cast(null as bigint) as losses, cast(null as double) as gross_win, cast(null as double) as gross_loss,
        cast(null as double) as pnl, cast(null as varchar) as open_lots
    where false
"""
SUMS = ("gross_win", "gross_loss", "pnl")
COUNTS = ("trips", "wins", "losses")


def _warehouse(module):
    """warehouse.<module>, importable from the repository root (PATRIOT_ROOT, else the project's parent)."""
    try:
        return importlib.import_module(f"warehouse.{module}")
    except ImportError:
        sys.path.insert(0, os.environ.get("PATRIOT_ROOT") or os.path.dirname(os.path.abspath(os.getcwd())))
        return importlib.import_module(f"warehouse.{module}")


def _fill_order(book, filled_at_us, fill_ids):
    """Positions that sort the fills by book, time (a missing time last) and fill_id. numpy sorts the integers
    far faster than DuckDB sorts the strings, then puts ties in time in fill_id order."""
    import numpy as np

    if len(book) == 0:
        return np.arange(0)
    first, span = int(filled_at_us.min()), int(filled_at_us.max()) - int(filled_at_us.min()) + 1
    if (int(book.max()) + 1) * span < 2**63:
        order = np.argsort(book * span + (filled_at_us - first))
    else:
        order = np.lexsort((filled_at_us, book))
    book, filled_at_us = book[order], filled_at_us[order]
    tied = (book[1:] == book[:-1]) & (filled_at_us[1:] == filled_at_us[:-1])
    edges = np.diff(np.concatenate(([0], tied.astype(np.int8), [0])))
    for start, stop in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) + 1, strict=True):
        run = order[start:stop]
        ids = [fill_ids[int(position)].as_py() for position in run]
        order[start:stop] = run[sorted(range(len(run)), key=ids.__getitem__)]
    return order


def _stored_lots(trades, open_lots):
    """The open lots of every book (its open_lots JSON, None for a book matched from its first fill)."""
    import numpy as np

    rows = [(book, lot) for book, text in enumerate(open_lots) if text is not None for lot in json.loads(text)]
    if not rows:
        return trades.OpenLots.none()
    columns = [trades.FixedPoint.from_decimals(lot[k] for _, lot in rows) for k in range(5)]
    return trades.OpenLots(np.array([book for book, _ in rows], dtype=np.int64), *columns)


def _lots_json(lots, count):
    """Each book's open lots as open_lots JSON, oldest first."""
    per_book = [[] for _ in range(count)]
    columns = (lots.quantity, lots.price, lots.fee, lots.fee_quantity, lots.fee_opened)
    for position, book in enumerate(lots.book.tolist()):
        per_book[book].append([column.text(position) for column in columns])
    return [json.dumps(lots_of_book) for lots_of_book in per_book]


def model(dbt, session):
    dbt.config(materialized="incremental", incremental_strategy="delete+insert", unique_key=["account_id", "symbol"])
    import numpy as np
    import pyarrow as pa

    trades, arrow_columns = _warehouse("trades"), _warehouse("arrow_columns")
    book_fills = dbt.ref("fct_fills")  # noqa: F841 (read by the queries)
    stored = session.sql(f"select * from {dbt.this}" if dbt.is_incremental else NO_STATE)  # noqa: F841
    intact = session.sql(INTACT)  # noqa: F841 (read by BOOKS)
    state = book_state = session.sql(BOOKS).to_arrow_table()  # book_state: read by NEW_FILLS
    count = state.num_rows
    fills = session.sql(NEW_FILLS).to_arrow_table()
    # the books without an intact state start from nothing: no fill matched, no lot, sums of 0.0
    prior = {
        name: np.array([0 if v is None else v for v in state.column(name).to_pylist()], dtype=np.int64)
        for name in ("fills", "fingerprint", *COUNTS)
    }
    prior |= {
        name: np.array([0.0 if v is None else v for v in state.column(name).to_pylist()], dtype=np.float64)
        for name in SUMS
    }

    book, filled_at_us = (arrow_columns.numpy_values(fills.column(name), np.int64) for name in ("book", "filled_at_us"))
    fill_ids = fills.column("fill_id").combine_chunks()
    order = _fill_order(book, filled_at_us, fill_ids)
    quantity, price, fee = (
        trades.FixedPoint.from_arrow(fills.column(name)).take(order)
        for name in ("signed_quantity", "price", "fee_quote")
    )
    result = trades.continue_fifo(
        _stored_lots(trades, state.column("open_lots").to_pylist()), book[order], quantity, price, fee
    )

    # Totals: each book's stored sum first, then its new round trips in the order they close, added one by one
    # (bincount adds in input order), which is the order one pass over all its fills adds them in.
    pnl = result.trips.pnl
    trip_book = result.book[result.trips.closing]
    win, loss = pnl > 0, pnl < 0
    every = np.arange(count)
    counts = {
        name: prior[name] + np.bincount(trip_book[mask], minlength=count)
        for name, mask in zip(COUNTS, (slice(None), win, loss), strict=True)
    }
    sums = {
        name: np.bincount(
            np.concatenate([every, trip_book]), weights=np.concatenate([prior[name], values]), minlength=count
        )
        for name, values in zip(SUMS, (pnl * win, pnl * loss, pnl), strict=True)
    }

    # The last fill matched and the fingerprint of the fills up to it.
    ordered_book = book[order]
    fingerprint = prior["fingerprint"].copy()
    np.bitwise_xor.at(
        fingerprint, ordered_book, arrow_columns.numpy_values(fills.column("fingerprint"), np.int64)[order]
    )
    last_time = np.array(
        [v if v is not None else -(2**63) for v in state.column("last_filled_at_us").to_pylist()], dtype=np.int64
    )
    last_fill = [v if v is not None else "" for v in state.column("last_fill_id").to_pylist()]
    if len(order):
        ends = np.flatnonzero(np.append(ordered_book[1:] != ordered_book[:-1], True))
        last_time[ordered_book[ends]] = filled_at_us[order][ends]
        for end in ends.tolist():
            last_fill[int(ordered_book[end])] = fill_ids[int(order[end])].as_py()

    arrow_column = arrow_columns.arrow_column
    columns = {"account_id": state.column("account_id"), "symbol": state.column("symbol")}
    columns |= {
        "last_filled_at_us": arrow_column(last_time),
        "last_fill_id": arrow_column(last_fill),
        "fills": arrow_column(prior["fills"] + np.bincount(ordered_book, minlength=count)),
        "fingerprint": arrow_column(fingerprint),
    }
    columns |= {name: arrow_column(values) for name, values in counts.items()}
    columns |= {name: arrow_column(values) for name, values in sums.items()}
    columns["open_lots"] = arrow_column(_lots_json(result.lots, count))
    # A relation, not the Arrow table: dbt-duckdb imports pyarrow.dataset (and with it pandas) for a returned table.
    return session.from_arrow(pa.table(columns))

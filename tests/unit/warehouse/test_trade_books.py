"""int_trade_books (dbt_project/models/intermediate/int_trade_books.py): a build continues each book from its
stored FIFO state with the fills after the last one it matched, restarts a book whose earlier fills changed,
and equals a build from nothing bit for bit. Run as the prod asset runs it (orchestration.prod_marts), on an
in-memory DuckDB session."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from orchestration.prod_marts import ModelContext, load_model

START = datetime(2026, 1, 1, tzinfo=UTC)
FILLS_TYPE = pa.schema(
    [
        ("fill_id", pa.string()),
        ("account_id", pa.string()),
        ("symbol", pa.string()),
        ("filled_at", pa.timestamp("us", tz="UTC")),
        ("signed_quantity", pa.decimal128(38, 18)),
        ("price", pa.decimal128(38, 18)),
        ("fee_quote", pa.decimal128(38, 18)),
    ]
)


def random_fills(rng: random.Random, count: int, first_minute: int = 0) -> list[dict[str, Any]]:
    """Fills of three books (two accounts), long and short through flat, one a minute from ``first_minute``."""
    rows = []
    for n in range(count):
        account, symbol = rng.choice([("a1", "BTCUSDT"), ("a1", "ETHUSDT"), ("a2", "BTCUSDT")])
        quantity = Decimal(rng.choice([1, 2, 3, 5])) * Decimal(rng.choice(["0.1", "0.25", "1"])) * rng.choice([1, -1])
        price = Decimal(rng.randint(9_000, 11_000)) / 100
        rows.append(
            {
                "fill_id": f"f{first_minute + n:05d}",
                "account_id": account,
                "symbol": symbol,
                "filled_at": START + timedelta(minutes=first_minute + n),
                "signed_quantity": quantity,
                "price": price,
                "fee_quote": (abs(quantity) * price * Decimal("0.001")).quantize(Decimal("0.00000001")),
            }
        )
    return rows


def build(session: duckdb.DuckDBPyConnection, fills: list[dict[str, Any]], previous: pa.Table | None) -> pa.Table:
    """One build of the model over ``fills``, continuing from ``previous`` (its stored rows) when given."""
    relation = session.from_arrow(pa.Table.from_pylist(fills, schema=FILLS_TYPE))

    def stored() -> bool:
        if previous is None:
            return False
        session.execute("CREATE SCHEMA IF NOT EXISTS intermediate")
        session.execute("DROP TABLE IF EXISTS intermediate.int_trade_books")
        session.from_arrow(previous).create("intermediate.int_trade_books")
        return True

    refs: Callable[[str], duckdb.DuckDBPyRelation] = lambda name: relation  # noqa: E731 (fct_fills only)
    context = ModelContext("int_trade_books", refs, "intermediate", stored)
    return load_model("int_trade_books").model(context, session).order("account_id, symbol").to_arrow_table()


@pytest.fixture
def session() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


@pytest.mark.parametrize("seed", range(4))
def test_continuing_with_new_fills_equals_a_build_from_nothing(session: duckdb.DuckDBPyConnection, seed: int) -> None:
    rng = random.Random(seed)
    earlier, later = random_fills(rng, 300), random_fills(rng, 200, first_minute=300)
    state = build(session, earlier, None)
    continued = build(session, earlier + later, state)
    assert continued.to_pylist() == build(session, earlier + later, None).to_pylist()
    assert sum(continued.column("fills").to_pylist()) == 500


def test_a_book_continues_from_its_state_unless_its_earlier_fills_changed(session: duckdb.DuckDBPyConnection) -> None:
    rng = random.Random(7)
    earlier, later = random_fills(rng, 300), random_fills(rng, 100, first_minute=300)
    state = build(session, earlier, None).to_pylist()
    # a stored count no fill could give: a book that continues keeps it, a book matched again loses it
    tampered = pa.Table.from_pylist([row | {"trips": row["trips"] + 1000} for row in state])
    late_fill = random_fills(rng, 1, first_minute=10)[0] | {"fill_id": "late", "account_id": "a2", "symbol": "BTCUSDT"}
    rows = {
        (r["account_id"], r["symbol"]): r for r in build(session, [*earlier, *later, late_fill], tampered).to_pylist()
    }
    fresh = {(r["account_id"], r["symbol"]): r for r in build(session, [*earlier, *later, late_fill], None).to_pylist()}
    assert rows[("a1", "BTCUSDT")]["trips"] == fresh[("a1", "BTCUSDT")]["trips"] + 1000
    assert rows[("a1", "ETHUSDT")]["trips"] == fresh[("a1", "ETHUSDT")]["trips"] + 1000
    assert rows[("a2", "BTCUSDT")] == fresh[("a2", "BTCUSDT")]  # the late fill restarted it
    # a fill changed in place (a new version of the same id) restarts its book too
    changed = [dict(f) for f in earlier]
    target = next(f for f in changed if f["account_id"] == "a1" and f["symbol"] == "ETHUSDT")
    target["price"] += Decimal(1)
    rows = {(r["account_id"], r["symbol"]): r for r in build(session, changed, tampered).to_pylist()}
    assert rows[("a1", "ETHUSDT")] == build(session, changed, None).to_pylist()[1]
    assert rows[("a1", "BTCUSDT")]["trips"] == state[0]["trips"] + 1000


def test_open_lots_are_stored_as_exact_decimal_text(session: duckdb.DuckDBPyConnection) -> None:
    fills = [
        {"fill_id": "1", "account_id": "a", "symbol": "X", "filled_at": START, "signed_quantity": Decimal(3),
         "price": Decimal("100.5"), "fee_quote": Decimal("0.3")},
        {"fill_id": "2", "account_id": "a", "symbol": "X", "filled_at": START + timedelta(minutes=1),
         "signed_quantity": Decimal(-1), "price": Decimal(110), "fee_quote": Decimal(0)},
    ]  # fmt: skip
    (row,) = build(session, fills, None).to_pylist()
    assert row["open_lots"] == '[["2", "100.5", "0.3", "3", "3"]]'
    assert (row["trips"], row["wins"], row["losses"], row["fills"]) == (1, 1, 0, 2)
    assert row["pnl"] == pytest.approx(9.5 - 0.1)

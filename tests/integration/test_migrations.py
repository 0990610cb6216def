"""Schema migrations and the time-series partition maintenance."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from core.db.migrate import current_revision, downgrade, upgrade
from core.db.timeseries import TIME_SERIES_TABLES, PsycopgExecutor, ensure_partitions, maintain_partitions

pytestmark = pytest.mark.integration

KERNEL_TABLES = {
    "users",
    "user_accounts",
    "orders",
    "fills",
    "positions",
    "balances",
    "strategies",
    "strategy_assignments",
    "risk_limits",
    "event_store",
    "outbox",
    "processed_messages",
    "trade_gaps",
}


def test_migrate_creates_every_table_and_is_reversible(empty_database_url: str) -> None:
    assert current_revision(empty_database_url) is None
    upgrade(empty_database_url)
    upgrade(empty_database_url)  # a second run on every start is a no-op
    assert current_revision(empty_database_url) == "0007_equity_assets"
    with psycopg.connect(empty_database_url) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert KERNEL_TABLES <= tables
        parents = {
            r[0]
            for r in conn.execute("SELECT c.relname FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid")
        }
        assert parents == {t.name for t in TIME_SERIES_TABLES}
        brin = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE indexdef ILIKE '%USING brin%'")}
        assert {f"{t.name}_{t.time_column}_brin" for t in TIME_SERIES_TABLES} <= brin
        money = conn.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_name IN ('orders', 'fills', 'balances')"
            " AND column_name IN ('quantity', 'price', 'free', 'fee')"
        ).fetchall()
        assert money and {r[0] for r in money} == {"numeric"}
    downgrade(empty_database_url, "base")
    with psycopg.connect(empty_database_url) as conn:
        left = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert not (KERNEL_TABLES & left)


def test_partitions_are_created_ahead_and_take_over_rows_from_default(migrated_database_url: str) -> None:
    with psycopg.connect(migrated_database_url) as conn:
        ex = PsycopgExecutor(conn)
        # a trade far in the past lands in the default partition first
        conn.execute(
            "INSERT INTO market_trades VALUES ('binance', 'BTCUSDT', 1, 60000, 0.5, false, "
            "'2024-08-08 23:55:00+00', 1723161300000, now())"
        )
        created = ensure_partitions(
            ex, "market_trades", datetime(2024, 8, 8, tzinfo=UTC), datetime(2024, 8, 9, 12, tzinfo=UTC)
        )
        assert created == ["market_trades_p20240808", "market_trades_p20240809"]
        assert conn.execute("SELECT count(*) FROM market_trades_default").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM market_trades_p20240808").fetchone() == (1,)
        assert (
            ensure_partitions(ex, "market_trades", datetime(2024, 8, 8, tzinfo=UTC), datetime(2024, 8, 9, tzinfo=UTC))
            == []
        )
        ahead = maintain_partitions(ex, now=datetime(2030, 1, 30, tzinfo=UTC), days_ahead=3)
        assert "market_trades_p20300202" in ahead and "market_candles_p203002" in ahead
        conn.commit()

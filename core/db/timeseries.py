"""Time-series tables: TimescaleDB hypertables when the extension exists, native range partitions otherwise.

Native mode creates each table ``PARTITION BY RANGE (time column)`` with a DEFAULT partition as a safety net,
a BRIN index on time, and partitions made ahead of time by :func:`ensure_partitions` (``patriot db partitions``).
A partition created for a range that already has rows in the default partition takes those rows over.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

Interval = Literal["day", "month"]


class SqlConnection(Protocol):
    """What the DDL helpers need: a sync connection that executes SQL text (SQLAlchemy or psycopg adapters)."""

    def execute(self, sql: str) -> list[tuple[object, ...]]: ...


@dataclass(frozen=True, slots=True)
class TimeSeriesTable:
    name: str
    columns: str
    primary_key: tuple[str, ...]
    time_column: str
    interval: Interval


TIME_SERIES_TABLES: tuple[TimeSeriesTable, ...] = (
    TimeSeriesTable(
        name="market_trades",
        columns="""
            exchange text NOT NULL,
            symbol text NOT NULL,
            trade_id bigint NOT NULL,
            price numeric(38,18) NOT NULL,
            quantity numeric(38,18) NOT NULL,
            is_buyer_maker boolean NOT NULL,
            exchange_ts timestamptz NOT NULL,
            exchange_ts_ms bigint NOT NULL,
            received_at timestamptz NOT NULL
        """,
        primary_key=("exchange", "symbol", "trade_id", "exchange_ts"),
        time_column="exchange_ts",
        interval="day",
    ),
    TimeSeriesTable(
        name="book_tickers",
        columns="""
            exchange text NOT NULL,
            symbol text NOT NULL,
            update_id bigint NOT NULL,
            bid_price numeric(38,18) NOT NULL,
            bid_qty numeric(38,18) NOT NULL,
            ask_price numeric(38,18) NOT NULL,
            ask_qty numeric(38,18) NOT NULL,
            ts timestamptz NOT NULL,
            exchange_ts_ms bigint,
            received_at timestamptz NOT NULL
        """,
        primary_key=("exchange", "symbol", "update_id", "ts"),
        time_column="ts",
        interval="day",
    ),
    TimeSeriesTable(
        name="market_candles",
        columns="""
            exchange text NOT NULL,
            symbol text NOT NULL,
            interval text NOT NULL,
            open_time timestamptz NOT NULL,
            open numeric(38,18) NOT NULL,
            high numeric(38,18) NOT NULL,
            low numeric(38,18) NOT NULL,
            close numeric(38,18) NOT NULL,
            volume numeric(38,18) NOT NULL,
            quote_volume numeric(38,18),
            trade_count bigint,
            source text NOT NULL DEFAULT 'kline',
            closed boolean NOT NULL DEFAULT true,
            CHECK (high >= low)
        """,
        primary_key=("exchange", "symbol", "interval", "source", "open_time"),
        time_column="open_time",
        interval="month",
    ),
    TimeSeriesTable(
        name="portfolio_snapshots",
        columns="""
            ts timestamptz NOT NULL,
            account_id uuid NOT NULL,
            user_id uuid NOT NULL,
            equity numeric(38,18) NOT NULL,
            cash numeric(38,18) NOT NULL,
            positions_value numeric(38,18) NOT NULL,
            unrealized_pnl numeric(38,18) NOT NULL DEFAULT 0,
            realized_pnl numeric(38,18) NOT NULL DEFAULT 0
        """,
        primary_key=("account_id", "ts"),
        time_column="ts",
        interval="month",
    ),
    TimeSeriesTable(
        name="performance_metrics",
        columns="""
            ts timestamptz NOT NULL,
            scope text NOT NULL,
            scope_id text NOT NULL,
            metric text NOT NULL,
            value numeric(38,18),
            CHECK (scope IN ('fund', 'user', 'account', 'strategy'))
        """,
        primary_key=("scope", "scope_id", "metric", "ts"),
        time_column="ts",
        interval="month",
    ),
)

TABLES_BY_NAME = {t.name: t for t in TIME_SERIES_TABLES}


def timescale_available(conn: SqlConnection) -> bool:
    """True when the server can load TimescaleDB (never on this project's dev machines; used in production)."""
    rows = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    return bool(rows)


def create_time_series_tables(conn: SqlConnection, use_timescale: bool) -> None:
    """Create every time-series table in the mode the server supports."""
    if use_timescale:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    for table in TIME_SERIES_TABLES:
        pk = ", ".join(table.primary_key)
        partition = "" if use_timescale else f" PARTITION BY RANGE ({table.time_column})"
        conn.execute(f"CREATE TABLE {table.name} ({table.columns}, PRIMARY KEY ({pk})){partition}")
        if use_timescale:
            chunk = "1 day" if table.interval == "day" else "30 days"
            conn.execute(
                f"SELECT create_hypertable('{table.name}', '{table.time_column}', "
                f"chunk_time_interval => interval '{chunk}')"
            )
        else:
            conn.execute(f"CREATE TABLE {table.name}_default PARTITION OF {table.name} DEFAULT")
            conn.execute(
                f"CREATE INDEX {table.name}_{table.time_column}_brin ON {table.name} USING brin ({table.time_column})"
            )


def drop_time_series_tables(conn: SqlConnection) -> None:
    for table in reversed(TIME_SERIES_TABLES):
        conn.execute(f"DROP TABLE IF EXISTS {table.name} CASCADE")


def partition_bounds(interval: Interval, moment: datetime) -> tuple[datetime, datetime]:
    """The [start, end) range of the partition holding ``moment``."""
    moment = moment.astimezone(UTC)
    if interval == "day":
        start = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
        return start, start + timedelta(days=1)
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    end = datetime(start.year + (start.month == 12), start.month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def partition_name(table: TimeSeriesTable, start: datetime) -> str:
    fmt = "%Y%m%d" if table.interval == "day" else "%Y%m"
    return f"{table.name}_p{start.strftime(fmt)}"


def is_partitioned(conn: SqlConnection, table: str) -> bool:
    rows = conn.execute(
        f"SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
        f"WHERE c.relname = '{table}' AND c.relnamespace = current_schema()::regnamespace"
    )
    return bool(rows)


def existing_partitions(conn: SqlConnection, table: str) -> set[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        f"JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = '{table}'"
    )
    return {str(r[0]) for r in rows}


def ensure_partitions(
    conn: SqlConnection, table_name: str, start: datetime, end: datetime, known: set[str] | None = None
) -> list[str]:
    """Create the partitions of ``table_name`` covering [start, end); returns the names created.

    Rows already sitting in the DEFAULT partition for a new range are moved into it in the same transaction.
    No-op on a TimescaleDB hypertable (chunks are automatic).
    """
    table = TABLES_BY_NAME[table_name]
    if not is_partitioned(conn, table.name):
        return []
    present = known if known is not None else existing_partitions(conn, table.name)
    created: list[str] = []
    cursor, _ = partition_bounds(table.interval, start)
    while cursor < end:
        lo, hi = partition_bounds(table.interval, cursor)
        name = partition_name(table, lo)
        if name not in present:
            _create_partition(conn, table, name, lo, hi)
            present.add(name)
            created.append(name)
        cursor = hi
    return created


def _create_partition(conn: SqlConnection, table: TimeSeriesTable, name: str, lo: datetime, hi: datetime) -> None:
    default = f"{table.name}_default"
    col = table.time_column
    bounds = f"'{lo.isoformat()}' AND {col} < '{hi.isoformat()}'"
    conn.execute(f"LOCK TABLE {table.name} IN SHARE ROW EXCLUSIVE MODE")
    moved = f"_moved_{table.name}"
    conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {moved} (LIKE {table.name}) ON COMMIT DROP")
    conn.execute(f"TRUNCATE {moved}")
    conn.execute(
        f"WITH gone AS (DELETE FROM {default} WHERE {col} >= {bounds} RETURNING *) "
        f"INSERT INTO {moved} SELECT * FROM gone"
    )
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table.name} "
        f"FOR VALUES FROM ('{lo.isoformat()}') TO ('{hi.isoformat()}')"
    )
    conn.execute(f"INSERT INTO {table.name} SELECT * FROM {moved}")
    conn.execute(f"TRUNCATE {moved}")


def maintain_partitions(
    conn: SqlConnection, now: datetime | None = None, days_ahead: int = 7, days_back: int = 1
) -> list[str]:
    """Create every time-series table's partitions from ``days_back`` before now to ``days_ahead`` after."""
    now = now or datetime.now(UTC)
    created: list[str] = []
    for table in TIME_SERIES_TABLES:
        created += ensure_partitions(
            conn, table.name, now - timedelta(days=days_back), now + timedelta(days=days_ahead + 1)
        )
    return created


class SqlAlchemyExecutor:
    """Adapts a SQLAlchemy connection (Alembic migrations) to :class:`SqlConnection`."""

    def __init__(self, connection: object) -> None:
        self._connection = connection

    def execute(self, sql: str) -> list[tuple[object, ...]]:
        from sqlalchemy import text

        result = self._connection.execute(text(sql.replace(":", r"\:")))  # type: ignore[attr-defined]
        return [tuple(r) for r in result] if result.returns_rows else []


class PsycopgExecutor:
    """Adapts a sync psycopg connection (maintenance command, writers) to :class:`SqlConnection`."""

    def __init__(self, connection: object) -> None:
        self._connection = connection

    def execute(self, sql: str) -> list[tuple[object, ...]]:
        cur = self._connection.execute(sql)  # type: ignore[attr-defined]
        return [tuple(r) for r in cur.fetchall()] if cur.description else []

"""The production sink of the extract: the ``raw`` schema in the warehouse's PostgreSQL database.

Same contract as the DuckDB warehouse (docs/warehouse.md, "Raw layer"): the same tables, columns and types
(DECIMAL(38,18) is ``numeric(38,18)``, times ``timestamptz``), ``raw._extract_log``, a partition replaced by
deleting its day window (and, for ``upsert`` tables, the rows whose key comes again), snapshots appended, and each
run's rows and log line committed in one transaction. The Arrow batch travels as CSV through
``COPY ... FROM STDIN (FORMAT csv)``: pyarrow writes NULL as an empty unquoted field and always quotes strings,
so PostgreSQL keeps NULL and the empty string apart.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv

from core.db.urls import libpq_url
from warehouse.extract import RAW_TABLES, Kind, RawTable

__all__ = ["PostgresSink", "copy_arrow", "postgres_sink"]

_PG_TYPES: dict[Kind, str] = {
    "id": "text",
    "text": "text",
    "money": "numeric(38,18)",
    "time": "timestamptz",
    "bool": "boolean",
    "int": "integer",
    "bigint": "bigint",
}
_LOG_DDL = (
    "CREATE TABLE IF NOT EXISTS raw._extract_log "
    "(table_name text NOT NULL, partition_day date, rows bigint NOT NULL, extracted_at timestamptz NOT NULL)"
)
_COPY_ROWS = 200_000  # rows per CSV chunk: bounds the memory of one COPY write
# one lock id for every creator of the raw schema: concurrent CREATE ... IF NOT EXISTS can still collide
_SCHEMA_LOCK = 0x70617472696F74  # "patriot"


def _ddl(spec: RawTable) -> list[str]:
    columns = ", ".join(f"{c.name} {_PG_TYPES[c.kind]}" for c in spec.columns)
    # indexes, not keys (as in DuckDB): the delete of a day window and of re-sent keys find their rows by them
    statements = [
        f"CREATE TABLE IF NOT EXISTS raw.{spec.name} ({columns})",
        f"CREATE INDEX IF NOT EXISTS {spec.name}_key_idx ON raw.{spec.name} ({', '.join(spec.key)})",
    ]
    if spec.raw_day_column:
        statements.append(f"CREATE INDEX IF NOT EXISTS {spec.name}_day_idx ON raw.{spec.name} ({spec.raw_day_column})")
    return statements


def copy_arrow(conn: psycopg.Connection[Any], table: str, batch: pa.Table, columns: list[str] | None = None) -> None:
    """Append an Arrow table to a PostgreSQL table through ``COPY ... FROM STDIN (FORMAT csv)``, in chunks."""
    names = columns or batch.column_names
    quoted = ", ".join(f'"{name}"' for name in names)
    statement = f"COPY {table} ({quoted}) FROM STDIN (FORMAT csv)"
    with conn.cursor().copy(statement) as copy:
        for chunk in batch.select(names).to_batches(max_chunksize=_COPY_ROWS):
            buffer = io.BytesIO()
            pacsv.write_csv(chunk, buffer, pacsv.WriteOptions(include_header=False))
            copy.write(buffer.getbuffer())


class PostgresSink:
    """The warehouse PostgreSQL database as a :class:`warehouse.extract.RawSink` (an autocommit connection:
    every load opens its own transaction)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def ensure_raw_schema(self) -> None:
        """Create the ``raw`` schema, every raw table and the extract log if missing (dbt reads them all)."""
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            self.conn.execute("CREATE SCHEMA IF NOT EXISTS raw")
            for spec in RAW_TABLES.values():
                for statement in _ddl(spec):
                    self.conn.execute(statement)
            self.conn.execute(_LOG_DDL)

    def load(
        self, spec: RawTable, batch: pa.Table, window: tuple[datetime, datetime] | None, partition_day: date | None
    ) -> None:
        """Replace the partition's rows with ``batch`` and log the run, all in one PostgreSQL transaction."""
        target = f"raw.{spec.name}"
        columns = [c.name for c in spec.columns]
        conn = self.conn
        with conn.transaction():
            if spec.mode == "full" or (spec.mode == "incremental" and window is None):
                # DELETE, not TRUNCATE: readers (a dbt build) keep seeing the old rows until this commits
                conn.execute(f"DELETE FROM {target}")
            elif window is not None and spec.raw_day_column:
                conn.execute(
                    f"DELETE FROM {target} WHERE {spec.raw_day_column} >= %s AND {spec.raw_day_column} < %s",
                    list(window),
                )
            if window is not None and spec.upsert and batch.num_rows:
                # the batch goes to a temporary table first, so the rows whose key comes again can be deleted
                conn.execute(f"CREATE TEMPORARY TABLE _extract_batch (LIKE {target} INCLUDING DEFAULTS) ON COMMIT DROP")
                copy_arrow(conn, "_extract_batch", batch, columns)
                same_key = " AND ".join(f"{target}.{k} = b.{k}" for k in spec.key)
                conn.execute(f"DELETE FROM {target} USING _extract_batch AS b WHERE {same_key}")
                names = ", ".join(columns)
                conn.execute(f"INSERT INTO {target} ({names}) SELECT {names} FROM _extract_batch")
            elif batch.num_rows:
                copy_arrow(conn, target, batch, columns)
            conn.execute(
                "INSERT INTO raw._extract_log (table_name, partition_day, rows, extracted_at) VALUES (%s, %s, %s, %s)",
                (spec.name, partition_day, int(batch.num_rows), datetime.now(UTC)),
            )


@contextmanager
def postgres_sink(database_url: str) -> Iterator[PostgresSink]:
    """A :class:`PostgresSink` on its own connection to the warehouse database, closed afterwards."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        yield PostgresSink(conn)

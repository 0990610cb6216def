"""Resources chosen per deployment: ``local`` (DuckDB file under the data directory, the platform's PostgreSQL,
dbt's ``duckdb`` target) or ``prod`` (the ``raw`` schema and the same dbt models in the warehouse's PostgreSQL
database, dbt's ``postgres`` target).

Everything comes from the environment: ``DATABASE_URL`` (else the embedded PostgreSQL of the data directory),
``PATRIOT_DATA_DIR``, ``PATRIOT_DEPLOYMENT``, and in prod ``PATRIOT_WAREHOUSE_DATABASE_URL`` (the warehouse
database; dbt's postgres profile is pointed at it too).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import psycopg
from dagster import ConfigurableResource
from psycopg.conninfo import conninfo_to_dict

from core.db.urls import libpq_url
from warehouse.extract import RawSink
from warehouse.store import WarehouseStore

ROOT = Path(__file__).resolve().parent.parent
WAREHOUSE_URL_VARIABLE = "PATRIOT_WAREHOUSE_DATABASE_URL"


def deployment() -> str:
    value = os.environ.get("PATRIOT_DEPLOYMENT", "local")
    if value not in ("local", "prod"):
        raise ValueError(f"PATRIOT_DEPLOYMENT must be 'local' or 'prod', not {value!r}")
    return value


def data_dir() -> Path:
    path = Path(os.environ.get("PATRIOT_DATA_DIR", ".patriot"))
    return path if path.is_absolute() else ROOT / path


def dbt_postgres_env(database_url: str) -> dict[str, str]:
    """The ``PATRIOT_DBT_PG_*`` variables of dbt_project/profiles.yml pointing at ``database_url``: dbt builds in
    the database the extracts write, named once."""
    params = conninfo_to_dict(libpq_url(database_url))
    env = {
        "PATRIOT_DBT_PG_HOST": str(params.get("host") or "localhost"),
        "PATRIOT_DBT_PG_PORT": str(params.get("port") or 5432),
        "PATRIOT_DBT_PG_USER": str(params.get("user") or "postgres"),
        "PATRIOT_DBT_PG_DBNAME": str(params["dbname"]),
        "DBT_ENV_SECRET_PATRIOT_DBT_PG_PASSWORD": str(params.get("password") or ""),
    }
    if params.get("sslmode"):
        env["PATRIOT_DBT_PG_SSLMODE"] = str(params["sslmode"])
    return env


class PostgresResource(ConfigurableResource):  # type: ignore[type-arg]
    """The platform's PostgreSQL, the system of record the extracts read."""

    database_url: str = ""

    def url(self) -> str:
        if self.database_url:
            return self.database_url
        if os.environ.get("DATABASE_URL"):
            return libpq_url(os.environ["DATABASE_URL"])
        from core.runtime.embedded import start_services
        from core.settings import load_settings

        return start_services(load_settings()).database_url


class WarehouseResource(ConfigurableResource):  # type: ignore[type-arg]
    """The warehouse of this deployment. ``local``: a DuckDB working file the pipeline writes, readers get
    published copies. ``prod``: a PostgreSQL database (``database_url``, else PATRIOT_WAREHOUSE_DATABASE_URL) that
    readers query in place."""

    root: str = ""
    deployment: str = ""  # "local" or "prod"; empty: PATRIOT_DEPLOYMENT
    database_url: str = ""

    def is_postgres(self) -> bool:
        return (self.deployment or deployment()) == "prod"

    def url(self) -> str:
        """The warehouse PostgreSQL database (prod)."""
        url = self.database_url or os.environ.get(WAREHOUSE_URL_VARIABLE, "")
        if not url:
            raise ValueError(f"the prod deployment needs the warehouse database: set {WAREHOUSE_URL_VARIABLE}")
        return libpq_url(url)

    def store(self) -> WarehouseStore:
        return WarehouseStore(Path(self.root) if self.root else data_dir() / "warehouse")

    def connect(self) -> duckdb.DuckDBPyConnection:
        path = self.store().working_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        return duckdb.connect(str(path))

    @contextmanager
    def raw_sink(self) -> Iterator[duckdb.DuckDBPyConnection | RawSink]:
        """Where the extracts load: the DuckDB working file, or the warehouse PostgreSQL database."""
        if self.is_postgres():
            from warehouse.extract_pg import postgres_sink

            with postgres_sink(self.url()) as sink:
                yield sink
        else:
            with self.connect() as duck:
                yield duck

    def frame(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        """A query's rows as pandas, from the deployment's engine; ``sql`` is written in the SQL both share, with
        ``?`` placeholders."""
        return self.frames([(sql, params)])[0]

    def frames(self, queries: Sequence[tuple[str, Sequence[Any]]]) -> list[pd.DataFrame]:
        """Each query's rows as pandas (as :meth:`frame`), read over one connection."""
        if not self.is_postgres():
            with self.connect() as duck:
                return [duck.execute(sql, list(params)).df() for sql, params in queries]
        out = []
        with psycopg.connect(self.url()) as conn, conn.cursor() as cursor:
            for sql, params in queries:
                cursor.execute(sql.replace("?", "%s"), list(params))
                columns = [d.name for d in cursor.description or []]
                out.append(pd.DataFrame(cursor.fetchall(), columns=columns))
        return out

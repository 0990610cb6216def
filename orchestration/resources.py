"""Resources chosen per deployment: ``local`` (DuckDB file under the data directory, the platform's PostgreSQL,
dbt's ``duckdb`` target) or ``prod`` (the same dbt models on the ``postgres`` target).

Everything comes from the environment: ``DATABASE_URL`` (else the embedded PostgreSQL of the data directory),
``PATRIOT_DATA_DIR``, ``PATRIOT_DEPLOYMENT``.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
from dagster import ConfigurableResource

from warehouse.store import WarehouseStore

ROOT = Path(__file__).resolve().parent.parent


def deployment() -> str:
    value = os.environ.get("PATRIOT_DEPLOYMENT", "local")
    if value not in ("local", "prod"):
        raise ValueError(f"PATRIOT_DEPLOYMENT must be 'local' or 'prod', not {value!r}")
    return value


def data_dir() -> Path:
    path = Path(os.environ.get("PATRIOT_DATA_DIR", ".patriot"))
    return path if path.is_absolute() else ROOT / path


class PostgresResource(ConfigurableResource):  # type: ignore[type-arg]
    """The platform's PostgreSQL, the system of record the extracts read."""

    database_url: str = ""

    def url(self) -> str:
        if self.database_url:
            return self.database_url
        if os.environ.get("DATABASE_URL"):
            from core.db.urls import libpq_url

            return libpq_url(os.environ["DATABASE_URL"])
        from core.runtime.embedded import start_services
        from core.settings import load_settings

        return start_services(load_settings()).database_url


class WarehouseResource(ConfigurableResource):  # type: ignore[type-arg]
    """The DuckDB warehouse: the pipeline writes its working file, readers get published copies."""

    root: str = ""

    def store(self) -> WarehouseStore:
        return WarehouseStore(Path(self.root) if self.root else data_dir() / "warehouse")

    def connect(self) -> duckdb.DuckDBPyConnection:
        path = self.store().working_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        return duckdb.connect(str(path))

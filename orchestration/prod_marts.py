"""The Python models in production: ``int_trade_books`` and the marts ``performance``, ``trade_stats`` and
``risk_var`` on the warehouse PostgreSQL.

dbt-postgres cannot run Python models, so on the ``postgres`` target those four are disabled
(dbt_project/dbt_project.yml). This asset runs the very same model files (``dbt_project/models/*/*.py``, and
through them ``warehouse.metrics`` / ``warehouse.trades``) after dbt has built the SQL marts: each model's
``dbt.ref(...)`` is answered with the PostgreSQL table of that name, copied into an in-memory DuckDB session
(the session the models are written for) with its column types kept, or with the table a model before it in
this refresh returned. An incremental model (``int_trade_books``) finds its previous rows at ``dbt.this``, and
``dbt.is_incremental`` is true when it has some. The relations the models return are written to their schemas;
one transaction replaces all four tables, so readers see the old marts or the new ones.
"""

import functools
import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    AutomationCondition,
    Failure,
    MaterializeResult,
    multi_asset,
)

from core.db.urls import libpq_url
from orchestration.resources import WarehouseResource
from orchestration.transform_assets import DBT_DIR
from warehouse.extract import copy_chunks, parse_copy_csv
from warehouse.extract_pg import copy_arrow

PYTHON_MARTS = ("performance", "trade_stats", "risk_var")
# Every Python model and its schema, in the order they are built (trade_stats reads int_trade_books).
PYTHON_MODELS = {"int_trade_books": "intermediate", "trade_stats": "marts", "performance": "marts", "risk_var": "marts"}
MODELS_DIR = DBT_DIR / "models"
# The relations the models read (their ``dbt.ref`` calls), for lineage; a ref outside this list is still served.
UPSTREAM = {
    "int_trade_books": ("marts/fct_fills",),
    "performance": ("marts/nav_daily", "marts/nav_hourly", "intermediate/int_scope_activity"),
    "trade_stats": (
        "intermediate/int_trade_books",
        "intermediate/int_scope_accounts",
        "intermediate/int_account_calendar",
    ),
    "risk_var": ("marts/nav_daily",),
}
_SCHEMAS = ("marts", "intermediate", "staging")  # where dbt puts models (macros/generate_schema_name.sql)

_FIXED_TYPES: dict[str, pa.DataType] = {
    "double precision": pa.float64(),
    "real": pa.float32(),
    "bigint": pa.int64(),
    "integer": pa.int32(),
    "smallint": pa.int16(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "timestamp with time zone": pa.timestamp("us", tz="UTC"),
    "timestamp without time zone": pa.timestamp("us"),
}


def _arrow_type(pg_type: str) -> pa.DataType:
    """The Arrow type of a PostgreSQL column (``format_type``); DuckDB reads it as the type dbt-duckdb would
    have built (numeric(p, s) -> DECIMAL(p, s), unconstrained numeric -> the contract's DECIMAL(38, 18))."""
    if pg_type in _FIXED_TYPES:
        return _FIXED_TYPES[pg_type]
    numeric = re.fullmatch(r"numeric\((\d+),(\d+)\)", pg_type)
    if numeric:
        return pa.decimal128(int(numeric[1]), int(numeric[2]))
    if pg_type == "numeric":
        return pa.decimal128(38, 18)
    return pa.string()  # text, varchar, uuid, json: DuckDB VARCHAR


def _pg_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_floating(arrow_type):
        return "double precision"
    if pa.types.is_integer(arrow_type):
        return "bigint" if arrow_type.bit_width > 32 else "integer"
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_decimal(arrow_type):
        return f"numeric({arrow_type.precision},{arrow_type.scale})"
    if pa.types.is_timestamp(arrow_type):
        return "timestamptz" if arrow_type.tz else "timestamp"
    if pa.types.is_date(arrow_type):
        return "date"
    return "text"


def read_relation(conn: psycopg.Connection[Any], name: str) -> pa.Table:
    """A dbt model's PostgreSQL table (found in marts, intermediate or staging) as Arrow, through COPY csv."""
    found = conn.execute(
        "SELECT table_schema FROM information_schema.tables WHERE table_name = %s AND table_schema = ANY(%s)"
        " ORDER BY array_position(%s, table_schema::text) LIMIT 1",
        (name, list(_SCHEMAS), list(_SCHEMAS)),
    ).fetchone()
    if found is None:
        raise LookupError(f"no table {name!r} in the warehouse ({', '.join(_SCHEMAS)}): build the dbt models first")
    relation = f"{found[0]}.{name}"
    columns = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (relation,),
    ).fetchall()
    schema = pa.schema([pa.field(column, _arrow_type(pg_type)) for column, pg_type in columns])
    with conn.transaction():
        conn.execute("SET LOCAL TimeZone = 'UTC'")  # ISO times with a +00 offset, as the raw extract reads them
        conn.execute("SET LOCAL DateStyle = 'ISO, YMD'")
        conn.execute("SET LOCAL extra_float_digits = 3")  # doubles written in full, read back bit for bit
        with conn.cursor().copy(f"COPY (SELECT * FROM {relation}) TO STDOUT (FORMAT csv)") as copy:
            data = b"".join(copy_chunks(copy))
    return parse_copy_csv(data, schema)


class _Config:
    """``dbt.config``: the models call it to declare their materialization, and may read it back."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def __call__(self, **values: Any) -> None:
        self.values.update(values)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


class ModelContext:
    """The ``dbt`` object a dbt-duckdb Python model receives, answering ``ref`` from the warehouse database.

    ``this`` names the model's rows from the last refresh in the session: ``previous`` copies them there (False
    when there are none) the first time the model asks ``is_incremental``.
    """

    def __init__(
        self,
        name: str,
        ref: Callable[[str], duckdb.DuckDBPyRelation],
        schema: str = "marts",
        previous: Callable[[], bool] | None = None,
    ) -> None:
        self.config = _Config()
        self.this = f"{schema}.{name}"
        self._ref = ref
        self._previous = previous
        self._incremental: bool | None = None
        self.refs: list[str] = []

    @property
    def is_incremental(self) -> bool:
        if self._incremental is None:
            self._incremental = self._previous is not None and self._previous()
        return self._incremental

    def ref(self, *names: str, **_: Any) -> duckdb.DuckDBPyRelation:
        self.refs.append(names[-1])  # dbt.ref("model") or dbt.ref("package", "model")
        return self._ref(names[-1])

    def source(self, *names: str) -> duckdb.DuckDBPyRelation:
        raise NotImplementedError(f"dbt.source{names}: the Python marts read models only")


def load_model(name: str, models_dir: Path = MODELS_DIR) -> ModuleType:
    """One dbt Python model file as a module (its ``model(dbt, session)`` is what dbt-duckdb calls)."""
    folder = PYTHON_MODELS.get(name, "marts")  # a model's folder under models/ is its schema's name
    spec = importlib.util.spec_from_file_location(f"patriot_dbt_model_{name}", models_dir / folder / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _as_arrow(result: Any) -> pa.Table:
    """What a model returned (a DuckDB relation, an Arrow table, a pandas frame: dbt-duckdb accepts all three)."""
    if isinstance(result, pa.Table):
        return result
    if isinstance(result, duckdb.DuckDBPyRelation):
        return result.to_arrow_table()
    return pa.Table.from_pandas(result, preserve_index=False)


def compute_python_marts(conn: psycopg.Connection[Any]) -> tuple[dict[str, pa.Table], dict[str, list[str]]]:
    """Run the Python models on the warehouse database's SQL marts; (tables, refs each model read)."""
    session = duckdb.connect()
    session.execute("SET TimeZone = 'UTC'")  # dbt-duckdb's profile session (dbt_project/profiles.yml)
    loaded: dict[str, duckdb.DuckDBPyRelation] = {}

    def ref(name: str) -> duckdb.DuckDBPyRelation:
        if name not in loaded:
            loaded[name] = session.from_arrow(read_relation(conn, name))
        return loaded[name]

    tables, refs = {}, {}
    try:
        for name, schema in PYTHON_MODELS.items():
            previous = functools.partial(_previous_rows, conn, session, schema, name)
            context = ModelContext(name, ref, schema, previous)
            tables[name] = _as_arrow(load_model(name).model(context, session))
            loaded[name] = session.from_arrow(tables[name])  # what the models after it read
            refs[name] = context.refs
    finally:
        session.close()
    return tables, refs


def _previous_rows(conn: psycopg.Connection[Any], session: duckdb.DuckDBPyConnection, schema: str, name: str) -> bool:
    """Copy the model's current table into the session as ``schema.name`` (its ``dbt.this``); False if none."""
    try:
        table = read_relation(conn, name)
    except LookupError:
        return False
    session.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    session.from_arrow(table).create(f"{schema}.{name}")
    return True


def write_marts(conn: psycopg.Connection[Any], tables: dict[str, pa.Table]) -> None:
    """Replace ``<schema>.<name>`` by each table in one transaction (built aside, then swapped in by rename)."""
    with conn.transaction():
        for name, table in tables.items():
            schema = PYTHON_MODELS.get(name, "marts")
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            table = table.cast(pa.schema([_plain(field) for field in table.schema]))
            staging = f"{name}__patriot_new"
            columns = ", ".join(f'"{f.name}" {_pg_type(f.type)}' for f in table.schema)
            conn.execute(f"DROP TABLE IF EXISTS {schema}.{staging}")
            conn.execute(f"CREATE TABLE {schema}.{staging} ({columns})")
            copy_arrow(conn, f"{schema}.{staging}", table)
            conn.execute(f"DROP TABLE IF EXISTS {schema}.{name}")
            conn.execute(f"ALTER TABLE {schema}.{staging} RENAME TO {name}")


def _plain(field: pa.Field) -> pa.Field:
    """Large and view strings as plain strings (what the CSV writer and the DDL above expect)."""
    if pa.types.is_large_string(field.type) or pa.types.is_string_view(field.type):
        return field.with_type(pa.string())
    return field


def refresh_python_marts(database_url: str) -> tuple[dict[str, int], dict[str, list[str]]]:
    """Compute the Python marts from the warehouse database's SQL marts and write them; (rows, refs) per mart."""
    with psycopg.connect(libpq_url(database_url)) as conn:
        conn.autocommit = True
        tables, refs = compute_python_marts(conn)
        write_marts(conn, tables)
    return {name: table.num_rows for name, table in tables.items()}, refs


@multi_asset(
    name="python_marts",
    specs=[
        AssetSpec(
            AssetKey([schema, name]),
            deps=[AssetKey(key.split("/")) for key in UPSTREAM[name]],
            group_name="dbt_marts",
            kinds={"python", "postgres"},
            description=f"dbt_project/models/{schema}/{name}.py run on the warehouse PostgreSQL (prod)",
            # the dbt build that refreshed the SQL marts triggers it (the marts' jobs select the dbt assets)
            automation_condition=AutomationCondition.eager(),
        )
        for name, schema in PYTHON_MODELS.items()
    ],
)
def python_marts(context: AssetExecutionContext, warehouse: WarehouseResource) -> Any:
    """The Python marts that dbt-postgres cannot build, from the same model files, in the warehouse database."""
    if not warehouse.is_postgres():
        raise Failure(description="python_marts is the prod path: locally dbt-duckdb builds these marts itself")
    rows, refs = refresh_python_marts(warehouse.url())
    for name, schema in PYTHON_MODELS.items():
        undeclared = set(refs[name]) - {key.split("/")[-1] for key in UPSTREAM[name]}
        if undeclared:
            context.log.warning(f"{schema}.{name} read {sorted(undeclared)}, not in UPSTREAM (its lineage): add them")
        yield MaterializeResult(asset_key=AssetKey([schema, name]), metadata={"rows": rows[name], "refs": refs[name]})

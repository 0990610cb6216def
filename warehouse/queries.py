"""Read-model queries over the published warehouse's marts, as polars frames for the API and dashboards.

Every function opens a read-only connection to the current published file (``WarehouseStore.connect_reader``)
and closes it before returning, so a caller never holds a file the pipeline is about to retire. Values are
always bound as parameters; only identifiers from this module's constants appear in the SQL text.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any, Literal

import polars as pl

from warehouse.metrics import PERFORMANCE_KEYS, VAR_METHODS
from warehouse.store import WarehouseStore

__all__ = ["FREQUENCIES", "SCOPES", "exposures", "nav_series", "performance_table", "risk_summary", "risk_table"]

Scope = Literal["account", "user", "strategy", "fund"]
Frequency = Literal["daily", "hourly"]

SCOPES: tuple[str, ...] = ("account", "user", "strategy", "fund")
"""The aggregation levels of the marts; the fund's scope_id is ''."""

FREQUENCIES: tuple[str, ...] = ("daily", "hourly")

_NAV = {
    "daily": ("marts.nav_daily", "day", ("nav", "net_flows", '"return"')),
    "hourly": ("marts.nav_hourly", "hour", ("cash", "positions_value", "nav", "net_flows", '"return"')),
}
_PERFORMANCE_COLUMNS = ("scope", "scope_id", "frequency", *PERFORMANCE_KEYS, "turnover", "fees", "trades")
_RISK_SUMMARY_COLUMNS = (
    "scope",
    "scope_id",
    "gross_exposure",
    "net_exposure",
    "nav",
    "leverage",
    "concentration_hhi",
    "largest_position_share",
)


def nav_series(
    store: WarehouseStore,
    scope: str,
    scope_id: str,
    frequency: str = "daily",
    start: date | datetime | None = None,
    end: date | datetime | None = None,
) -> pl.DataFrame:
    """NAV, net flows and time-weighted return of one scope, oldest first, within [start, end).

    Daily rows are keyed by ``day`` (dates), hourly rows by ``hour`` (UTC); a date bound on the hourly series
    means that day's midnight UTC, a datetime bound on the daily series means its date.
    """
    _check_scope(scope, scope_id)
    if frequency not in _NAV:
        raise ValueError(f"frequency must be one of {', '.join(FREQUENCIES)}, not {frequency!r}")
    table, time_column, values = _NAV[frequency]
    sql = f"SELECT {time_column}, {', '.join(values)} FROM {table} WHERE scope = ? AND scope_id = ?"
    params: list[Any] = [scope, scope_id]
    if start is not None:
        sql += f" AND {time_column} >= ?"
        params.append(_bound(start, frequency))
    if end is not None:
        sql += f" AND {time_column} < ?"
        params.append(_bound(end, frequency))
    return _frame(store, sql + f" ORDER BY {time_column}", params)


def performance_table(store: WarehouseStore, scope: str | None = None) -> pl.DataFrame:
    """Performance figures (``warehouse.metrics.performance`` keys, turnover, fees, trades) per scope and frequency."""
    sql = f"SELECT {', '.join(_PERFORMANCE_COLUMNS)} FROM marts.performance"
    params: list[Any] = []
    if scope is not None:
        _check_scope_name(scope)
        sql += " WHERE scope = ?"
        params.append(scope)
    return _frame(store, sql + " ORDER BY scope, scope_id, frequency", params)


def risk_table(store: WarehouseStore, scope: str, scope_id: str) -> pl.DataFrame:
    """One-day VaR and CVaR (as returns) of one scope: every method at every confidence level."""
    _check_scope(scope, scope_id)
    sql = (
        "SELECT method, level, var, cvar FROM marts.risk_var WHERE scope = ? AND scope_id = ? "
        "ORDER BY level, list_position(?::VARCHAR[], method), method"
    )
    return _frame(store, sql, [scope, scope_id, list(VAR_METHODS)])


def exposures(store: WarehouseStore, scope: str, scope_id: str) -> pl.DataFrame:
    """Gross and net exposure of one scope per exchange and symbol, largest gross first."""
    _check_scope(scope, scope_id)
    sql = (
        "SELECT exchange, symbol, gross, net, share_of_gross FROM marts.exposures WHERE scope = ? AND scope_id = ? "
        "ORDER BY gross DESC, exchange, symbol"
    )
    return _frame(store, sql, [scope, scope_id])


def risk_summary(store: WarehouseStore, scope: str | None = None) -> pl.DataFrame:
    """Exposure, leverage and concentration per scope (every scope, or one level of them)."""
    sql = f"SELECT {', '.join(_RISK_SUMMARY_COLUMNS)} FROM marts.risk_summary"
    params: list[Any] = []
    if scope is not None:
        _check_scope_name(scope)
        sql += " WHERE scope = ?"
        params.append(scope)
    return _frame(store, sql + " ORDER BY scope, scope_id", params)


def _check_scope_name(scope: str) -> None:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")


def _check_scope(scope: str, scope_id: str) -> None:
    _check_scope_name(scope)
    if scope == "fund" and scope_id != "":
        raise ValueError(f"the fund scope has scope_id '' (one fund), not {scope_id!r}")
    if scope != "fund" and not scope_id:
        raise ValueError(f"scope {scope!r} needs a scope_id (the {scope}'s id)")


def _bound(value: date | datetime, frequency: str) -> date | datetime:
    if frequency == "daily":
        return value.date() if isinstance(value, datetime) else value
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def _frame(store: WarehouseStore, sql: str, params: Sequence[Any]) -> pl.DataFrame:
    with store.connect_reader() as conn:
        frame: pl.DataFrame = conn.sql(sql, params=list(params)).pl()
    return frame

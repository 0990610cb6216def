"""Performance of every scope, daily (365 periods a year) and hourly (8,760), from warehouse.metrics.

The figures are ``warehouse.metrics.performance`` on the scope's time-weighted returns (nav_daily,
nav_hourly), oldest first, computed for all scopes at once by ``warehouse.metrics.performance_table``. Periods
without a return (the first period of a scope, or one after a NAV that is not positive) are dropped on purpose:
the metrics refuse NaN. Plus, over the whole history: ``fees`` (quote, weighted like NAV), ``trades`` (number of
fills) and ``turnover`` = traded notional / the mean NAV of the series (NaN if that mean is not positive).
"""

import importlib
import math
import os
import sys

FREQUENCIES = (("daily", "nav_daily", "day", 365), ("hourly", "nav_hourly", "hour", 8760))

# Scopes numbered in (scope, scope_id) order, and their returns sorted by that number and time: DuckDB sorts the
# integer far faster than the two strings. Rows without a scope are left out, as a pandas groupby leaves them.
SCOPES = """
    select scope, scope_id, row_number() over (order by scope, scope_id) - 1 as series
    from (select distinct scope, scope_id from nav where scope is not null and scope_id is not null)
"""


def _series_sql(frequency):
    """One row per scope in series order: its names, the frequency, the mean NAV and the number of returns.

    The mean is taken over the DECIMAL NAV, which DuckDB sums exactly; casting every NAV to double first (the mean
    of doubles) would cost most of this model's time, for a figure that agrees to about 1e-16.
    """
    return f"""
        select scope, scope_id, '{frequency}' as frequency, avg(nav) as mean_nav,
            count("return") filter (where not isnan("return")) as periods
        from nav
        where scope is not null and scope_id is not null
        group by scope, scope_id
        order by scope, scope_id
    """


def _returns_sql(time_column):
    """Every return, scope after scope in the order of _series_sql, oldest first."""
    return f"""
        with scopes as ({SCOPES})
        select n."return"
        from nav as n join scopes as s using (scope, scope_id)
        where n."return" is not null and not isnan(n."return")
        order by s.series, n.{time_column}
    """


def _warehouse(module):
    """warehouse.<module>, importable from the repository root (PATRIOT_ROOT, else the project's parent)."""
    try:
        return importlib.import_module(f"warehouse.{module}")
    except ImportError:
        sys.path.insert(0, os.environ.get("PATRIOT_ROOT") or os.path.dirname(os.path.abspath(os.getcwd())))
        return importlib.import_module(f"warehouse.{module}")


def model(dbt, session):
    dbt.config(materialized="table")
    import numpy as np
    import pyarrow as pa

    metrics, arrow_columns = _warehouse("metrics"), _warehouse("arrow_columns")
    arrow_column = arrow_columns.arrow_column
    activity = {
        (row[0], row[1]): row[2:]
        for row in dbt.ref("int_scope_activity")
        .project("scope, scope_id, cast(fees as double), cast(traded_notional as double), fills")
        .fetchall()
    }

    navs = {"nav_daily": dbt.ref("nav_daily"), "nav_hourly": dbt.ref("nav_hourly")}  # dbt parses literal refs

    tables = []
    for frequency, relation, time_column, periods_per_year in FREQUENCIES:
        nav = navs[relation]
        series = nav.query("nav", _series_sql(frequency)).to_arrow_table()
        returns = nav.query("nav", _returns_sql(time_column)).to_arrow_table().column(0)
        returns = arrow_columns.numpy_values(returns, np.float64)
        lengths = np.array(series.column("periods").to_pylist(), dtype=np.int64)
        figures = metrics.performance_table(returns, lengths, periods_per_year=periods_per_year, risk_free=0.0)

        scopes = zip(series.column("scope").to_pylist(), series.column("scope_id").to_pylist(), strict=True)
        totals = [activity.get(scope, (0.0, 0.0, 0)) for scope in scopes]
        mean_navs = series.column("mean_nav").to_pylist()
        turnover = [
            notional / mean_nav if mean_nav is not None and mean_nav > 0 else math.nan
            for (_, notional, _), mean_nav in zip(totals, mean_navs, strict=True)
        ]
        columns = {name: series.column(name) for name in ("scope", "scope_id", "frequency")}
        columns |= {key: arrow_column(figures[key]) for key in metrics.PERFORMANCE_KEYS}
        columns |= {
            "turnover": arrow_column(np.array(turnover, dtype=np.float64)),
            "fees": arrow_column(np.array([float(fees) for fees, _, _ in totals], dtype=np.float64)),
            "trades": arrow_column(np.array([int(fills) for _, _, fills in totals], dtype=np.int64)),
        }
        tables.append(pa.table(columns))
    # A relation, not the Arrow table: dbt-duckdb imports pyarrow.dataset (and with it pandas) for a returned table.
    return session.from_arrow(pa.concat_tables(tables))

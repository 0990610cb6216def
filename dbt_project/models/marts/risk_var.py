"""One-day Value at Risk and expected shortfall of every scope, from warehouse.metrics.var_table.

Historical, gaussian and Cornish-Fisher estimators at 0.95 and 0.99 on the scope's daily time-weighted
returns (nav_daily, oldest first, periods without a return dropped): 6 rows per scope. VaR and CVaR are
returns, a loss is negative; NaN where an estimator has too few returns (docs/metrics.md).
"""

import importlib
import os
import sys

LEVELS = (0.95, 0.99)

# As in performance.py: scopes numbered in (scope, scope_id) order and returns sorted by that number and day
# (DuckDB sorts the integer far faster than the strings); rows without a scope are left out, as a pandas groupby
# leaves them.
SCOPES = """
    select scope, scope_id, row_number() over (order by scope, scope_id) - 1 as series
    from (select distinct scope, scope_id from nav where scope is not null and scope_id is not null)
"""
SERIES = """
    select scope, scope_id, count("return") filter (where not isnan("return")) as periods
    from nav
    where scope is not null and scope_id is not null
    group by scope, scope_id
    order by scope, scope_id
"""
RETURNS = f"""
    with scopes as ({SCOPES})
    select n."return"
    from nav as n join scopes as s using (scope, scope_id)
    where n."return" is not null and not isnan(n."return")
    order by s.series, n.day
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
    daily = dbt.ref("nav_daily")
    scopes = daily.query("nav", SERIES).fetchall()
    returns = arrow_columns.numpy_values(daily.query("nav", RETURNS).to_arrow_table().column(0), np.float64)
    lengths = np.array([periods for _, _, periods in scopes], dtype=np.int64)
    ends = np.cumsum(lengths)

    columns = {name: [] for name in ("scope", "scope_id", "method", "level", "var", "cvar")}
    for (scope, scope_id, _), start, end in zip(scopes, ends - lengths, ends, strict=True):
        for line in metrics.var_table(returns[start:end], levels=LEVELS):
            values = (scope, scope_id, line["method"], line["level"], line["var"], line["cvar"])
            for name, value in zip(columns, values, strict=True):
                columns[name].append(value)

    strings = ("scope", "scope_id", "method")
    arrays = {
        name: arrow_columns.arrow_column(v if name in strings else np.array(v, dtype=np.float64))
        for name, v in columns.items()
    }
    # A relation, not the Arrow table: dbt-duckdb imports pyarrow.dataset (and with it pandas) for a returned table.
    return session.from_arrow(pa.table(arrays))

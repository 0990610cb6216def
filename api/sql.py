"""Small SQL builders for the routers' read queries (column names come from constants, values are parameters)."""

from __future__ import annotations

from collections.abc import Mapping


def where_equal(values: Mapping[str, str | None], *conditions: str) -> tuple[str, list[str]]:
    """`` WHERE`` of the fixed ``conditions`` and ``column = %s`` for each value given (None: no filter), with the
    parameters; an empty clause when there is nothing to filter on."""
    clauses = list(conditions)
    params: list[str] = []
    for column, value in values.items():
        if value is not None:
            clauses.append(f"{column} = %s")
            params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

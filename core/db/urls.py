"""One place that turns a configured database URL into the forms each client wants."""

from __future__ import annotations


def sqlalchemy_url(url: str) -> str:
    """SQLAlchemy needs the psycopg 3 driver named explicitly."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {url.split('@')[-1]!r}; expected postgresql://user@host:port/db")


def libpq_url(url: str) -> str:
    """psycopg and the PostgreSQL tools take a plain libpq URL."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def with_database(url: str, database: str) -> str:
    """The same server, another database (used to create and drop per-test databases)."""
    base = libpq_url(url)
    head, _, tail = base.rpartition("/")
    query = ""
    if "?" in tail:
        query = "?" + tail.split("?", 1)[1]
    return f"{head}/{database}{query}"

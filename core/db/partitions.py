"""Partition maintenance entry point (``patriot db partitions``; also run by ``patriot up``)."""

from __future__ import annotations

import psycopg
import structlog

from core.db.timeseries import PsycopgExecutor, maintain_partitions
from core.db.urls import libpq_url

log = structlog.get_logger(__name__)


def run_partition_maintenance(database_url: str, days_ahead: int = 7) -> list[str]:
    """Create missing partitions for yesterday through ``days_ahead`` days from now; returns their names."""
    with psycopg.connect(libpq_url(database_url)) as conn:
        created = maintain_partitions(PsycopgExecutor(conn), days_ahead=days_ahead)
        conn.commit()
    if created:
        log.info("partitions created", count=len(created), first=created[0], last=created[-1])
    return created

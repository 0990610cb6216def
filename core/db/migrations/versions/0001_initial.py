"""Initial schema: users and accounts, orders and fills, positions and balances, strategies, risk limits,
event store, outbox, processed messages, and the time-series tables.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

from core.db import schema
from core.db.timeseries import (
    SqlAlchemyExecutor,
    create_time_series_tables,
    drop_time_series_tables,
    maintain_partitions,
    timescale_available,
)

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

# The tables exactly as this revision defines them; later revisions alter them with op.* calls.
_TABLES = [
    schema.users,
    schema.user_accounts,
    schema.strategies,
    schema.strategy_assignments,
    schema.orders,
    schema.fills,
    schema.positions,
    schema.balances,
    schema.risk_limits,
    schema.event_store,
    schema.outbox,
    schema.processed_messages,
]


def upgrade() -> None:
    bind = op.get_bind()
    for table in _TABLES:
        table.create(bind)
    executor = SqlAlchemyExecutor(bind)
    create_time_series_tables(executor, use_timescale=timescale_available(executor))
    maintain_partitions(executor)


def downgrade() -> None:
    bind = op.get_bind()
    drop_time_series_tables(SqlAlchemyExecutor(bind))
    for table in reversed(_TABLES):
        table.drop(bind)

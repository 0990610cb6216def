"""Retention of the consumers' dedupe rows: an index on (consumer, processed_at) so each consumer group prunes
its rows older than the retention in small batches without scanning the table.

Revision 0001 builds its tables from ``core.db.schema``, which now declares the index too, so the index is
created ``IF NOT EXISTS``.

Revision ID: 0006_processed_retention
Revises: 0005_session_cutoff
Create Date: 2026-12-08
"""

from __future__ import annotations

from alembic import op

revision = "0006_processed_retention"
down_revision = "0005_session_cutoff"
branch_labels = None
depends_on = None

INDEX = "ix_processed_messages_consumer_processed_at"


def upgrade() -> None:
    op.execute(f"CREATE INDEX IF NOT EXISTS {INDEX} ON processed_messages (consumer, processed_at)")


def downgrade() -> None:
    op.execute(f"DROP INDEX IF EXISTS {INDEX}")

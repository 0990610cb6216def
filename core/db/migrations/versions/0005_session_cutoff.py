"""Session cut-off: ``users.sessions_valid_after``, the instant before which a user's sessions (refresh token
families) no longer renew; a password change sets it, so every session begun with the old password ends.

Revision 0001 builds its tables from ``core.db.schema``, which declares the column too, so a fresh database
already has it: the change here is ``IF NOT EXISTS`` and only touches databases created before this revision.

Revision ID: 0005_session_cutoff
Revises: 0004_trade_gaps
Create Date: 2026-12-08
"""

from __future__ import annotations

from alembic import op

revision = "0005_session_cutoff"
down_revision = "0004_trade_gaps"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE users ADD COLUMN IF NOT EXISTS sessions_valid_after timestamptz")


def downgrade() -> None:
    op.execute("ALTER TABLE users DROP COLUMN IF EXISTS sessions_valid_after")

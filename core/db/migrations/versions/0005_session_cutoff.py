"""Session cut-off: ``users.sessions_valid_after``, the instant before which a user's sessions (refresh token
families) no longer renew; a password change sets it, so every session begun with the old password ends.

Revision ID: 0005_session_cutoff
Revises: 0003_capital_flows
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_session_cutoff"
down_revision = "0003_capital_flows"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("sessions_valid_after", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("users", "sessions_valid_after")

"""Check-in history with agent-chosen ids, so a retried check-in is recorded exactly once.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "hosts", sa.Column("checkin_count", sa.Integer, nullable=False, server_default="0")
    )
    # Hosts that checked in before this revision did so at least once.
    op.execute("UPDATE hosts SET checkin_count = 1 WHERE last_checkin_at IS NOT NULL")
    op.create_table(
        "checkins",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True),
        sa.Column("host_id", sa.String(32), nullable=False),
        sa.Column("checkin_id", sa.String(36), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("agent_version", sa.String(64)),
        sa.PrimaryKeyConstraint("id", name="pk_checkins"),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.id"], name="fk_checkins_host_id_hosts", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("host_id", "checkin_id", name="uq_checkins_host_id_checkin_id"),
    )
    op.create_index("ix_checkins_received_at", "checkins", ["received_at"])


def downgrade() -> None:
    op.drop_table("checkins")
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("checkin_count")

"""Drop two indexes every check-in paid to maintain and only rare admin reports read.

The hosts row is updated on every check-in: an index on last_checkin_at made each
update write a new entry in it (and in every other index of hosts, as PostgreSQL
cannot do a heap-only update when an indexed column changes). The (target_key,
applied_level) index took one entry per target row written. Their readers, the
per-target levels report and the stale-hosts report and metric, aggregate over
most of the table anyway, so a scan serves them.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_hosts_last_checkin_at", table_name="hosts")
    op.drop_index("ix_host_targets_target_key_applied_level", table_name="host_targets")


def downgrade() -> None:
    op.create_index(
        "ix_host_targets_target_key_applied_level", "host_targets", ["target_key", "applied_level"]
    )
    op.create_index("ix_hosts_last_checkin_at", "hosts", ["last_checkin_at"])

"""Initial schema: feeds, registration keys, hosts and their targets, bundles, tokens, audit.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    feeds = op.create_table(
        "feeds",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.String(500), nullable=False, server_default=""),
        sa.Column("delay_hours", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_feeds"),
    )
    op.create_table(
        "registration_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("feed", sa.String(64), nullable=False),
        sa.Column("sticky", sa.String(32)),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("host_limit", sa.Integer),
        sa.Column("host_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("revoked_at", UTC_TIME),
        sa.PrimaryKeyConstraint("id", name="pk_registration_keys"),
        sa.ForeignKeyConstraint(["feed"], ["feeds.name"], name="fk_registration_keys_feed_feeds"),
    )
    op.create_table(
        "hosts",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("registration_key_id", sa.String(32)),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("feed", sa.String(64), nullable=False),
        sa.Column("sticky", sa.String(32)),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("distro_id", sa.String(64)),
        sa.Column("distro_version", sa.String(64)),
        sa.Column("kernel_release", sa.String(255)),
        sa.Column("kernel_build_id", sa.String(128)),
        sa.Column("kernel_version_digest", sa.String(64)),
        sa.Column("agent_version", sa.String(64)),
        sa.Column("inventory_digest", sa.String(64)),
        sa.Column("registered_at", UTC_TIME, nullable=False),
        sa.Column("last_checkin_at", UTC_TIME),
        sa.Column("unregistered_at", UTC_TIME),
        sa.PrimaryKeyConstraint("id", name="pk_hosts"),
        sa.ForeignKeyConstraint(
            ["registration_key_id"],
            ["registration_keys.id"],
            name="fk_hosts_registration_key_id_registration_keys",
        ),
        sa.ForeignKeyConstraint(["feed"], ["feeds.name"], name="fk_hosts_feed_feeds"),
    )
    op.create_index("ix_hosts_registration_key_id", "hosts", ["registration_key_id"])
    op.create_index("ix_hosts_last_checkin_at", "hosts", ["last_checkin_at"])
    op.create_table(
        "host_targets",
        sa.Column("host_id", sa.String(32), nullable=False),
        sa.Column("target_key", sa.String(200), nullable=False),
        sa.Column("alt_target_key", sa.String(200)),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("package_name", sa.String(255)),
        sa.Column("package_version", sa.String(255)),
        sa.Column("processes", sa.Integer, nullable=False, server_default="0"),
        sa.Column("applied_level", sa.Integer),
        sa.PrimaryKeyConstraint("host_id", "target_key", name="pk_host_targets"),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.id"], name="fk_host_targets_host_id_hosts", ondelete="CASCADE"
        ),
    )
    op.create_index(
        "ix_host_targets_target_key_applied_level", "host_targets", ["target_key", "applied_level"]
    )
    op.create_table(
        "bundles",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("target_key", sa.String(200), nullable=False),
        sa.Column("target_name", sa.String(255), nullable=False),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("effective_version", sa.String(255), nullable=False),
        sa.Column("cves", sa.JSON, nullable=False),
        sa.Column("manifest", sa.JSON, nullable=False),
        sa.Column("published_at", UTC_TIME, nullable=False),
        sa.Column("retired_at", UTC_TIME),
        sa.Column("uploaded_by", sa.String(160), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name="pk_bundles"),
        sa.UniqueConstraint("target_key", "level", name="uq_bundles_target_key_level"),
    )
    op.create_index("ix_bundles_kind", "bundles", ["kind"])
    op.create_table(
        "blobs",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("sha256", name="pk_blobs"),
    )
    op.create_table(
        "admin_tokens",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.JSON, nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("revoked_at", UTC_TIME),
        sa.PrimaryKeyConstraint("id", name="pk_admin_tokens"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", BIG_ID, nullable=False, autoincrement=True),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.Column("actor", sa.String(160), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    now = datetime.now(UTC)
    op.bulk_insert(
        feeds,
        [
            {
                "name": "stable",
                "description": "production hosts: bundles one day after publication",
                "delay_hours": 24,
                "created_at": now,
            },
            {
                "name": "test",
                "description": "canary hosts: bundles as soon as they are published",
                "delay_hours": 0,
                "created_at": now,
            },
        ],
    )


def downgrade() -> None:
    for table in (
        "audit_log",
        "admin_tokens",
        "blobs",
        "bundles",
        "host_targets",
        "hosts",
        "registration_keys",
        "feeds",
    ):
        op.drop_table(table)

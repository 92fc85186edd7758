"""Vulnerability monitoring: installed-package lists, advisories from feeds, feed downloads.

Hosts share package lists (a fleet runs few images), so a list is stored once
in ``package_sets`` by its digest and a host row names the digest it reported
last. ``advisories`` holds what each feed says of each CVE per source package
and release; a feed's import replaces that feed's records whole, and is logged in
``advisory_imports``, whose newest id tells every server process its findings are stale.
``feed_downloads`` remembers each synced URL's Last-Modified and ETag.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "package_sets",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("manager", sa.String(8), nullable=False),
        sa.Column("packages", sa.Text, nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
    )
    op.add_column("hosts", sa.Column("packages_digest", sa.String(64)))
    op.create_table(
        "advisories",
        sa.Column("release", sa.String(32), primary_key=True),
        sa.Column("source", sa.String(200), primary_key=True),
        sa.Column("cve", sa.String(32), primary_key=True),
        sa.Column("feed", sa.String(32), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("fixed_version", sa.String(256)),
        sa.Column("urgency", sa.String(32)),
        sa.Column("cvss", sa.Float),
        sa.Column("nodsa", sa.String(500)),
        sa.Column("description", sa.Text),
    )
    op.create_index("ix_advisories_cve", "advisories", ["cve"])
    op.create_index("ix_advisories_feed", "advisories", ["feed"])
    op.create_table(
        "advisory_imports",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.Column("feed", sa.String(32), nullable=False),
        sa.Column("advisories", sa.Integer, nullable=False),
    )
    op.create_table(
        "feed_downloads",
        sa.Column("url", sa.String(2048), primary_key=True),
        sa.Column("last_modified", sa.String(64)),
        sa.Column("etag", sa.String(256)),
        sa.Column("fetched_at", UTC_TIME),
        sa.Column("records", sa.Integer),
        sa.Column("error", sa.String(500)),
    )


def downgrade() -> None:
    op.drop_table("feed_downloads")
    op.drop_table("advisory_imports")
    op.drop_index("ix_advisories_feed", table_name="advisories")
    op.drop_index("ix_advisories_cve", table_name="advisories")
    op.drop_table("advisories")
    op.drop_column("hosts", "packages_digest")
    op.drop_table("package_sets")

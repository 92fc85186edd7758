"""A host's inventory becomes one JSON document in its hosts row; host_targets goes.

A first check-in wrote 21 target rows, each with its primary-key entry: about
10 KB of WAL and twice the PostgreSQL CPU of the rest of the check-in. One
text column holding the same rows as a JSON array (compressed out of line by
PostgreSQL) costs about 3 KB. Each target is an array of its values in FIELDS
order (half the size of objects keyed by name). Its readers (host detail, download
authorization, the per-target report) read whole inventories anyway.

Existing rows are carried over; the inventory digest is cleared, so each
host's next check-in stores its inventory afresh in the new form.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import groupby
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The fields of one inventory entry, as in host_targets (and checkin.TargetRow at this revision).
FIELDS = (
    "target_key",
    "alt_target_key",
    "kind",
    "name",
    "package_name",
    "package_version",
    "processes",
    "applied_level",
)
BATCH = 1000


def _create_host_targets() -> sa.Table:
    """The table as revision 0003 left it."""
    return op.create_table(
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


def _batches(rows: Iterator[Any]) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _entry(row: Any) -> list[Any]:
    return [getattr(row, name) for name in FIELDS]


def upgrade() -> None:
    op.add_column("hosts", sa.Column("inventory", sa.Text))
    connection = op.get_bind()
    targets = sa.table("host_targets", *(sa.column(name) for name in ("host_id", *FIELDS)))
    hosts = sa.table("hosts", sa.column("id"), sa.column("inventory"))
    # Streamed (a fleet may have millions of target rows), one host's rows after another.
    rows = connection.execute(
        sa.select(*(targets.c[name] for name in ("host_id", *FIELDS))).order_by(
            targets.c.host_id, targets.c.kind, targets.c.target_key
        ),
        execution_options={"yield_per": BATCH},
    )
    documents = (
        {"h_id": host_id, "inventory": json.dumps([_entry(row) for row in group])}
        for host_id, group in groupby(rows, key=lambda row: row.host_id)
    )
    update = hosts.update().where(hosts.c.id == sa.bindparam("h_id"))
    for batch in _batches(documents):
        connection.execute(update.values(inventory=sa.bindparam("inventory")), batch)
    op.execute("UPDATE hosts SET inventory_digest = NULL")
    op.drop_table("host_targets")


def downgrade() -> None:
    connection = op.get_bind()
    stored = connection.execute(
        sa.text("SELECT id, inventory FROM hosts WHERE inventory IS NOT NULL")
    ).all()
    # Drop the column before host_targets exists: on SQLite, batch mode copies and drops
    # the hosts table, and dropping it would cascade to rows that referenced it.
    with op.batch_alter_table("hosts") as batch_op:
        batch_op.drop_column("inventory")
    op.execute("UPDATE hosts SET inventory_digest = NULL")
    targets = _create_host_targets()
    entries = (
        {"host_id": host_id, **dict(zip(FIELDS, entry, strict=True))}
        for host_id, text in stored
        for entry in json.loads(text)
    )
    for batch in _batches(entries):
        connection.execute(targets.insert(), batch)

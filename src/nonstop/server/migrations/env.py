"""Alembic environment: runs migrations on the connection ``nonstop.server.migrate`` passes in."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from nonstop.server.models import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run migrations through `nonstop db upgrade`, which supplies a connection")
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()

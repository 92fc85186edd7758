"""Schema migrations: upgrade a database to the newest revision, or tell how far behind it is.

`nonstop db upgrade` upgrades explicitly. `nonstop serve` upgrades an empty
database by itself (first start) but refuses to start on a database at any other
revision (or with tables but no revision): with several replicas, an upgrade is
an operator's decision, made once. On PostgreSQL an advisory lock makes concurrent
upgrades run one at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

SCRIPT_LOCATION = "nonstop.server:migrations"
_UPGRADE_LOCK = 0x6E6F6E73  # "nons": a fixed id for pg_advisory_lock


class DatabaseNotReadyError(Exception):
    """The database is not at the revision this server needs (and is not empty)."""


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's config for the packaged migrations. ``migrations/env.py`` runs only on the
    CONNECTION given here: without one, running a migration raises RuntimeError.
    """
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision packaged with this server."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("the packaged migrations have no head revision")
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision ENGINE's database is at; None when it has no alembic version."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@contextmanager
def _exclusive(connection: Connection) -> Iterator[None]:
    """Hold the cluster-wide upgrade lock on PostgreSQL (SQLite serializes writers itself)."""
    postgres = connection.dialect.name == "postgresql"
    if postgres:
        connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _UPGRADE_LOCK})
        connection.commit()
    try:
        yield
    finally:
        if postgres:
            connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _UPGRADE_LOCK})
            connection.commit()


def _upgrade(connection: Connection, revision: str) -> None:
    command.upgrade(alembic_config(connection), revision)
    connection.commit()


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Upgrade to REVISION; return the revision the database is at afterwards."""
    with engine.connect() as connection, _exclusive(connection):
        _upgrade(connection, revision)
    return current_revision(engine)


def prepare_for_serving(engine: Engine) -> bool:
    """Upgrade an empty database, else raise ``DatabaseNotReadyError`` unless it is at the
    head revision. True if this call upgraded."""
    head = head_revision()
    if current_revision(engine) == head:
        return False
    # Replicas may start together on an empty database: decide under the lock.
    with engine.connect() as connection, _exclusive(connection):
        current = MigrationContext.configure(connection).get_current_revision()
        if current == head:
            return False
        if current is not None:
            raise DatabaseNotReadyError(
                f"database is at schema revision {current}, this server needs {head}: "
                "run `nonstop db upgrade` first"
            )
        tables = set(inspect(connection).get_table_names())
        if tables:
            raise DatabaseNotReadyError(
                f"database has tables ({', '.join(sorted(tables)[:3])}, ...) but no nonstop "
                "schema revision; point the server at an empty database or a nonstop one"
            )
        _upgrade(connection, "head")
        return True

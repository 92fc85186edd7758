"""Schema migrations: upgrade a database to the newest revision, or tell how far behind it is.

`nonstop db upgrade` upgrades explicitly. `nonstop serve` upgrades an empty
database by itself (first start) but refuses to start on a database at an older
revision: with several replicas, an upgrade is an operator's decision, made
once. On PostgreSQL an advisory lock makes concurrent upgrades run one at a time.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

SCRIPT_LOCATION = "nonstop.server:migrations"
_UPGRADE_LOCK = 0x6E6F6E73  # "nons": a fixed id for pg_advisory_lock


class DatabaseNotReadyError(Exception):
    """The database is not at the revision this server needs (and is not empty)."""


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:
        raise RuntimeError("the packaged migrations have no head revision")
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Upgrade to REVISION; return the revision the database is at afterwards."""
    with engine.connect() as connection:
        postgres = connection.dialect.name == "postgresql"
        if postgres:
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _UPGRADE_LOCK})
            connection.commit()
        try:
            command.upgrade(_config(connection), revision)
            connection.commit()
        finally:
            if postgres:
                connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _UPGRADE_LOCK})
                connection.commit()
    return current_revision(engine)


def prepare_for_serving(engine: Engine) -> bool:
    """Upgrade an empty database; refuse one that is behind. True if this call upgraded."""
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return False
    if current is None:
        tables = set(inspect(engine).get_table_names())
        if tables:
            raise DatabaseNotReadyError(
                f"database has tables ({', '.join(sorted(tables)[:3])}, ...) but no nonstop "
                "schema revision; point the server at an empty database or a nonstop one"
            )
        upgrade(engine)
        return True
    raise DatabaseNotReadyError(
        f"database is at schema revision {current}, this server needs {head}: "
        "run `nonstop db upgrade` first"
    )

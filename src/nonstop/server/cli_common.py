"""What every server command shares: the database options, opening the database, one-line
failures naming it (password redacted)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import NoReturn

from sqlalchemy.exc import SQLAlchemyError

from nonstop.console import fail
from nonstop.server import migrate
from nonstop.server.db import Database, redact_url
from nonstop.server.settings import DEFAULT_DATA_DIR, ServerSettings

TOOL = "nonstop"


def add_database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("NONSTOP_DATA_DIR", DEFAULT_DATA_DIR)),
        help="server data (SQLite database, blobs); env NONSTOP_DATA_DIR, "
        f"default {DEFAULT_DATA_DIR}",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("NONSTOP_DATABASE_URL", ""),
        help="e.g. postgresql+psycopg://user@host/db; env NONSTOP_DATABASE_URL "
        "(keeps a password off the command line); default SQLite in the data dir",
    )


def private_files() -> None:
    """Whatever this process creates (database, -wal/-shm, blobs) is for its user alone."""
    os.umask(0o077)


def open_database(args: argparse.Namespace) -> Database:
    private_files()
    settings = ServerSettings(data_dir=args.data_dir, database_url=args.database_url)
    return Database(settings.effective_database_url, pool_size=1)


def database_failed(verb: str, database: Database, exc: SQLAlchemyError) -> NoReturn:
    """One line naming the database (password redacted) and the driver's first line."""
    first = (str(exc).splitlines() or [""])[0]
    fail(TOOL, f"cannot {verb} {redact_url(database.url)}: {exc.__class__.__name__}: {first}")


def ready_database(args: argparse.Namespace) -> Database:
    database = open_database(args)
    try:
        current = migrate.current_revision(database.engine)
        if current is None:
            migrate.upgrade(database.engine)
    except SQLAlchemyError as exc:
        database.dispose()
        database_failed("use", database, exc)
    if current is not None and current != migrate.head_revision():
        fail(TOOL, f"database is at revision {current}: run `nonstop db upgrade` first")
    return database

"""Database connections: one engine per process, read and write transactions.

SQLite (the embedded default) runs in WAL mode and takes its write lock at the
start of a write transaction (BEGIN IMMEDIATE): otherwise two check-ins that
read and then write would race for the lock and one would fail at once instead
of waiting. On PostgreSQL every request is one short transaction on a pooled
connection, so replicas share nothing but the database. The check-in, the hot
path, runs on the event loop with its own asyncio pool of psycopg connections
in autocommit mode, sending single statements, each its own transaction
(``autocommit_async``): no worker thread, no BEGIN/COMMIT round trips.

Pooled connections are not pinged before use (a round trip per request): a
connection lost with a database restart fails its request with an
OperationalError, which the app answers with 503 so the agent retries, and is
replaced in the pool.

The server's files are private to its user: the data directory is 0700 and
the SQLite database 0600 (SQLite gives its -wal and -shm files the database's
mode). Any local user who can open the -shm file can take a shared lock on it
that stops every write, and read the inventory and audit log besides.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Connection, Engine, Insert, Table, create_engine, event, make_url
from sqlalchemy.dialects import postgresql, sqlite

_WRITE = "nonstop_write"
# How long /healthz waits for the write lock before calling the database not writable.
PROBE_TIMEOUT_MS = 2000
_BUSY_TIMEOUT_MS = 30000
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class NotWritable(Exception):
    """The database answers but refuses or cannot take a write; the message says why."""


def private_dir(path: Path) -> None:
    """Create PATH (and parents) as 0700; tighten it if it exists with group or other access."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _tighten(path, 0o700)


def private_sqlite_files(database: Path) -> None:
    """Create DATABASE's directory 0700 and the database 0600 before SQLite does (0644),
    and tighten what an older server left looser, its -wal and -shm files included."""
    private_dir(database.parent)
    os.close(os.open(database, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        if path.exists():
            _tighten(path, 0o600)


def _tighten(path: Path, mode: int) -> None:
    if path.stat().st_mode & 0o077:
        path.chmod(mode)


def is_disk_full(exc: BaseException) -> bool:
    """True when EXC (or the driver error it wraps) means the disk or quota is full."""
    cause = getattr(exc, "orig", None) or exc
    if isinstance(cause, psycopg.errors.DiskFull):  # SQLSTATE 53100
        return True
    if isinstance(cause, sqlite3.Error):
        return (getattr(cause, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_FULL
    return isinstance(cause, OSError) and cause.errno in _DISK_FULL_ERRNOS


def redact_url(url: str) -> str:
    """The URL with its password hidden, fit for logs and error messages."""
    return make_url(url).render_as_string(hide_password=True)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit survives the server process being killed (not a power cut).
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def make_engine(url: str, pool_size: int = 10) -> Engine:
    """An engine for URL: POOL_SIZE pooled connections, as many again in overflow.

    SQLite: the file is created private first (``private_sqlite_files``), and each
    connection gets WAL, foreign keys, the busy timeout, and BEGIN IMMEDIATE for writes.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            # SQLite gives the -wal and -shm files the database's mode.
            private_sqlite_files(Path(parsed.database))
        engine = create_engine(
            parsed, pool_size=pool_size, max_overflow=pool_size, connect_args={"timeout": 30}
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(parsed, pool_size=pool_size, max_overflow=pool_size)


class Database:
    """The engine plus the two kinds of transaction the server runs."""

    def __init__(self, url: str, pool_size: int = 10) -> None:
        self.url = url
        self.pool_size = pool_size
        self.engine = make_engine(url, pool_size)
        self._async_pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._writer = self.engine.execution_options(**{_WRITE: True})
        self._sqlite_writer = threading.Lock() if self.is_sqlite else None

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reading. Its transaction is rolled back when the block ends, so
        anything written on it is lost: use ``write``.
        """
        with self.engine.connect() as connection:
            yield connection

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One transaction, committed when the block ends, rolled back if it raises."""
        if self._sqlite_writer is None:
            with self._writer.begin() as connection:
                yield connection
            return
        # SQLite has one writer at a time. Queueing this process's writers on a lock is far
        # faster than letting each thread sleep-and-retry on the file lock (busy_timeout).
        with self._sqlite_writer, self._writer.begin() as connection:
            yield connection

    def probe_writable(self) -> None:
        """Raise ``NotWritable`` unless a write transaction could start now.

        SQLite: take the write lock and let it go (BEGIN IMMEDIATE; ROLLBACK), waiting at
        most ``PROBE_TIMEOUT_MS``; PostgreSQL: the session must not be read-only (a hot
        standby, default_transaction_read_only). Nothing is written either way.
        """
        if self._sqlite_writer is None:
            with self.engine.connect() as connection:
                read_only = connection.exec_driver_sql("SHOW transaction_read_only").scalar()
                connection.rollback()
            if read_only == "on":
                raise NotWritable("the database is read-only (transaction_read_only is on)")
            return
        if not self._sqlite_writer.acquire(timeout=PROBE_TIMEOUT_MS / 1000):
            raise NotWritable(f"this process's writes waited over {PROBE_TIMEOUT_MS} ms")
        try:
            with self.engine.connect() as connection:
                raw = connection.connection.driver_connection
                assert isinstance(raw, sqlite3.Connection)
                raw.execute(f"PRAGMA busy_timeout={PROBE_TIMEOUT_MS}")
                try:
                    raw.execute("BEGIN IMMEDIATE")
                    raw.execute("ROLLBACK")
                except sqlite3.Error as exc:
                    raise NotWritable(f"the database takes no write: {exc}") from None
                finally:
                    raw.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        finally:
            self._sqlite_writer.release()

    async def open_async_pool(self) -> None:
        """PostgreSQL: open the asyncio pool of the check-in path (in the serving event loop)."""
        if self.is_sqlite:
            return
        conninfo = make_url(self.url).set(drivername="postgresql")
        self._async_pool = AsyncConnectionPool(
            conninfo.render_as_string(hide_password=False),
            min_size=1,
            max_size=self.pool_size,
            kwargs={"autocommit": True},
            open=False,
        )
        await self._async_pool.open()

    @asynccontextmanager
    async def autocommit_async(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled asyncio PostgreSQL connection in autocommit mode.

        Each statement commits by itself, with no BEGIN and COMMIT round trips; a
        statement that must change several tables atomically is written as one
        statement (data-modifying CTEs). The pool drops a connection found broken.
        """
        assert self._async_pool is not None, "open_async_pool() first"
        async with self._async_pool.connection() as connection:
            yield connection

    async def close_async_pool(self) -> None:
        if self._async_pool is not None:
            await self._async_pool.close()

    def insert_ignoring_duplicates(self, table: Table, *unique: str) -> Insert:
        """INSERT ... ON CONFLICT (UNIQUE) DO NOTHING, in this backend's dialect."""
        dialect_insert = sqlite.insert if self.is_sqlite else postgresql.insert
        return dialect_insert(table).on_conflict_do_nothing(index_elements=list(unique))

    def dispose(self) -> None:
        self.engine.dispose()

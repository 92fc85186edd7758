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
"""

from __future__ import annotations

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
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def make_engine(url: str, pool_size: int = 10) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
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

"""The embedded server's files are private, and /healthz tells whether the database takes writes.

A local user who can read the data directory reads the inventory and audit
log; one who can open the SQLite -shm file can take a shared lock on it that
stops every write (check-ins waited 30 s and answered 503 while /healthz said
200). The attacker here is user ``nobody``, in a directory it may traverse.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import make_url

from tests.server.conftest import (
    LiveServer,
    checkin,
    create_admin_token,
    create_key,
    inventory,
    register,
    start_server,
    upload,
)
from tests.server.pgcluster import PG_USER, PostgresCluster
from tests.server.serverproc import ServerProcess, nonstop_command

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

# Run as nobody: try to read each file and to take a shared lock on it.
ATTACK = """
import fcntl, json, sys
results = {}
for path in sys.argv[1:]:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
            fcntl.lockf(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        results[path] = "opened and locked"
    except OSError as exc:
        results[path] = exc.__class__.__name__
print(json.dumps(results))
"""


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory everyone may traverse, as /var/lib is."""
    path = Path(tempfile.mkdtemp(prefix="nonstop-files-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def embedded(open_dir: Path, trusted_dir: Path) -> Iterator[LiveServer]:
    """`nonstop serve` on a data directory it creates: SQLite and bundle files in it."""
    data_dir = open_dir / "data"
    process = ServerProcess(data_dir, "", "--vendor-keys", str(trusted_dir))
    process.log_path = open_dir / "server.log"
    process.start()
    try:
        yield LiveServer(process, "", create_admin_token(data_dir, ""))
    finally:
        process.stop()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_data_dir_database_and_blobs_are_private(
    embedded: LiveServer, make_bundle: Callable[..., bytes]
) -> None:
    host = register(embedded, create_key(embedded)["key"])
    checkin(embedded, host, inventory("h"))
    assert upload(embedded, make_bundle()).status_code == 201
    data_dir = embedded.process.data_dir
    database = [data_dir / name for name in ("nonstop.db", "nonstop.db-wal", "nonstop.db-shm")]
    blobs = [path for path in (data_dir / "blobs").rglob("*") if path.is_file()]
    assert all(path.exists() for path in database) and len(blobs) == 1
    everything = [data_dir, *data_dir.rglob("*")]
    loose = {str(path): oct(mode(path)) for path in everything if mode(path) & 0o077}
    assert loose == {}
    assert mode(data_dir) == mode(data_dir / "blobs") == mode(blobs[0].parent) == 0o700
    assert {mode(path) for path in [*database, *blobs]} == {0o600}

    attack = subprocess.run(
        [*NOBODY, "/usr/bin/python3", "-c", ATTACK, *map(str, [*database, *blobs])],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert set(json.loads(attack.stdout).values()) == {"PermissionError"}


def test_loose_modes_left_by_an_older_server_are_tightened(
    open_dir: Path, trusted_dir: Path
) -> None:
    data_dir = open_dir / "data"
    database = data_dir / "nonstop.db"
    nonstop_command("db", "upgrade", "--data-dir", str(data_dir))
    # An older server's files, still open (its -wal and -shm stay), as umask 022 made them.
    holder = sqlite3.connect(database)
    holder.execute("SELECT * FROM alembic_version").fetchall()
    data_dir.chmod(0o755)
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        path.chmod(0o644)
    process = ServerProcess(data_dir, "", "--vendor-keys", str(trusted_dir))
    process.log_path = open_dir / "server.log"
    try:
        process.start()
        assert mode(data_dir) == 0o700
        assert {mode(Path(f"{database}{suffix}")) for suffix in ("", "-wal", "-shm")} == {0o600}
    finally:
        process.stop()
        holder.close()


def test_healthz_says_503_while_the_sqlite_database_takes_no_write(
    embedded: LiveServer,
) -> None:
    with embedded.client() as client:
        assert client.get("/healthz").status_code == 200
        # Another process holds the write lock (as the shm lock of the issue did).
        holder = sqlite3.connect(embedded.process.data_dir / "nonstop.db", isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            refused = client.get("/healthz")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert refused.status_code == 503
        assert refused.json()["detail"].startswith("database not writable:")
        assert "locked" in refused.json()["detail"]
        assert client.get("/healthz").status_code == 200


def set_read_only(cluster: PostgresCluster, database: str, read_only: bool) -> None:
    """Make DATABASE's sessions read-only (or not), and drop its sessions so it applies now."""
    with psycopg.connect(
        host="127.0.0.1", port=cluster.port, user=PG_USER, dbname="postgres", autocommit=True
    ) as connection:
        setting = "SET default_transaction_read_only = on" if read_only else "RESET ALL"
        connection.execute(f'ALTER DATABASE "{database}" {setting}')
        connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (database,),
        )


def healthz_until(server_url: str, status: int, tries: int = 20) -> httpx.Response:
    """/healthz until it answers STATUS: the first request after dropped sessions may fail."""
    for _ in range(tries):
        response = httpx.get(f"{server_url}/healthz", timeout=30)
        if response.status_code == status and (status == 200 or "writable" in response.text):
            return response
    raise AssertionError(f"/healthz never answered {status}: {response.text}")


def test_healthz_says_503_while_the_postgresql_database_is_read_only(
    pg_cluster: PostgresCluster,
    new_database_url: Callable[[str], str],
    tmp_path_factory: pytest.TempPathFactory,
    trusted_dir: Path,
) -> None:
    url = new_database_url("postgresql")
    database = make_url(url).database
    assert database is not None
    process = start_server(tmp_path_factory, url, trusted_dir)
    try:
        set_read_only(pg_cluster, database, True)
        refused = healthz_until(process.url, 503)
        assert refused.json()["detail"] == (
            "database not writable: the database is read-only (transaction_read_only is on)"
        )
        set_read_only(pg_cluster, database, False)
        assert healthz_until(process.url, 200).json()["status"] == "ok"
    finally:
        process.stop()

"""A full disk is named as such (507, the JSON error shape), and nothing is half-stored.

The disk is real: a small tmpfs, filled up with a file. On SQLite it holds the
data directory (database and blobs); on PostgreSQL it holds a tablespace with
the test's database, so table files cannot grow while the cluster's WAL (on
another disk) still can: PostgreSQL's DiskFull, SQLSTATE 53100. Freeing the
space makes both work again, and the refused check-in is then recorded once.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.server.conftest import (
    Host,
    LiveServer,
    checkin,
    create_admin_token,
    create_key,
    hexid,
    inventory,
    register,
    upload,
)
from tests.server.pgcluster import PG_USER, PostgresCluster
from tests.server.serverproc import ServerProcess


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 16 MiB tmpfs, mounted for this test."""
    mountpoint = Path(tempfile.mkdtemp(prefix="nonstop-disk-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        mountpoint.rmdir()
        pytest.skip(reason=f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "--lazy", str(mountpoint)], check=True)
        mountpoint.rmdir()


def fill(disk: Path) -> Path:
    """Fill DISK up with one file; return it (delete it to free the space)."""
    filler = disk / "filler"
    with filler.open("wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def big_inventory() -> dict[str, Any]:
    """A check-in whose inventory takes about 400 KB: more than any free page can hold."""
    libraries = [{"build_id": hexid(), "soname": f"lib{i}-{hexid(16)}.so"} for i in range(3000)]
    return inventory("full", libraries)


def post_checkin(server: LiveServer, host: Host, body: dict[str, Any]) -> httpx.Response:
    with host.client(server) as client:
        return client.post(f"/api/v1/hosts/{host.id}/checkin", json=body)


def assert_disk_full(response: httpx.Response, words: str) -> None:
    assert response.status_code == 507, response.text
    assert response.headers["content-type"] == "application/json"
    assert words in response.json()["detail"]


def exercise(server: LiveServer, disk: Path, make_bundle: Callable[..., bytes]) -> None:
    host = register(server, create_key(server)["key"])
    checkin(server, host, inventory("before"))
    filler = fill(disk)
    try:
        assert_disk_full(upload(server, make_bundle()), "no space left")
        body = big_inventory()
        assert_disk_full(post_checkin(server, host, body), "disk is full")
    finally:
        filler.unlink()
    assert checkin(server, host, body)["recorded"] is True
    assert upload(server, make_bundle()).status_code == 201
    with server.admin() as admin:
        assert admin.get(f"/api/v1/admin/hosts/{host.id}").json()["checkin_count"] == 2


def test_full_disk_under_sqlite_and_blobs_is_named(
    small_disk: Path, trusted_dir: Path, make_bundle: Callable[..., bytes]
) -> None:
    data_dir = small_disk / "data"
    process = ServerProcess(
        data_dir, "", "--vendor-keys", str(trusted_dir), "--failed-auth-per-minute", "0"
    )
    process.log_path = small_disk.parent / f"{small_disk.name}.log"
    process.start()
    try:
        exercise(LiveServer(process, "", create_admin_token(data_dir, "")), small_disk, make_bundle)
    finally:
        process.stop()
        process.log_path.unlink()


def test_full_disk_under_postgresql_is_named(
    small_disk: Path,
    pg_cluster: PostgresCluster,
    tmp_path: Path,
    trusted_dir: Path,
    make_bundle: Callable[..., bytes],
) -> None:
    location = small_disk / "tablespace"
    location.mkdir()
    shutil.chown(location, "postgres")
    name = f"full_{hexid(8)}"
    with psycopg.connect(
        host="127.0.0.1", port=pg_cluster.port, user=PG_USER, dbname="postgres", autocommit=True
    ) as connection:
        connection.execute(f"CREATE TABLESPACE {name} LOCATION '{location}'")
        connection.execute(f"CREATE DATABASE {name} TABLESPACE {name}")
        url = pg_cluster.url(name)
        process = ServerProcess(
            tmp_path,
            url,
            "--vendor-keys",
            str(trusted_dir),
            "--blob-store",
            "database",
            "--failed-auth-per-minute",
            "0",
        )
        process.start()
        try:
            live = LiveServer(process, url, create_admin_token(tmp_path, url))
            exercise(live, small_disk, make_bundle)
        finally:
            process.stop()
            connection.execute(f"DROP DATABASE {name}")
            connection.execute(f"DROP TABLESPACE {name}")

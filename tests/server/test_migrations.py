"""Schema migrations on SQLite and PostgreSQL: from empty, and from the previous revision."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from nonstop.server import migrate
from nonstop.server.auth import HOST_PREFIX, new_credential
from nonstop.server.db import Database
from nonstop.server.models import metadata
from tests.server.conftest import inventory
from tests.server.serverproc import ServerProcess, nonstop_command

# How the API shows the target row a host reported before revision 0004.
OLD_TARGET = {
    "target": "userspace:ab",
    "kind": "userspace",
    "name": "libold.so",
    "package_name": None,
    "package_version": None,
    "processes": 2,
    "applied_level": 1,
}
NEW_LIBRARY = {"build_id": "cd" * 20, "soname": "libnew.so.1", "processes": 1}


def test_upgrade_empty_database_matches_models(
    backend: str, new_database_url: Callable[[str], str], tmp_path: Path
) -> None:
    url = new_database_url(backend)
    done = nonstop_command("db", "upgrade", "--database-url", url, "--data-dir", str(tmp_path))
    assert "(empty) -> 0005" in done.stdout
    current = json.loads(nonstop_command("db", "current", "--json", "--database-url", url).stdout)
    assert current == {"current": "0005", "head": "0005"}
    database = Database(url)
    try:
        with database.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
            feeds = connection.execute(
                text("SELECT name, delay_hours FROM feeds ORDER BY name")
            ).all()
        assert [tuple(row) for row in feeds] == [("stable", 24), ("test", 0)]
    finally:
        database.dispose()


@pytest.mark.parametrize("start", ["0001", "0003"])
def test_upgrade_from_previous_revision_keeps_data(
    backend: str,
    start: str,
    new_database_url: Callable[[str], str],
    tmp_path: Path,
    trusted_dir: Path,
) -> None:
    """From the first revision, and from the one before head (target rows still a table)."""
    url = new_database_url(backend)
    database = Database(url)
    assert migrate.upgrade(database.engine, start) == start
    host = new_credential(HOST_PREFIX)
    seen = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with database.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO registration_keys (id, name, secret_hash, feed, labels, host_count,"
                " created_at) VALUES ('k' || :pad, 'old', :hash, 'test', '{}', 1, :now)"
            ),
            {"pad": "0" * 31, "hash": "0" * 64, "now": seen},
        )
        connection.execute(
            text(
                "INSERT INTO hosts (id, secret_hash, registration_key_id, hostname, feed, labels,"
                " registered_at, last_checkin_at, inventory_digest)"
                " VALUES (:id, :hash, 'k' || :pad, 'veteran', 'test', :labels, :now, :now, 'd')"
            ),
            {
                "id": host.id,
                "hash": host.secret_hash,
                "pad": "0" * 31,
                "now": seen,
                "labels": '{"dc": "x"}',
            },
        )
        connection.execute(
            text(
                "INSERT INTO host_targets"
                " (host_id, target_key, kind, name, processes, applied_level)"
                " VALUES (:id, 'userspace:ab', 'userspace', 'libold.so', 2, 1)"
            ),
            {"id": host.id},
        )
    database.dispose()

    # The server will not run on an old schema: upgrading is the operator's step.
    refused = nonstop_command(
        "serve", "--database-url", url, "--data-dir", str(tmp_path), check=False
    )
    assert refused.returncode == 1
    assert f"revision {start}" in refused.stderr and "nonstop db upgrade" in refused.stderr

    done = nonstop_command("db", "upgrade", "--database-url", url, "--data-dir", str(tmp_path))
    assert f"{start} -> 0005" in done.stdout
    database = Database(url)
    with database.engine.connect() as connection:
        row = connection.execute(
            text("SELECT hostname, checkin_count, labels FROM hosts WHERE id = :id"),
            {"id": host.id},
        ).one()
    database.dispose()
    # Revision 0002 counted one check-in for hosts seen before it; 0003 inserted none.
    counted = 1 if start == "0001" else 0
    assert (row.hostname, row.checkin_count) == ("veteran", counted)
    labels = json.loads(row.labels) if isinstance(row.labels, str) else row.labels
    assert labels == {"dc": "x"}

    # The host registered before the upgrade keeps working with its token, and its
    # inventory (a target row before 0004) is carried over until its next check-in.
    server = ServerProcess(tmp_path, url, "--vendor-keys", str(trusted_dir)).start()
    try:
        headers = {"Authorization": f"Bearer {host.token}"}
        detail = httpx.get(f"{server.url}/api/v1/hosts/{host.id}", headers=headers).json()
        assert detail["targets"] == [OLD_TARGET]
        body = inventory("veteran", [NEW_LIBRARY])
        answer = httpx.post(
            f"{server.url}/api/v1/hosts/{host.id}/checkin", json=body, headers=headers
        )
        assert answer.status_code == 200 and answer.json()["recorded"] is True
        detail = httpx.get(f"{server.url}/api/v1/hosts/{host.id}", headers=headers).json()
        assert detail["checkin_count"] == counted + 1 and detail["labels"] == {"dc": "x"}
        assert [target["name"] for target in detail["targets"]] == ["libnew.so.1"]
    finally:
        server.stop()


def test_downgrade_from_head_restores_target_rows(
    backend: str, new_database_url: Callable[[str], str]
) -> None:
    url = new_database_url(backend)
    database = Database(url)
    try:
        migrate.upgrade(database.engine)
        host = new_credential(HOST_PREFIX)
        # Stored as at 0004: one array per target, in TargetRow's field order.
        stored = [
            [f"userspace:{key}", None, "userspace", "libold.so", None, None, 2, 1]
            for key in ("aa", "bb")
        ]
        with database.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO hosts (id, secret_hash, hostname, feed, labels, registered_at,"
                    " inventory, inventory_digest) VALUES (:id, :hash, 'h', 'test', '{}', :now,"
                    " :inventory, 'd')"
                ),
                {
                    "id": host.id,
                    "hash": host.secret_hash,
                    "now": datetime.now(UTC),
                    "inventory": json.dumps(stored),
                },
            )
        with database.engine.connect() as connection:
            command.downgrade(migrate.alembic_config(connection), "0003")
            connection.commit()
            rows = connection.execute(
                text("SELECT target_key, name, processes, applied_level FROM host_targets")
            ).all()
        assert sorted(tuple(row) for row in rows) == [
            ("userspace:aa", "libold.so", 2, 1),
            ("userspace:bb", "libold.so", 2, 1),
        ]
        assert migrate.current_revision(database.engine) == "0003"
    finally:
        database.dispose()


def test_server_refuses_a_database_that_is_not_nonstops(
    backend: str, new_database_url: Callable[[str], str], tmp_path: Path
) -> None:
    url = new_database_url(backend)
    database = Database(url)
    with database.engine.begin() as connection:
        connection.execute(text("CREATE TABLE payroll (id INTEGER PRIMARY KEY)"))
    database.dispose()
    refused = nonstop_command(
        "serve", "--database-url", url, "--data-dir", str(tmp_path), check=False
    )
    assert refused.returncode == 1 and "no nonstop schema revision" in refused.stderr


def test_concurrent_upgrades_of_one_database_are_serialized(
    new_database_url: Callable[[str], str],
) -> None:
    """Replicas starting together on an empty PostgreSQL database: one creates, none fails."""
    import threading

    url = new_database_url("postgresql")
    errors: list[BaseException] = []

    def start_one() -> None:
        database = Database(url, pool_size=1)
        try:
            migrate.prepare_for_serving(database.engine)
        except BaseException as exc:
            errors.append(exc)
        finally:
            database.dispose()

    threads = [threading.Thread(target=start_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    database = Database(url)
    assert migrate.current_revision(database.engine) == migrate.head_revision()
    database.dispose()

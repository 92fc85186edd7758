"""Schema migrations on SQLite and PostgreSQL: from empty, and from the previous revision."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from nonstop.server import migrate
from nonstop.server.auth import HOST_PREFIX, new_credential
from nonstop.server.db import Database
from nonstop.server.models import metadata
from tests.server.conftest import inventory
from tests.server.serverproc import ServerProcess, nonstop_command


def test_upgrade_empty_database_matches_models(
    backend: str, new_database_url: Callable[[str], str], tmp_path: Path
) -> None:
    url = new_database_url(backend)
    done = nonstop_command("db", "upgrade", "--database-url", url, "--data-dir", str(tmp_path))
    assert "(empty) -> 0003" in done.stdout
    current = json.loads(nonstop_command("db", "current", "--json", "--database-url", url).stdout)
    assert current == {"current": "0003", "head": "0003"}
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


def test_upgrade_from_previous_revision_keeps_data(
    backend: str, new_database_url: Callable[[str], str], tmp_path: Path, trusted_dir: Path
) -> None:
    url = new_database_url(backend)
    database = Database(url)
    assert migrate.upgrade(database.engine, "0001") == "0001"
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
    assert "revision 0001" in refused.stderr and "nonstop db upgrade" in refused.stderr

    done = nonstop_command("db", "upgrade", "--database-url", url, "--data-dir", str(tmp_path))
    assert "0001 -> 0003" in done.stdout
    database = Database(url)
    with database.engine.connect() as connection:
        row = connection.execute(
            text("SELECT hostname, checkin_count, labels FROM hosts WHERE id = :id"),
            {"id": host.id},
        ).one()
        targets = connection.execute(text("SELECT count(*) FROM host_targets")).scalar()
    database.dispose()
    assert (row.hostname, row.checkin_count, targets) == ("veteran", 1, 1)
    labels = json.loads(row.labels) if isinstance(row.labels, str) else row.labels
    assert labels == {"dc": "x"}

    # The host registered before the upgrade keeps working with its token.
    server = ServerProcess(tmp_path, url, "--vendor-keys", str(trusted_dir)).start()
    try:
        headers = {"Authorization": f"Bearer {host.token}"}
        body = inventory("veteran")
        answer = httpx.post(
            f"{server.url}/api/v1/hosts/{host.id}/checkin", json=body, headers=headers
        )
        assert answer.status_code == 200 and answer.json()["recorded"] is True
        detail = httpx.get(f"{server.url}/api/v1/hosts/{host.id}", headers=headers).json()
        assert detail["checkin_count"] == 2 and detail["labels"] == {"dc": "x"}
    finally:
        server.stop()


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

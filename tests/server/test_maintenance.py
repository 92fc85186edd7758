"""Background housekeeping and health reporting."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from nonstop.server import migrate
from nonstop.server.app import create_app
from nonstop.server.auth import HOST_PREFIX, new_credential
from nonstop.server.db import Database
from nonstop.server.maintenance import prune_checkins
from nonstop.server.models import checkins, hosts, utcnow
from nonstop.server.settings import ServerSettings
from tests.server.pgcluster import PostgresCluster


def test_prune_removes_only_old_checkin_records(
    backend: str, new_database_url: Callable[[str], str]
) -> None:
    database = Database(new_database_url(backend), pool_size=1)
    migrate.prepare_for_serving(database.engine)
    host = new_credential(HOST_PREFIX)
    now = utcnow()
    with database.write() as connection:
        connection.execute(
            insert(hosts).values(
                id=host.id,
                secret_hash=host.secret_hash,
                hostname="h",
                feed="test",
                labels={},
                registered_at=now,
            )
        )
        connection.execute(
            insert(checkins),
            [
                {
                    "host_id": host.id,
                    "checkin_id": f"id-{age}",
                    "received_at": now - timedelta(days=age),
                }
                for age in (0, 29, 31, 400)
            ],
        )
    assert prune_checkins(database, keep_days=30) == 2
    with database.read() as connection:
        kept = (
            connection.execute(select(checkins.c.checkin_id).order_by(checkins.c.id))
            .scalars()
            .all()
        )
    database.dispose()
    assert kept == ["id-0", "id-29"]


def test_healthz_reports_an_unreachable_database_as_503(
    pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    settings = ServerSettings(data_dir=tmp_path, database_url=pg_cluster.url("no_such_database"))
    with TestClient(create_app(settings)) as client:
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["detail"] == "database unavailable: OperationalError"

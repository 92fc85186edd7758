"""Lost database connections: the request answers 503 (retry), the pools heal themselves.

Pooled connections are not pinged before use, so after PostgreSQL drops them
(a restart, a failover, an idle timeout) a request may meet a dead one. It
must get a clear 503 with Retry-After, never a 500, and the server must serve
again at once with fresh connections: the check-in path's asyncio pool and
the pool of every other endpoint alike.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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
)
from tests.server.pgcluster import PG_USER, PostgresCluster


def drop_connections(cluster: PostgresCluster, database: str) -> int:
    with psycopg.connect(
        host="127.0.0.1", port=cluster.port, user=PG_USER, dbname="postgres", autocommit=True
    ) as connection:
        rows = connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (database,),
        ).fetchall()
    return len(rows)


def statuses_until_ok(call: Callable[[], tuple[int, dict[str, str]]], tries: int = 25) -> list[int]:
    seen = []
    for _ in range(tries):
        status, headers = call()
        seen.append(status)
        if status == 503:
            assert headers.get("retry-after") == "1"
        if status == 200:
            break
    return seen


def test_dropped_connections_answer_503_then_recover(
    pg_cluster: PostgresCluster,
    new_database_url: Callable[[str], str],
    tmp_path_factory: pytest.TempPathFactory,
    trusted_dir: Path,
) -> None:
    url = new_database_url("postgresql")
    process = start_server(tmp_path_factory, url, trusted_dir)
    try:
        live = LiveServer(process, url, create_admin_token(process.data_dir, url))
        host = register(live, create_key(live)["key"])
        checkin(live, host, inventory("r"))  # both pools now hold connections
        assert drop_connections(pg_cluster, str(make_url(url).database)) >= 2

        with host.client(live) as client:

            def check_in() -> tuple[int, dict[str, str]]:
                response = client.post(f"/api/v1/hosts/{host.id}/checkin", json=inventory("r"))
                return response.status_code, dict(response.headers)

            seen = statuses_until_ok(check_in)
        assert seen[-1] == 200 and set(seen) <= {200, 503}, seen

        with live.admin() as admin:

            def list_keys() -> tuple[int, dict[str, str]]:
                response = admin.get("/api/v1/admin/keys")
                return response.status_code, dict(response.headers)

            seen = statuses_until_ok(list_keys)
        assert seen[-1] == 200 and set(seen) <= {200, 503}, seen
        with live.admin() as admin:
            detail = admin.get(f"/api/v1/admin/hosts/{host.id}").json()
        assert detail["checkin_count"] == 2  # the 503 answers recorded nothing
    finally:
        process.stop()

"""Server test fixtures: the database backends (SQLite, a private PostgreSQL), real servers.

Tests that take ``backend`` run twice: on SQLite and on a PostgreSQL cluster
that this session creates on loopback and removes at the end. ``server`` is a
real `nonstop serve` process per test module and backend, started on an empty
database (so its first start creates the schema) with the test vendor key.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.pgcluster import PostgresCluster, PostgresUnavailable
from tests.server.serverproc import ServerProcess, nonstop_command

BACKENDS = ["sqlite", "postgresql"]
_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    try:
        cluster = PostgresCluster({"fsync": "off", "full_page_writes": "off"}).start()
    except PostgresUnavailable as exc:
        pytest.skip(reason=str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def new_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], str]:
    """Make a new, empty database on BACKEND and return its URL."""

    def make(backend: str) -> str:
        number = next(_database_numbers)
        if backend == "sqlite":
            return f"sqlite:///{tmp_path_factory.mktemp('sqlite')}/nonstop-{number}.db"
        cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
        return cluster.create_database(f"nonstop_test_{number}")

    return make


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@dataclass
class LiveServer:
    process: ServerProcess
    database_url: str
    admin_token: str

    @property
    def url(self) -> str:
        return self.process.url

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def admin(self) -> httpx.Client:
        return self.client(self.admin_token)


def create_admin_token(data_dir: Path, database_url: str, *scopes: str) -> str:
    scope_args = [arg for scope in (scopes or ("*",)) for arg in ("--scope", scope)]
    done = nonstop_command(
        "admin",
        "token",
        "create",
        "--data-dir",
        str(data_dir),
        "--database-url",
        database_url,
        "--name",
        "tests",
        *scope_args,
        "--json",
    )
    token: str = json.loads(done.stdout)["token"]
    return token


def start_server(
    tmp_path_factory: pytest.TempPathFactory,
    database_url: str,
    trusted_dir: Path,
    *extra: str,
) -> ServerProcess:
    data_dir = tmp_path_factory.mktemp("server")
    blob_store = "database" if database_url.startswith("postgresql") else "directory"
    return ServerProcess(
        data_dir,
        database_url,
        "--vendor-keys",
        str(trusted_dir),
        "--blob-store",
        blob_store,
        "--catalog-ttl",
        "0",
        *extra,
    ).start()


@contextmanager
def live_server(
    tmp_path_factory: pytest.TempPathFactory, url: str, trusted_dir: Path, *extra: str
) -> Iterator[LiveServer]:
    """A server on URL without rate limits (EXTRA: more `nonstop serve` options), with an
    admin token holding every scope."""
    process = start_server(
        tmp_path_factory,
        url,
        trusted_dir,
        "--registrations-per-minute",
        "0",
        "--failed-auth-per-minute",
        "0",
        *extra,
    )
    try:
        yield LiveServer(process, url, create_admin_token(process.data_dir, url))
    finally:
        process.stop()


@pytest.fixture(scope="module")
def server(
    backend: str,
    new_database_url: Callable[[str], str],
    tmp_path_factory: pytest.TempPathFactory,
    trusted_dir: Path,
) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory, new_database_url(backend), trusted_dir) as running:
        yield running


# --- building blocks for API tests ----------------------------------------------------------


def hexid(n: int = 40) -> str:
    return uuid.uuid4().hex[: n // 2] + uuid.uuid4().hex[: n - n // 2]


def inventory(
    hostname: str, libraries: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    """A check-in body with a fresh check-in id."""
    body: dict[str, Any] = {
        "checkin_id": str(uuid.uuid4()),
        "agent_version": "0.1.0",
        "hostname": hostname,
        "os": {"id": "debian", "version_id": "12", "pretty_name": "Debian GNU/Linux 12"},
        "libraries": libraries or [],
    }
    body.update(extra)
    return body


@dataclass
class Host:
    id: str
    token: str
    feed: str

    def client(self, server: LiveServer) -> httpx.Client:
        return server.client(self.token)


def create_key(server: LiveServer, **fields: Any) -> dict[str, Any]:
    body = {"name": f"key-{hexid(8)}", "feed": "test", **fields}
    with server.admin() as admin:
        response = admin.post("/api/v1/admin/keys", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def register(server: LiveServer, key: str, hostname: str | None = None) -> Host:
    with server.client() as client:
        response = client.post(
            "/api/v1/hosts/register",
            json={"registration_key": key, "hostname": hostname or f"host-{hexid(8)}"},
        )
    assert response.status_code == 201, response.text
    body = response.json()
    return Host(body["host_id"], body["token"], body["feed"])


def checkin(server: LiveServer, host: Host, body: dict[str, Any]) -> dict[str, Any]:
    with host.client(server) as client:
        response = client.post(f"/api/v1/hosts/{host.id}/checkin", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def upload(server: LiveServer, data: bytes) -> httpx.Response:
    with server.admin() as admin:
        return admin.post(
            "/api/v1/admin/bundles",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )


def decision_for(answer: dict[str, Any], target: str) -> dict[str, Any]:
    found: dict[str, Any] = next(item for item in answer["targets"] if item["target"] == target)
    return found

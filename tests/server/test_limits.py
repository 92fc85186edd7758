"""Input validation, request-size limits and rate limits, in-process (FastAPI TestClient).

The in-process client is the right tool here: limits are per server process,
and each test builds an app with its own small limits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nonstop.server import admin_tokens, migrate
from nonstop.server.app import create_app
from nonstop.server.db import Database
from nonstop.server.settings import ServerSettings
from tests.server.conftest import hexid, inventory

AppFactory = Callable[..., tuple[TestClient, dict[str, str]]]


def prepared_database(url: str, *scopes: str) -> str:
    """Create the schema of a new database; return an admin token with SCOPES."""
    database = Database(url, pool_size=1)
    migrate.prepare_for_serving(database.engine)
    with database.engine.begin() as connection:
        token = admin_tokens.create(connection, "limits", list(scopes))[1]
    database.dispose()
    return token


@pytest.fixture
def make_app(
    backend: str, new_database_url: Callable[[str], str], tmp_path: Path, trusted_dir: Path
) -> Iterator[AppFactory]:
    clients: list[TestClient] = []

    def build(**settings: Any) -> tuple[TestClient, dict[str, str]]:
        url = new_database_url(backend)
        token = prepared_database(url, "*")
        app = create_app(
            ServerSettings(
                data_dir=tmp_path, database_url=url, vendor_keys_dir=str(trusted_dir), **settings
            )
        )
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client, {"Authorization": f"Bearer {token}"}

    yield build
    for client in clients:
        client.__exit__(None, None, None)


def registered_host(client: TestClient, admin: dict[str, str]) -> tuple[str, dict[str, str]]:
    key = client.post("/api/v1/admin/keys", json={"name": "k", "feed": "test"}, headers=admin)
    body = {"registration_key": key.json()["key"], "hostname": "h"}
    host = client.post("/api/v1/hosts/register", json=body).json()
    return host["host_id"], {"Authorization": f"Bearer {host['token']}"}


def test_bodies_over_the_limit_are_refused(make_app: AppFactory, make_bundle) -> None:
    client, admin = make_app(max_request_bytes=4096, max_bundle_bytes=64 * 1024)
    host_id, auth = registered_host(client, admin)
    big = inventory("h", [{"build_id": hexid(), "soname": f"lib{i}.so"} for i in range(100)])
    response = client.post(f"/api/v1/hosts/{host_id}/checkin", json=big, headers=auth)
    assert response.status_code == 413 and "4096 bytes" in response.json()["detail"]

    def chunks() -> Iterator[bytes]:
        yield b'{"checkin_id": "' + b"x" * 3000
        yield b"y" * 3000

    streamed = client.post(
        f"/api/v1/hosts/{host_id}/checkin",
        content=chunks(),
        headers={**auth, "Content-Type": "application/json"},
    )
    assert streamed.status_code == 413
    # Uploads have their own, larger limit.
    bundle = make_bundle(payload={"patch.o": b"\x7fELF" + b"\0" * 8192})
    assert len(bundle) > 4096
    uploaded = client.post("/api/v1/admin/bundles", content=bundle, headers=admin)
    assert uploaded.status_code == 201
    too_big = client.post("/api/v1/admin/bundles", content=b"\0" * (65 * 1024), headers=admin)
    assert too_big.status_code == 413


def test_registration_rate_limit(make_app: AppFactory) -> None:
    client, admin = make_app(registrations_per_minute=3)
    key = client.post("/api/v1/admin/keys", json={"name": "k"}, headers=admin).json()["key"]
    codes = [
        client.post(
            "/api/v1/hosts/register", json={"registration_key": key, "hostname": "h"}
        ).status_code
        for _ in range(5)
    ]
    assert codes == [201, 201, 201, 429, 429]
    refused = client.post("/api/v1/hosts/register", json={"registration_key": key, "hostname": "h"})
    assert 1 <= int(refused.headers["retry-after"]) <= 61


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"hostname": "bad host\n"}, "hostname"),
        ({"checkin_id": "not-a-uuid"}, "checkin_id"),
        ({"libraries": [{"build_id": "XYZ", "soname": "a.so"}]}, "build_id"),
        ({"kernel": {"release": "6.1"}}, "kernel"),
        ({"surprise": 1}, "surprise"),
        ({"os": {"id": "Debian Linux"}}, "id"),
    ],
)
def test_invalid_checkins_get_422_naming_the_field(
    make_app: AppFactory, change: dict[str, Any], field: str
) -> None:
    client, admin = make_app()
    host_id, auth = registered_host(client, admin)
    body = {**inventory("h"), **change}
    response = client.post(f"/api/v1/hosts/{host_id}/checkin", json=body, headers=auth)
    assert response.status_code == 422
    locations = [str(part) for error in response.json()["detail"] for part in error["loc"]]
    assert field in locations or any(field in error["msg"] for error in response.json()["detail"])
    # Nothing was recorded.
    detail = client.get(f"/api/v1/admin/hosts/{host_id}", headers=admin).json()
    assert detail["checkin_count"] == 0


def test_unknown_feed_and_bad_pin_are_refused(make_app: AppFactory) -> None:
    client, admin = make_app()
    nofeed = client.post("/api/v1/admin/keys", json={"name": "k", "feed": "nightly"}, headers=admin)
    assert nofeed.status_code == 400 and "nightly" in nofeed.json()["detail"]
    badpin = client.post(
        "/api/v1/admin/keys", json={"name": "k", "sticky": "level:0"}, headers=admin
    )
    assert badpin.status_code == 422


def test_upload_without_vendor_keys_is_refused(
    backend: str, new_database_url: Callable[[str], str], tmp_path: Path, make_bundle
) -> None:
    url = new_database_url(backend)
    token = prepared_database(url, "bundles:write")
    settings = ServerSettings(
        data_dir=tmp_path, database_url=url, vendor_keys_dir=str(tmp_path / "none")
    )
    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/api/v1/admin/bundles",
            content=make_bundle(),
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 400 and "no vendor public keys" in response.json()["detail"]


def test_nul_characters_are_refused_before_the_database(make_app: AppFactory) -> None:
    client, admin = make_app()
    in_query = client.get("/api/v1/admin/hosts", params={"after": "a\x00b"}, headers=admin)
    assert in_query.status_code == 400 and "NUL" in in_query.json()["detail"]
    in_path = client.get("/api/v1/admin/hosts/a%00b", headers=admin)
    assert in_path.status_code == 400
    in_body = client.post(
        "/api/v1/admin/feeds", json={"name": "nul", "description": "a\x00"}, headers=admin
    )
    assert in_body.status_code == 422

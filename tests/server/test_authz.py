"""Authorization matrix against a real server: who may call what.

A host token reaches only its own host and bundles of its own targets and no
admin endpoint; a revoked registration key registers nothing; an admin token
is held to its scopes; a revoked admin token is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nonstop.bundle import UserspaceTarget
from nonstop.server import admin_tokens
from nonstop.server.db import Database
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
from tests.server.serverproc import nonstop_command


@dataclass
class World:
    server: LiveServer
    alice: Host
    bob: Host
    alice_bundle: str
    bob_bundle: str
    key_id: str


@pytest.fixture(scope="module")
def world(server: LiveServer, signing_key, tmp_path_factory) -> World:
    from nonstop.bundle import pack
    from tests.conftest import SAMPLE_OBJECT, sample_manifest

    key = create_key(server)
    alice, bob = register(server, key["key"]), register(server, key["key"])
    digests = []
    for host in (alice, bob):
        build_id = hexid()
        files = {"patch.o": SAMPLE_OBJECT}
        manifest = sample_manifest(
            files, target=UserspaceTarget(build_id=build_id, soname="liba.so")
        )
        digests.append(upload(server, pack(manifest, files, signing_key)).json()["sha256"])
        lib = {"build_id": build_id, "soname": "liba.so", "processes": 1}
        checkin(server, host, inventory("h", [lib]))
    return World(server, alice, bob, digests[0], digests[1], key["id"])


def status(world: World, token: str | None, method: str, path: str, **kwargs: Any) -> int:
    with world.server.client(token) as client:
        return client.request(method, path, **kwargs).status_code


def test_host_reaches_its_own_host_and_bundles(world: World) -> None:
    alice = world.alice
    assert status(world, alice.token, "GET", f"/api/v1/hosts/{alice.id}") == 200
    assert status(world, alice.token, "GET", f"/api/v1/bundles/{world.alice_bundle}") == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/hosts/{bob}", None),
        ("POST", "/api/v1/hosts/{bob}/checkin", "checkin"),
        ("DELETE", "/api/v1/hosts/{bob}", None),
    ],
)
def test_host_token_cannot_touch_another_host(
    world: World, method: str, path: str, body: str | None
) -> None:
    kwargs: dict[str, Any] = {"json": inventory("x")} if body else {}
    assert status(world, world.alice.token, method, path.format(bob=world.bob.id), **kwargs) == 403
    # ...and Bob is untouched: still registered, his token still works.
    assert status(world, world.bob.token, "GET", f"/api/v1/hosts/{world.bob.id}") == 200


def test_host_token_cannot_download_bundle_of_other_targets(world: World) -> None:
    assert status(world, world.alice.token, "GET", f"/api/v1/bundles/{world.bob_bundle}") == 403
    assert status(world, world.alice.token, "GET", f"/api/v1/bundles/{'0' * 64}") == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/admin/keys"),
        ("POST", "/api/v1/admin/keys"),
        ("GET", "/api/v1/admin/hosts"),
        ("GET", "/api/v1/admin/hosts/{bob}"),
        ("GET", "/api/v1/admin/bundles"),
        ("GET", "/api/v1/admin/bundles/{bundle}/content"),
        ("POST", "/api/v1/admin/bundles/{bundle}/retire"),
        ("GET", "/api/v1/admin/feeds"),
        ("GET", "/api/v1/admin/reports/levels"),
        ("GET", "/api/v1/admin/audit"),
    ],
)
def test_host_token_cannot_call_admin_endpoints(world: World, method: str, path: str) -> None:
    url = path.format(bob=world.bob.id, bundle=world.bob_bundle)
    kwargs: dict[str, Any] = {"json": {"name": "x"}} if method == "POST" else {}
    assert status(world, world.alice.token, method, url, **kwargs) == 401
    assert status(world, None, method, url, **kwargs) == 401


def test_requests_without_or_with_forged_host_tokens_are_refused(world: World) -> None:
    alice = world.alice
    forged = f"nsh_{alice.id}_{'A' * 43}"
    with world.server.admin() as admin:
        before = admin.get(f"/api/v1/admin/hosts/{alice.id}").json()["checkin_count"]
    for token in (None, forged, world.server.admin_token, "garbage"):
        assert status(world, token, "GET", f"/api/v1/hosts/{alice.id}") == 401
        assert status(world, token, "GET", f"/api/v1/bundles/{world.alice_bundle}") == 401
        checkin_path = f"/api/v1/hosts/{alice.id}/checkin"
        assert status(world, token, "POST", checkin_path, json=inventory("forged")) == 401
    # A refused check-in stored nothing.
    with world.server.admin() as admin:
        assert admin.get(f"/api/v1/admin/hosts/{alice.id}").json()["checkin_count"] == before


def test_revoked_key_cannot_register(world: World) -> None:
    key = create_key(world.server)
    with world.server.admin() as admin:
        assert admin.post(f"/api/v1/admin/keys/{key['id']}/revoke").status_code == 200
    body = {"registration_key": key["key"], "hostname": "late"}
    assert status(world, None, "POST", "/api/v1/hosts/register", json=body) == 403
    wrong = dict(body, registration_key=key["key"][:-4] + "AAAA")
    assert status(world, None, "POST", "/api/v1/hosts/register", json=wrong) == 401


SCOPED_CALLS = [
    ("keys:read", "GET", "/api/v1/admin/keys"),
    ("keys:write", "POST", "/api/v1/admin/keys/{key}/revoke"),
    ("bundles:read", "GET", "/api/v1/admin/bundles"),
    ("bundles:write", "POST", "/api/v1/admin/bundles/{bundle}/retire"),
    ("feeds:read", "GET", "/api/v1/admin/feeds"),
    ("feeds:write", "PATCH", "/api/v1/admin/feeds/test"),
    ("hosts:read", "GET", "/api/v1/admin/hosts/{bob}"),
    ("hosts:write", "PATCH", "/api/v1/admin/hosts/{bob}"),
    ("reports:read", "GET", "/api/v1/admin/reports/stale"),
    ("audit:read", "GET", "/api/v1/admin/audit"),
]


@pytest.fixture(scope="module")
def scoped_tokens(world: World) -> Iterator[Callable[[str], str]]:
    """Admin tokens holding exactly one scope, minted directly in the database."""
    cache: dict[str, str] = {}
    database = Database(world.server.database_url, pool_size=1)

    def token_for(scope: str) -> str:
        if scope not in cache:
            with database.engine.begin() as connection:
                cache[scope] = admin_tokens.create(connection, f"only-{scope}", [scope])[1]
        return cache[scope]

    yield token_for
    database.dispose()


@pytest.mark.parametrize(("scope", "method", "path"), SCOPED_CALLS)
def test_admin_token_is_held_to_its_scopes(
    world: World, scoped_tokens: Callable[[str], str], scope: str, method: str, path: str
) -> None:
    url = path.format(key=world.key_id, bundle=world.alice_bundle, bob=world.bob.id)
    kwargs: dict[str, Any] = {"json": {}} if method == "PATCH" else {}
    other = next(s for s, _, _ in SCOPED_CALLS if s.split(":")[0] != scope.split(":")[0])
    assert status(world, scoped_tokens(other), method, url, **kwargs) == 403
    if scope.endswith(":write"):
        # Reading does not allow writing.
        reader = scoped_tokens(scope.replace(":write", ":read"))
        assert status(world, reader, method, url, **kwargs) == 403
    assert status(world, scoped_tokens(scope), method, url, **kwargs) == 200


def test_revoked_admin_token_is_refused(world: World, tmp_path: Path) -> None:
    server = world.server
    data_dir = server.process.data_dir
    token = create_admin_token(data_dir, server.database_url, "keys:read")
    assert status(world, token, "GET", "/api/v1/admin/keys") == 200
    token_id = token.split("_")[1]
    nonstop_command(
        "admin",
        "token",
        "revoke",
        token_id,
        "--data-dir",
        str(data_dir),
        "--database-url",
        server.database_url,
    )
    assert status(world, token, "GET", "/api/v1/admin/keys") == 401
    listed = nonstop_command(
        "admin",
        "token",
        "list",
        "--json",
        "--data-dir",
        str(data_dir),
        "--database-url",
        server.database_url,
    )
    assert token.split("_", 2)[2] not in listed.stdout

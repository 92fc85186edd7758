"""The API workflow against a real server, on SQLite and on PostgreSQL.

Registration, check-in answers under feed policy, verified upload, download
with caching headers, retire, pins, limits, reports, audit, metrics.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from nonstop.bundle import (
    FunctionPatch,
    KernelTarget,
    UserspaceTarget,
    describe_payload,
    generate_keypair,
    load_signing_key,
    pack,
)
from tests.conftest import SAMPLE_OBJECT, sample_manifest
from tests.server.conftest import (
    LiveServer,
    checkin,
    create_key,
    decision_for,
    hexid,
    inventory,
    register,
    upload,
)


def library(build_id: str, **fields: Any) -> dict[str, Any]:
    return {"build_id": build_id, "soname": "libdemo.so.1", "processes": 4, **fields}


def userspace_bundle(make_bundle: Callable[..., bytes], build_id: str, level: int) -> bytes:
    return make_bundle(
        target=UserspaceTarget(build_id=build_id, soname="libdemo.so.1"),
        level=level,
        effective_version=f"1.0-{level}",
    )


def test_register_checkin_download_cycle(server: LiveServer, make_bundle) -> None:
    build_id = hexid()
    key = create_key(server)
    host = register(server, key["key"])
    data = userspace_bundle(make_bundle, build_id, 3)
    uploaded = upload(server, data)
    assert uploaded.status_code == 201, uploaded.text
    bundle = uploaded.json()
    assert bundle["target"] == f"userspace:{build_id}" and bundle["level"] == 3

    answer = checkin(server, host, inventory("web-1", [library(build_id)]))
    decision = decision_for(answer, f"userspace:{build_id}")
    assert decision["action"] == "apply"
    assert decision["bundle"]["sha256"] == bundle["sha256"]
    assert answer["recorded"] is True and answer["feed"] == "test"

    with host.client(server) as client:
        download = client.get(decision["bundle"]["url"])
        assert download.status_code == 200
        assert download.content == data
        assert download.headers["etag"] == f'"{bundle["sha256"]}"'
        assert "immutable" in download.headers["cache-control"]
        again = client.get(
            decision["bundle"]["url"], headers={"If-None-Match": download.headers["etag"]}
        )
        assert again.status_code == 304 and again.content == b""

    # Once the host reports level 3 applied, nothing more is offered.
    answer = checkin(server, host, inventory("web-1", [library(build_id, applied_level=3)]))
    assert decision_for(answer, f"userspace:{build_id}")["action"] == "none"
    assert decision_for(answer, f"userspace:{build_id}")["reason"] == "up to date"


def test_highest_level_offered_and_retired_bundle_withdrawn(
    server: LiveServer, make_bundle
) -> None:
    build_id = hexid()
    host = register(server, create_key(server)["key"])
    low = upload(server, userspace_bundle(make_bundle, build_id, 1)).json()
    high = upload(server, userspace_bundle(make_bundle, build_id, 2)).json()
    body = inventory("db-1", [library(build_id, applied_level=1)])
    assert (
        decision_for(checkin(server, host, body), f"userspace:{build_id}")["bundle"]["sha256"]
        == high["sha256"]
    )

    with server.admin() as admin:
        retired = admin.post(f"/api/v1/admin/bundles/{high['sha256']}/retire")
        assert retired.status_code == 200 and retired.json()["retired_at"] is not None
        listed = admin.get(
            "/api/v1/admin/bundles", params={"target": f"userspace:{build_id}"}
        ).json()
        assert [b["level"] for b in listed["bundles"]] == [1]
        kept = admin.get(
            "/api/v1/admin/bundles",
            params={"target": f"userspace:{build_id}", "include_retired": True},
        ).json()
        assert [b["level"] for b in kept["bundles"]] == [1, 2]
        # Kept for audit: an admin can still fetch the retired bytes.
        assert admin.get(f"/api/v1/admin/bundles/{high['sha256']}/content").status_code == 200
    decision = decision_for(
        checkin(server, host, inventory("db-1", [library(build_id, applied_level=1)])),
        f"userspace:{build_id}",
    )
    assert decision["action"] == "none" and decision["reason"] == "up to date"
    with host.client(server) as client:
        assert client.get(f"/api/v1/bundles/{high['sha256']}").status_code == 410
        assert client.get(f"/api/v1/bundles/{low['sha256']}").status_code == 200


def test_kernel_bundle_matched_by_build_id_or_version_digest(
    server: LiveServer, signing_key
) -> None:
    release, build_id, digest = "6.1.0-99-amd64", hexid(), hexid(64)
    module = b"\x7fELF livepatch module"
    manifest = sample_manifest(
        {},
        kind="kernel",
        target=KernelTarget(release=release, version_digest=digest),
        functions=(FunctionPatch(target="cmdline_proc_show", object="vmlinux"),),
        payload=(describe_payload("livepatch.ko", "module", module),),
        level=1,
    )
    data = pack(manifest, {"livepatch.ko": module}, signing_key)
    bundle = upload(server, data).json()
    host = register(server, create_key(server)["key"])
    kernel = {"release": release, "build_id": build_id, "version_digest": digest}
    answer = checkin(server, host, inventory("k-1", kernel=kernel))
    key = f"kernel:{release}:{build_id}"
    decision = decision_for(answer, key)
    assert decision["action"] == "apply" and decision["bundle"]["sha256"] == bundle["sha256"]
    with host.client(server) as client:
        assert client.get(decision["bundle"]["url"]).status_code == 200

    # The levels report knows the bundle's level through the host's other kernel identity,
    # in the whole-fleet report as with a kind filter; an unregistered host drops out.
    expected = {
        "target": key,
        "kind": "kernel",
        "name": release,
        "latest_level": 1,
        "levels": [{"level": None, "hosts": 1}],
    }
    with server.admin() as admin:
        for params in ({}, {"kind": "kernel"}):
            report = admin.get("/api/v1/admin/reports/levels", params=params).json()
            assert [t for t in report["targets"] if t["target"] == key] == [expected], params
        userspace = admin.get("/api/v1/admin/reports/levels", params={"kind": "userspace"})
        assert all(t["kind"] == "userspace" for t in userspace.json()["targets"])
    with host.client(server) as client:
        assert client.delete(f"/api/v1/hosts/{host.id}").status_code == 204
    with server.admin() as admin:
        report = admin.get("/api/v1/admin/reports/levels", params={"target": key}).json()
    assert report["targets"] == []


def test_upload_refuses_bad_bundles_and_detects_duplicates(server: LiveServer, make_bundle) -> None:
    build_id = hexid()
    data = userspace_bundle(make_bundle, build_id, 5)
    tampered = bytearray(data)
    tampered[-200] ^= 0x01
    refused = upload(server, bytes(tampered))
    assert refused.status_code == 400 and refused.json()["detail"].startswith("bundle refused:")
    assert upload(server, b"not a bundle").status_code == 400
    assert upload(server, data).status_code == 201
    assert upload(server, data).status_code == 200  # the same bytes: a no-op
    clash = upload(
        server,
        make_bundle(
            target=UserspaceTarget(build_id=build_id, soname="x.so"),
            level=5,
            effective_version="other",
        ),
    )
    assert clash.status_code == 409 and "already has level 5" in clash.json()["detail"]


def test_upload_refuses_a_bundle_from_an_unknown_vendor(server: LiveServer, tmp_path) -> None:
    generate_keypair(tmp_path / "other")
    other = load_signing_key(tmp_path / "other" / "signing.key")
    files = {"patch.o": SAMPLE_OBJECT}
    response = upload(server, pack(sample_manifest(files), files, other))
    assert response.status_code == 400
    assert "not trusted" in response.json()["detail"]


def test_feed_delay_holds_bundle_back_until_released(server: LiveServer, make_bundle) -> None:
    feed = f"slow-{hexid(6)}"
    with server.admin() as admin:
        assert (
            admin.post("/api/v1/admin/feeds", json={"name": feed, "delay_hours": 48}).status_code
            == 201
        )
        assert admin.post("/api/v1/admin/feeds", json={"name": feed}).status_code == 409
    build_id = hexid()
    host = register(server, create_key(server, feed=feed)["key"])
    upload(server, userspace_bundle(make_bundle, build_id, 1))
    decision = decision_for(
        checkin(server, host, inventory("h", [library(build_id)])), f"userspace:{build_id}"
    )
    assert (decision["action"], decision["reason"]) == ("none", "not yet released on feed")
    with server.admin() as admin:
        assert (
            admin.patch(f"/api/v1/admin/feeds/{feed}", json={"delay_hours": 0}).json()[
                "delay_hours"
            ]
            == 0
        )
    decision = decision_for(
        checkin(server, host, inventory("h", [library(build_id)])), f"userspace:{build_id}"
    )
    assert decision["action"] == "apply"


def test_sticky_pins_by_level_on_key_and_by_date_on_host(server: LiveServer, make_bundle) -> None:
    build_id = hexid()
    for level in (1, 2, 3):
        upload(server, userspace_bundle(make_bundle, build_id, level))
    host = register(server, create_key(server, sticky="level:2")["key"])
    target = f"userspace:{build_id}"
    assert (
        decision_for(checkin(server, host, inventory("p", [library(build_id)])), target)["bundle"][
            "level"
        ]
        == 2
    )
    with server.admin() as admin:
        # A day before everything was published: nothing may be offered.
        pinned = admin.patch(f"/api/v1/admin/hosts/{host.id}", json={"sticky": "date:2000-01-01"})
        assert pinned.status_code == 200 and pinned.json()["sticky"] == "date:2000-01-01"
        decision = decision_for(checkin(server, host, inventory("p", [library(build_id)])), target)
        assert (decision["action"], decision["reason"]) == ("none", "held back by sticky pin")
        assert (
            admin.patch(f"/api/v1/admin/hosts/{host.id}", json={"sticky": None}).json()["sticky"]
            is None
        )
        assert (
            admin.patch(
                f"/api/v1/admin/hosts/{host.id}", json={"sticky": "date:2023-02-30"}
            ).status_code
            == 422
        )
    assert (
        decision_for(checkin(server, host, inventory("p", [library(build_id)])), target)["bundle"][
            "level"
        ]
        == 3
    )


def test_host_own_pin_and_delay_combine_with_server_policy(server: LiveServer, make_bundle) -> None:
    build_id = hexid()
    published = {}
    for level in (1, 2, 3):
        bundle = upload(server, userspace_bundle(make_bundle, build_id, level)).json()
        published[level] = bundle["published_at"]
    host = register(server, create_key(server, sticky="level:2")["key"])
    target = f"userspace:{build_id}"

    def decide(**local: Any) -> dict[str, Any]:
        answer = checkin(server, host, inventory("p", [library(build_id)], **local))
        return decision_for(answer, target)

    offered = decide()["bundle"]
    assert offered["level"] == 2
    # published_at is the bundle's publication time, as the admin API shows it.
    assert datetime.fromisoformat(offered["published_at"]) == datetime.fromisoformat(published[2])
    assert decide(sticky="level:1")["bundle"]["level"] == 1  # the host's pin is stricter
    assert decide(sticky="level:3")["bundle"]["level"] == 2  # the key's pin is stricter
    assert (decide(sticky="date:2000-01-01")["reason"]) == "held back by sticky pin"
    # Just published: a host delay of one hour holds everything back (the feed has none).
    assert decide(delay_hours=1)["reason"] == "not yet released on feed"
    assert decide(delay_hours=0)["bundle"]["level"] == 2

    with host.client(server) as client:
        for bad in (
            {"sticky": "date:2023-02-30"},
            {"sticky": "latest"},
            {"delay_hours": -1},
            {"delay_hours": "soon"},
        ):
            response = client.post(f"/api/v1/hosts/{host.id}/checkin", json=inventory("p", **bad))
            assert response.status_code == 422, bad
            assert response.json()["detail"][0]["loc"][:2] == ["body", next(iter(bad))]


def test_registration_key_host_limit_and_revocation(server: LiveServer) -> None:
    key = create_key(server, host_limit=2)
    first = register(server, key["key"])
    register(server, key["key"])
    with server.client() as client:
        third = client.post(
            "/api/v1/hosts/register", json={"registration_key": key["key"], "hostname": "three"}
        )
        assert third.status_code == 403 and "limit of 2" in third.json()["detail"]
    # Unregistering frees a place.
    with first.client(server) as client:
        assert client.delete(f"/api/v1/hosts/{first.id}").status_code == 204
        assert client.get(f"/api/v1/hosts/{first.id}").status_code == 401
        refused = client.post(f"/api/v1/hosts/{first.id}/checkin", json=inventory("gone"))
        assert refused.status_code == 401
    register(server, key["key"])
    with server.admin() as admin:
        assert admin.get(f"/api/v1/admin/keys/{key['id']}").json()["host_count"] == 2
        listed = admin.get("/api/v1/admin/keys").json()
        assert key["id"] in [k["id"] for k in listed] and all("key" not in k for k in listed)


def test_checkin_replay_is_answered_but_recorded_once(server: LiveServer) -> None:
    host = register(server, create_key(server)["key"])
    body = inventory("r", [library(hexid())])
    assert checkin(server, host, body)["recorded"] is True
    assert checkin(server, host, body)["recorded"] is False
    checkin(server, host, inventory("r"))
    with server.admin() as admin:
        detail = admin.get(f"/api/v1/admin/hosts/{host.id}").json()
        history = admin.get(f"/api/v1/admin/hosts/{host.id}/checkins").json()["checkins"]
    assert detail["checkin_count"] == 2 and len(history) == 2
    assert history[1]["checkin_id"] == body["checkin_id"]
    # The newest inventory (no libraries) replaced the previous one.
    assert detail["targets"] == []


def test_changed_inventory_updates_kept_targets_and_drops_the_rest(server: LiveServer) -> None:
    """The second inventory keeps one library (now patched), drops one and adds one."""
    host = register(server, create_key(server)["key"])
    kept, dropped, added = hexid(), hexid(), hexid()
    checkin(server, host, inventory("c", [library(kept), library(dropped, soname="libold.so")]))
    second = [library(kept, applied_level=2, processes=9), library(added, soname="libnew.so")]
    checkin(server, host, inventory("c", second))
    with host.client(server) as client:
        targets = client.get(f"/api/v1/hosts/{host.id}").json()["targets"]
    assert sorted(
        (t["target"], t["name"], t["processes"], t["applied_level"]) for t in targets
    ) == (
        sorted(
            [
                (f"userspace:{kept}", "libdemo.so.1", 9, 2),
                (f"userspace:{added}", "libnew.so", 4, None),
            ]
        )
    )


def test_inventory_is_stored_and_reported(server: LiveServer, make_bundle) -> None:
    build_id = hexid()
    upload(server, userspace_bundle(make_bundle, build_id, 4))
    key = create_key(server, labels={"dc": "fra1"})
    hosts = [register(server, key["key"]) for _ in range(3)]
    for number, (host, level) in enumerate(zip(hosts, (4, 4, None), strict=True)):
        lib = library(
            build_id, package={"name": "libdemo1", "version": "1.0-1"}, path="/usr/lib/libdemo.so.1"
        )
        if level:
            lib["applied_level"] = level
        checkin(
            server, host, inventory(f"rep-{number}", [lib, dict(lib, path="/lib/libdemo.so.1")])
        )
    with hosts[0].client(server) as client:
        own = client.get(f"/api/v1/hosts/{hosts[0].id}").json()
    assert own["labels"] == {"dc": "fra1"} and own["distro_id"] == "debian"
    assert own["targets"] == [
        {
            "target": f"userspace:{build_id}",
            "kind": "userspace",
            "name": "libdemo.so.1",
            "package_name": "libdemo1",
            "package_version": "1.0-1",
            "processes": 8,
            "applied_level": 4,
        }
    ]
    with server.admin() as admin:
        report = admin.get(
            "/api/v1/admin/reports/levels", params={"target": f"userspace:{build_id}"}
        ).json()
        stale = admin.get("/api/v1/admin/reports/stale", params={"days": 0}).json()
        listed = admin.get(
            "/api/v1/admin/hosts", params={"registration_key_id": key["id"], "limit": 2}
        ).json()
        rest = admin.get(
            "/api/v1/admin/hosts",
            params={"registration_key_id": key["id"], "after": listed["next_after"]},
        ).json()
    assert report["targets"] == [
        {
            "target": f"userspace:{build_id}",
            "kind": "userspace",
            "name": "libdemo.so.1",
            "latest_level": 4,
            "levels": [{"level": None, "hosts": 1}, {"level": 4, "hosts": 2}],
        }
    ]
    assert {h.id for h in hosts} <= {h["id"] for h in stale["hosts"]} or stale["next_after"]
    assert len(listed["hosts"]) == 2 and len(rest["hosts"]) == 1 and rest["next_after"] is None
    assert {h["id"] for h in listed["hosts"] + rest["hosts"]} == {h.id for h in hosts}


def test_admin_actions_are_audited(server: LiveServer) -> None:
    key = create_key(server)
    with server.admin() as admin:
        admin.post(f"/api/v1/admin/keys/{key['id']}/revoke")
        entries = admin.get("/api/v1/admin/audit", params={"limit": 5}).json()["entries"]
    assert (entries[0]["action"], entries[0]["target"]) == ("key.revoke", key["id"])
    assert (entries[1]["action"], entries[1]["target"]) == ("key.create", key["id"])
    assert entries[0]["actor"].startswith("token:tests:")


def test_metrics_healthz_and_logs_hold_no_secret(server: LiveServer) -> None:
    key = create_key(server)
    host = register(server, key["key"])
    checkin(server, host, inventory("m"))
    with server.client() as client:
        health = client.get("/healthz").json()
        metrics = client.get("/metrics").text
        schema = client.get("/openapi.json").json()
    assert health == {"status": "ok", "schema_revision": "0005"}
    assert 'nonstop_checkins_total{result="recorded"}' in metrics
    assert 'nonstop_hosts{state="active"}' in metrics
    assert "nonstop_http_request_duration_seconds_bucket" in metrics
    assert "/api/v1/hosts/{host_id}/checkin" in schema["paths"]
    log = server.process.log()
    assert '"route": "/api/v1/hosts/{host_id}/checkin"' in log
    for secret in (key["key"], host.token, server.admin_token):
        assert secret not in log
        assert secret.split("_", 2)[2] not in log


def test_only_the_checkin_route_is_taken_ahead_of_fastapi(server: LiveServer) -> None:
    # CheckinFastPath answers what the check-in route matches, under the route's metrics
    # label; a request beside it keeps FastAPI's answer.
    host = register(server, create_key(server)["key"])
    path = f"/api/v1/hosts/{host.id}/checkin"
    with host.client(server) as client:
        assert client.post(path, json=inventory("beside")).status_code == 200
        assert client.get(path).status_code == 405
        assert client.post(f"{path}/", json=inventory("beside")).status_code == 307
        assert client.post(f"{path}/more", json=inventory("beside")).status_code == 404
        assert client.post("/api/v1/hosts//checkin", json=inventory("beside")).status_code == 404
        metrics = client.get("/metrics").text
    label = 'route="/api/v1/hosts/{host_id}/checkin",status="200"'
    assert f"nonstop_http_responses_total{{{label}}}" in metrics


def test_limit_set_on_a_key_in_use_counts_its_hosts(server: LiveServer) -> None:
    key = create_key(server)
    for _ in range(2):
        register(server, key["key"])
    with server.admin() as admin:
        changed = admin.patch(
            f"/api/v1/admin/keys/{key['id']}", json={"host_limit": 3, "feed": None}
        )
        assert changed.status_code == 200, changed.text
        assert (changed.json()["host_limit"], changed.json()["feed"]) == (3, "test")
        assert changed.json()["host_count"] == 2
    register(server, key["key"])
    with server.client() as client:
        refused = client.post(
            "/api/v1/hosts/register", json={"registration_key": key["key"], "hostname": "four"}
        )
    assert refused.status_code == 403 and "limit of 3" in refused.json()["detail"]


def test_the_docs_page_loads_nothing_from_outside(server: LiveServer) -> None:
    """/docs works on an offline network: every script, style and icon it names is served
    by the patch server itself."""
    with server.client() as client:
        page = client.get("/docs")
        assert page.status_code == 200 and "swagger-ui" in page.text
        urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", page.text)
        assert urls and not [u for u in urls if "://" in u or u.startswith("//")], urls
        for url in urls:
            assert client.get(url).status_code == 200, url
        assert "/docs" not in client.get("/openapi.json").json()["paths"]

"""Findings per host and CVE on a live server: feeds imported, bundles uploaded, check-ins."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nonstop.bundle import Fix, Update, UserspaceTarget
from nonstop.cve.model import InstalledPackage
from nonstop.cve.package_lists import canonical_rows, packages_digest
from tests.server.conftest import (
    Host,
    LiveServer,
    checkin,
    create_key,
    hexid,
    inventory,
    register,
    upload,
)
from tests.server.serverproc import nonstop_command

TRACKER = Path(__file__).parents[1] / "fixtures" / "cve" / "tracker.json"
INSTALLED = "2.5.0-1+deb12u1"
PATCHED = "CVE-2024-50602"  # fixed in 2.5.0-1+deb12u2, closed live by the bundle below
OPEN = "CVE-2024-8176"  # fixed in 2.5.0-1+deb12u2, no live patch


def expat_host(server: LiveServer) -> tuple[Host, dict[str, Any]]:
    rows = canonical_rows([InstalledPackage("libexpat1", INSTALLED, "expat", INSTALLED, "amd64")])
    packages = {"manager": "dpkg", "digest": packages_digest("dpkg", rows), "items": rows}
    return register(server, create_key(server)["key"]), packages


def library(build_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "build_id": build_id,
        "soname": "libexpat.so.1",
        "package": {"name": "libexpat1", "version": INSTALLED},
        "processes": 2,
        **fields,
    }


def findings(server: LiveServer, host: Host) -> dict[str, dict[str, Any]]:
    with host.client(server) as client:
        response = client.get(f"/api/v1/hosts/{host.id}/vulnerabilities")
    assert response.status_code == 200, response.text
    return {finding["cve"]: finding for finding in response.json()["findings"]}


def test_a_host_s_findings_follow_its_live_patches(
    server: LiveServer, make_bundle: Callable[..., bytes], tmp_path: Path
) -> None:
    imported = nonstop_command(
        "cve", "import", str(TRACKER), "--database-url", server.database_url,
        "--data-dir", str(tmp_path),
    )  # fmt: skip
    assert "debian-tracker" in imported.stdout
    build_id = hexid()
    bundle = make_bundle(
        target=UserspaceTarget(build_id=build_id, soname="libexpat.so.1"),
        level=1,
        effective_version=f"{INSTALLED}+nonstop1",
        fixes=(Fix(title="XML_ResumeParser after XML_StopParser", cves=(PATCHED,)),),
    )
    assert upload(server, bundle).status_code == 201
    host, packages = expat_host(server)

    # Patched in every process: fixed by live patch; the other CVE stays open, fix available.
    answer = checkin(server, host, inventory("e", [library(build_id, applied_level=1)],
                                             packages=packages))  # fmt: skip
    first_digest = answer["vulnerabilities_digest"]
    found = findings(server, host)
    assert found[PATCHED]["status"] == "fixed-by-live-patch"
    assert found[PATCHED]["live_patch"]["level"] == 1
    assert found[OPEN]["status"] == "open-fix-available"
    assert found[OPEN]["fixed_version"] == "2.5.0-1+deb12u2"
    assert found[OPEN]["live_patch"] is None

    # One process left unpatched: partly fixed, naming it.
    unpatched = library(build_id, partial_level=1, unpatched=[{"pid": 4242, "name": "xmlsvc"}])
    answer = checkin(server, host, inventory("e", [unpatched], packages=packages))
    assert answer["vulnerabilities_digest"] != first_digest
    found = findings(server, host)
    assert found[PATCHED]["status"] == "partly-fixed"
    assert found[PATCHED]["processes"] == [{"pid": 4242, "name": "xmlsvc"}]

    # No process patched: open, and the bundle that would close it is named.
    bare = library(build_id, unpatched=[{"pid": 4242, "name": "xmlsvc"}, {"pid": 7, "name": "a"}])
    checkin(server, host, inventory("e", [bare], packages=packages))
    found = findings(server, host)
    assert found[PATCHED]["status"] == "open-fix-available"
    assert found[PATCHED]["available_bundle"]["level"] == 1

    # The same inputs again: the same digest (the agent need not fetch its findings again).
    again = checkin(server, host, inventory("e", [bare], packages=packages))
    assert (
        again["vulnerabilities_digest"]
        == checkin(server, host, inventory("e", [bare], packages=packages))[
            "vulnerabilities_digest"
        ]
    )

    # The fleet's view: the CVE's hosts with their status, and the counts.
    with server.admin() as admin:
        by_cve = admin.get(f"/api/v1/vulnerabilities/{PATCHED}").json()
        fleet = admin.get("/api/v1/vulnerabilities").json()
        csaf = admin.get(f"/api/v1/hosts/{host.id}/vex", params={"format": "csaf"})
        oval = admin.get(f"/api/v1/hosts/{host.id}/oval", params={"level_dir": "/tmp/levels"})
    listed = {entry["host_id"]: entry["finding"]["status"] for entry in by_cve["hosts"]}
    assert listed[host.id] == "open-fix-available"
    assert fleet["hosts"] >= 1 and fleet["exposed_hosts"] >= 1
    assert sum(fleet["counts"]["open-fix-available"].values()) >= 2
    assert csaf.status_code == 200
    assert json.loads(csaf.content)["document"]["category"] == "csaf_vex"
    assert oval.status_code == 200 and oval.headers["content-type"].startswith("application/xml")
    assert "/tmp/levels" in oval.text and ET.fromstring(oval.content) is not None

    # Metrics: findings per status and urgency, hosts per status, from the computed fleet.
    with server.client() as client:
        metrics = client.get("/metrics").text
    assert 'nonstop_cve_findings{status="open-fix-available",urgency="medium"}' in metrics
    assert 'nonstop_cve_hosts{status="open-fix-available"}' in metrics


def test_only_the_host_itself_or_an_admin_reads_its_findings(server: LiveServer) -> None:
    host, packages = expat_host(server)
    other, _ = expat_host(server)
    checkin(server, host, inventory("h", packages=packages))
    with other.client(server) as client:
        assert client.get(f"/api/v1/hosts/{host.id}/vulnerabilities").status_code == 403
    with server.client() as anonymous:
        assert anonymous.get(f"/api/v1/hosts/{host.id}/vulnerabilities").status_code == 401
        assert anonymous.get("/api/v1/vulnerabilities").status_code == 401
    with server.admin() as admin:
        assert admin.get(f"/api/v1/hosts/{host.id}/vulnerabilities").status_code == 200
        assert admin.get(f"/api/v1/hosts/{host.id}/oval?level_dir=rel").status_code == 422
        assert admin.get("/api/v1/vulnerabilities/not-a-cve").status_code == 422


def test_a_bundle_built_from_an_update_is_a_feed_and_the_fleet_has_one_vex_document(
    server: LiveServer, make_bundle: Callable[..., bytes]
) -> None:
    """A CVE no feed knows yet, fixed by a bundle built from a Debian update: the bundle's
    manifest says it is fixed in the update's version, and the live patch closes it."""
    build_id = hexid()
    bundle = make_bundle(
        target=UserspaceTarget(build_id=build_id, soname="libexpat.so.1"),
        level=1,
        effective_version=f"{INSTALLED}+nonstop1",
        fixes=(Fix(title="a fix only the update names", cves=("CVE-2099-7777",)),),
        update=Update(source="expat", from_version=INSTALLED, to_version="2.5.0-1+deb12u9"),
    )
    assert upload(server, bundle).status_code == 201
    host, packages = expat_host(server)
    checkin(server, host, inventory("u", [library(build_id, applied_level=1)], packages=packages))
    found = findings(server, host)
    assert found["CVE-2099-7777"]["status"] == "fixed-by-live-patch"
    assert found["CVE-2099-7777"]["fixed_version"] == "2.5.0-1+deb12u9"
    assert found["CVE-2099-7777"]["feeds"] == ["bundles"]

    with server.admin() as admin:
        document = admin.get("/api/v1/vulnerabilities/vex", params={"format": "cyclonedx"})
    assert document.status_code == 200, document.text
    vex = json.loads(document.content)
    assert vex["bomFormat"] == "CycloneDX"
    assert any(v["id"] == "CVE-2099-7777" for v in vex["vulnerabilities"])

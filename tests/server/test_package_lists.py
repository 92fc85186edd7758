"""Installed-package lists at check-in: stored once per distinct list, sent only when needed."""

from __future__ import annotations

from typing import Any

from nonstop.cve.model import InstalledPackage
from nonstop.cve.package_lists import canonical_rows, packages_digest
from tests.server.conftest import Host, LiveServer, checkin, create_key, inventory, register

EXPAT = InstalledPackage("libexpat1", "2.5.0-1+deb12u1", "expat", "2.5.0-1+deb12u1", "amd64")
BASH = InstalledPackage("bash", "5.2.15-2+b8", "bash", "5.2.15-2", "amd64")


def packages(*installed: InstalledPackage, items: bool = True) -> dict[str, Any]:
    rows = canonical_rows(installed)
    section: dict[str, Any] = {"manager": "dpkg", "digest": packages_digest("dpkg", rows)}
    if items:
        section["items"] = rows
    return section


def test_a_list_is_sent_once_and_shared_by_hosts_that_report_its_digest(
    server: LiveServer,
) -> None:
    key = create_key(server)["key"]
    first, second = register(server, key), register(server, key)
    full = packages(EXPAT, BASH)
    digest_only = packages(EXPAT, BASH, items=False)

    def held(host: Host, section: dict[str, Any] | None) -> str | None:
        body = inventory("h") if section is None else inventory("h", packages=section)
        digest: str | None = checkin(server, host, body)["packages_digest"]
        return digest

    # A digest the server does not hold is not acknowledged: the host must send the list.
    assert held(first, digest_only) is None
    assert held(first, full) == full["digest"]
    # From then on the digest is enough, for this host and for any host with the same list.
    assert held(first, digest_only) == full["digest"]
    assert held(second, digest_only) == full["digest"]
    # An agent that reports no list leaves the stored one in place.
    assert held(second, None) == full["digest"]
    # A changed list is not acknowledged until it is sent.
    assert held(second, packages(EXPAT, items=False)) is None


def test_a_list_that_does_not_match_its_digest_or_order_is_refused(server: LiveServer) -> None:
    host = register(server, create_key(server)["key"])
    wrong_digest = packages(EXPAT, BASH) | {"digest": "0" * 64}
    unsorted = packages(EXPAT, BASH)
    unsorted["items"] = list(reversed(unsorted["items"]))
    hostile_name = packages(EXPAT)
    hostile_name["items"] = [["libexpat1\n", *hostile_name["items"][0][1:]]]
    with host.client(server) as client:
        for section in (wrong_digest, unsorted, hostile_name):
            response = client.post(
                f"/api/v1/hosts/{host.id}/checkin", json=inventory("h", packages=section)
            )
            assert response.status_code == 422, response.text
    # Nothing was stored by the refused check-ins.
    assert checkin(server, host, inventory("h"))["packages_digest"] is None

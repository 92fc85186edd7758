"""OpenVEX 0.2.0: valid (official schema), statuses as documented, actions for affected ones."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nonstop.cve.exports import export
from nonstop.cve.exports.openvex import STATUS, iri
from nonstop.cve.model import Finding
from tests.cve.exports.hosts import BUILD_ID, WHEN, findings, host
from tests.cve.exports.schemas import openvex_errors


def _document(namespace: str = "urn:nonstop") -> dict[str, Any]:
    return json.loads(export("openvex", host(), findings(), generated_at=WHEN, namespace=namespace))


def _statement(cve: str) -> dict[str, Any]:
    return next(s for s in _document()["statements"] if s["vulnerability"]["name"] == cve)


@pytest.mark.parametrize("namespace", ["urn:nonstop", "https://patches.example.org/"])
def test_the_document_is_valid_openvex(namespace: str) -> None:
    document = _document(namespace)
    assert openvex_errors(document) == []
    assert document["@id"].startswith(namespace.rstrip("/"))
    del document["statements"][0]["status"]
    assert openvex_errors(document) != []


def test_the_status_table_is_the_documented_one() -> None:
    assert {str(s): v for s, v in STATUS.items()} == {
        "not-affected": "not_affected",
        "fixed-by-package": "fixed",
        "fixed-by-live-patch": "fixed",
        "partly-fixed": "affected",
        "restart-needed": "affected",
        "open-fix-available": "affected",
        "open-no-fix": "affected",
        "undetermined": "under_investigation",
    }


@pytest.mark.parametrize("finding", findings(), ids=lambda f: str(f.status))
def test_each_status_gives_its_openvex_status(finding: Finding) -> None:
    statement = _statement(finding.cve)
    assert statement["status"] == STATUS[finding.status]
    if statement["status"] == "affected":
        assert statement["action_statement"]


def test_a_live_patched_cve_is_fixed_with_the_patch_in_the_notes() -> None:
    statement = _statement("CVE-2024-0003")
    (product,) = statement["products"]
    assert product["@id"] == "urn:nonstop:host:h-0001"
    assert [c["identifiers"]["purl"] for c in product["subcomponents"]] == [
        "pkg:deb/debian/libexpat1@2.5.0-1%2Bdeb12u1?arch=amd64&distro=debian-12"
    ]
    notes = statement["status_notes"]
    assert f"level 2 for userspace:{BUILD_ID}" in notes and "02" * 32 in notes


def test_not_affected_is_justified_and_restarts_name_processes() -> None:
    assert _statement("CVE-2024-0001")["justification"] == "vulnerable_code_not_present"
    assert _statement("CVE-2024-0004")["action_statement"] == "restart pid 412 (nginx)."
    kernel = _statement("CVE-2024-0010")["action_statement"]
    assert kernel == "reboot the host into the installed fixed kernel."


def test_host_ids_are_percent_encoded_in_iris() -> None:
    assert iri("urn:nonstop", "host", "a b/c") == "urn:nonstop:host:a%20b%2Fc"
    assert iri("https://x.example/", "vex", "1") == "https://x.example/vex/1"

"""CSAF 2.0 VEX: valid (schema and mandatory tests), statuses and remediations as documented."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from nonstop.cve.exports import export, export_fleet
from nonstop.cve.exports.csaf import PRODUCT_STATUS
from nonstop.cve.model import Finding
from tests.cve.exports.hosts import BUILD_ID, WHEN, findings, host
from tests.cve.exports.schemas import csaf_errors


def _document() -> dict[str, Any]:
    return json.loads(export("csaf", host(), findings(), generated_at=WHEN))


def _vulnerability(cve: str) -> dict[str, Any]:
    return next(v for v in _document()["vulnerabilities"] if v["cve"] == cve)


def _names(document: dict[str, Any]) -> dict[str, str]:
    """Every product id with its full name, from branches and relationships."""
    names = {}
    stack = list(document["product_tree"]["branches"])
    while stack:
        branch = stack.pop()
        stack += branch.get("branches", [])
        if "product" in branch:
            names[branch["product"]["product_id"]] = branch["product"]["name"]
    for rel in document["product_tree"].get("relationships", []):
        names[rel["full_product_name"]["product_id"]] = rel["full_product_name"]["name"]
    return names


def test_the_document_is_valid_csaf_vex() -> None:
    document = _document()
    assert document["document"]["category"] == "csaf_vex"
    assert csaf_errors(document) == []


def test_the_validator_does_refuse_a_broken_document() -> None:
    document = _document()
    document["vulnerabilities"][0]["product_status"]["fixed"] = ["NS-undefined"]
    assert any("6.1.1" in error for error in csaf_errors(document))


@pytest.mark.parametrize("finding", findings(), ids=lambda f: str(f.status))
def test_each_status_puts_the_hosts_products_in_its_group(finding: Finding) -> None:
    statuses = _vulnerability(finding.cve)["product_status"]
    assert list(statuses) == [PRODUCT_STATUS[finding.status]]


def test_the_status_table_is_the_documented_one() -> None:
    assert {str(s): g for s, g in PRODUCT_STATUS.items()} == {
        "not-affected": "known_not_affected",
        "fixed-by-package": "fixed",
        "fixed-by-live-patch": "fixed",
        "partly-fixed": "known_affected",
        "restart-needed": "known_affected",
        "open-fix-available": "known_affected",
        "open-no-fix": "known_affected",
        "undetermined": "under_investigation",
    }


def test_the_live_patched_product_is_the_package_with_the_patch_never_a_new_version() -> None:
    document = _document()
    names = _names(document)
    (fixed,) = _vulnerability("CVE-2024-0003")["product_status"]["fixed"]
    name = names[fixed]
    assert name.startswith(
        "libexpat1 2.5.0-1+deb12u1 (amd64) on web-1 with nonstop live patch level 2"
    )
    assert "02" * 32 in name
    rel = next(
        r
        for r in document["product_tree"]["relationships"]
        if r["full_product_name"]["product_id"] == fixed
    )
    assert rel["category"] == "installed_with"
    assert (
        "2.5.0-1+deb12u2" not in names[rel["relates_to_product_reference"]]
    )  # the installed version only
    assert f"userspace:{BUILD_ID}" in names[rel["product_reference"]]
    (remediation,) = _vulnerability("CVE-2024-0003")["remediations"]
    assert remediation["restart_required"] == {"category": "none"}
    assert "level 2" in remediation["details"] and BUILD_ID in remediation["details"]


def test_restart_remediations_name_the_processes_or_the_reboot() -> None:
    (libxml,) = _vulnerability("CVE-2024-0005")["remediations"]
    assert libxml["restart_required"]["category"] == "service"
    assert "pid 412 (nginx), pid 977 (php-fpm8.2)" in libxml["restart_required"]["details"]
    (partly,) = _vulnerability("CVE-2024-0004")["remediations"]
    assert "pid 412 (nginx)" in partly["restart_required"]["details"]
    assert "977" not in partly["restart_required"]["details"]  # php-fpm runs the patch already
    (kernel,) = _vulnerability("CVE-2024-0010")["remediations"]
    assert kernel["restart_required"]["category"] == "machine"


def test_an_open_cve_offers_the_live_patch_and_the_upgrade() -> None:
    bundle, upgrade = _vulnerability("CVE-2024-0006")["remediations"]
    assert "level 3" in bundle["details"] and bundle["restart_required"] == {"category": "none"}
    assert (
        "2.5.0-1+deb12u3" in upgrade["details"]
        and upgrade["restart_required"]["category"] == "service"
    )


def test_not_affected_carries_a_vex_justification_and_no_fix_says_why() -> None:
    assert _vulnerability("CVE-2024-0001")["flags"][0]["label"] == "vulnerable_code_not_present"
    (none,) = _vulnerability("CVE-2024-0007")["remediations"]
    assert none == {
        "category": "no_fix_planned",
        "details": "Minor issue",
        "product_ids": none["product_ids"],
    }


def test_a_fleet_has_one_vulnerability_per_cve_with_each_hosts_products() -> None:
    other = replace(host(), host_id="h-0002", hostname="web-2")
    document = json.loads(
        export_fleet("csaf", [(host(), findings()), (other, findings())], generated_at=WHEN)
    )
    cves = [v["cve"] for v in document["vulnerabilities"]]
    assert len(cves) == len(set(cves)) == len(findings())
    names = _names(document)
    fixed = next(v for v in document["vulnerabilities"] if v["cve"] == "CVE-2024-0003")[
        "product_status"
    ]["fixed"]
    assert sorted(names[p].split(" on ")[1].split(" ")[0] for p in fixed) == ["web-1", "web-2"]

"""CycloneDX 1.6 VEX: valid (strict schema), analysis states as documented, live patch named."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nonstop.cve.exports import export
from nonstop.cve.exports.cyclonedx import ANALYSIS
from nonstop.cve.model import Finding
from tests.cve.exports.hosts import BUILD_ID, WHEN, findings, host
from tests.cve.exports.schemas import cyclonedx_errors


def _bom() -> dict[str, Any]:
    return json.loads(export("cyclonedx", host(), findings(), generated_at=WHEN))


def _vulnerability(cve: str) -> dict[str, Any]:
    return next(v for v in _bom()["vulnerabilities"] if v["id"] == cve)


def _components(bom: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (machine,) = bom["components"]
    return {c["bom-ref"]: c for c in machine["components"]}


def test_the_bom_is_valid_cyclonedx_1_6() -> None:
    text = export("cyclonedx", host(), findings(), generated_at=WHEN).decode()
    assert cyclonedx_errors(text) == []
    broken = json.loads(text)
    broken["vulnerabilities"][0]["analysis"]["state"] = "patched"
    assert cyclonedx_errors(json.dumps(broken)) != []


def test_the_status_table_is_the_documented_one() -> None:
    assert {str(s): state for s, state in ANALYSIS.items()} == {
        "not-affected": "not_affected",
        "fixed-by-package": "resolved",
        "fixed-by-live-patch": "resolved",
        "partly-fixed": "exploitable",
        "restart-needed": "exploitable",
        "open-fix-available": "exploitable",
        "open-no-fix": "exploitable",
        "undetermined": "in_triage",
    }


@pytest.mark.parametrize("finding", findings(), ids=lambda f: str(f.status))
def test_each_status_gives_its_analysis_state(finding: Finding) -> None:
    analysis = _vulnerability(finding.cve)["analysis"]
    assert analysis["state"] == ANALYSIS[finding.status]
    assert ("justification" in analysis) == (str(finding.status) == "not-affected")


def test_a_live_patched_cve_is_resolved_and_the_package_keeps_its_version() -> None:
    bom = _bom()
    vulnerability = _vulnerability("CVE-2024-0003")
    (affects,) = vulnerability["affects"]
    package = _components(bom)[affects["ref"]]
    assert package["name"] == "libexpat1" and package["version"] == "2.5.0-1+deb12u1"
    assert affects["versions"] == [{"version": "2.5.0-1+deb12u1", "status": "affected"}]
    properties = {p["name"]: p["value"] for p in vulnerability["properties"]}
    assert properties["nonstop:live-patch:level"] == "2"
    assert properties["nonstop:live-patch:bundle_sha256"] == "02" * 32
    assert properties["nonstop:live-patch:build_id"] == BUILD_ID
    patch = next(c for c in _components(bom).values() if BUILD_ID in c["name"])
    assert patch["hashes"] == [{"alg": "SHA-256", "content": "02" * 32}] and patch["version"] == "2"


def test_restart_needed_names_the_processes() -> None:
    vulnerability = _vulnerability("CVE-2024-0005")
    properties = {p["name"]: p["value"] for p in vulnerability["properties"]}
    assert properties["nonstop:restart"] == "restart pid 412 (nginx), pid 977 (php-fpm8.2)"
    assert "pid 412 (nginx)" in vulnerability["recommendation"]
    assert vulnerability["affects"][0]["versions"][0]["status"] == "unaffected"  # fixed on disk

"""OSV: one valid record per exposed-or-fixed CVE, the host's live patch in ecosystem_specific."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from nonstop.cve.exports import ExportError, export
from tests.cve.exports.hosts import BUILD_ID, WHEN, findings, host
from tests.cve.exports.schemas import osv_errors


def _records() -> list[dict[str, Any]]:
    return json.loads(export("osv", host(), findings(), generated_at=WHEN))


def _record(cve: str) -> dict[str, Any]:
    return next(r for r in _records() if r["aliases"] == [cve])


def test_every_record_is_valid_osv_and_not_affected_has_none() -> None:
    records = _records()
    assert [osv_errors(r) for r in records] == [[]] * len(records)
    assert {r["aliases"][0] for r in records} == {f.cve for f in findings()} - {"CVE-2024-0001"}
    assert osv_errors(records[0] | {"id": "NONSTOP-1"}) != []  # not a prefix OSV knows


def test_the_host_status_is_in_ecosystem_specific() -> None:
    for finding in findings()[1:]:
        (affected,) = _record(finding.cve)["affected"]
        assert affected["ecosystem_specific"]["nonstop"]["status"] == str(finding.status)


def test_a_live_patched_cve_keeps_its_range_and_names_the_patch() -> None:
    (affected,) = _record("CVE-2024-0003")["affected"]
    assert affected["package"] == {
        "ecosystem": "Debian:12",
        "name": "expat",
        "purl": "pkg:deb/debian/expat?arch=source&distro=debian-12",
    }
    assert affected["ranges"] == [
        {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.5.0-1+deb12u2"}]}
    ]
    assert affected["versions"] == ["2.5.0-1+deb12u1"]  # the installed version still has the flaw
    assert affected["ecosystem_specific"]["nonstop"]["live_patch"] == {
        "target": f"userspace:{BUILD_ID}",
        "build_id": BUILD_ID,
        "level": 2,
        "bundle_sha256": "02" * 32,
        "effective_version": "2.5.0-1+deb12u1+nonstop2",
    }


def test_restart_needed_lists_the_processes_and_no_affected_version() -> None:
    (affected,) = _record("CVE-2024-0005")["affected"]
    nonstop = affected["ecosystem_specific"]["nonstop"]
    assert nonstop["processes"] == [
        {"pid": 412, "name": "nginx"},
        {"pid": 977, "name": "php-fpm8.2"},
    ]
    assert "versions" not in affected
    kernel = _record("CVE-2024-0010")["affected"][0]["ecosystem_specific"]["nonstop"]
    assert kernel["kernel_reboot"] is True and kernel["running_kernel"] == "6.1.0-28-amd64"


def test_a_release_without_an_osv_ecosystem_is_refused() -> None:
    with pytest.raises(ExportError, match="no OSV ecosystem for release 'rhel:9'"):
        export("osv", replace(host(), release="rhel:9"), findings(), generated_at=WHEN)

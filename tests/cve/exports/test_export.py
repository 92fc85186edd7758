"""The entry point: every format, deterministic bytes, fleets, refusals, hostile names inert."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from nonstop.cve.exports import FLEET_FORMATS, FORMATS, ExportError, export, export_fleet
from nonstop.cve.model import Finding, ProcessRef, Status
from tests.cve.exports.hosts import HOSTILE, WHEN, by_cve, findings, host, level
from tests.cve.exports.schemas import errors
from tests.cve.oscap import OVAL


@pytest.mark.parametrize("fmt", FORMATS)
def test_same_findings_in_any_order_give_the_same_bytes(fmt: str) -> None:
    first = export(fmt, host(), findings(), generated_at=WHEN)
    again = export(fmt, host(), list(reversed(findings())), generated_at=WHEN)
    assert first == again


@pytest.mark.parametrize("fmt", FORMATS)
def test_only_the_timestamps_change_with_generated_at(fmt: str) -> None:
    later = WHEN + timedelta(days=3, seconds=7)
    first = export(fmt, host(), findings(), generated_at=WHEN).decode()
    second = export(fmt, host(), findings(), generated_at=later).decode()
    assert first != second
    assert first.replace("2025-03-01T12:00:00", "T") == second.replace("2025-03-04T12:00:07", "T")


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_changed_finding_changes_the_document_ids(fmt: str) -> None:
    changed = [
        replace(f, fixed_version="2.5.0-1+deb12u9") if f.cve == "CVE-2024-0006" else f
        for f in findings()
    ]
    assert export(fmt, host(), findings(), generated_at=WHEN) != export(
        fmt, host(), changed, generated_at=WHEN
    )


def test_a_naive_timestamp_is_refused() -> None:
    with pytest.raises(ExportError, match="time zone"):
        export("openvex", host(), findings(), generated_at=datetime(2025, 1, 1))


def test_a_timestamp_in_another_zone_is_written_in_utc() -> None:
    paris = datetime(2025, 3, 1, 13, 0, tzinfo=UTC).astimezone()
    document = json.loads(export("openvex", host(), findings(), generated_at=paris))
    assert document["timestamp"] == "2025-03-01T13:00:00Z"


def test_unknown_formats_and_per_host_formats_in_a_fleet_are_refused() -> None:
    with pytest.raises(ExportError, match="unknown export format 'spdx'"):
        export("spdx", host(), findings(), generated_at=WHEN)
    for fmt in set(FORMATS) - set(FLEET_FORMATS):
        with pytest.raises(ExportError, match="per host"):
            export_fleet(fmt, [(host(), findings())], generated_at=WHEN)


@pytest.mark.parametrize("fmt", FLEET_FORMATS)
def test_a_vex_document_without_findings_is_refused(fmt: str) -> None:
    with pytest.raises(ExportError, match="no findings"):
        export(fmt, host(), [], generated_at=WHEN)


def test_a_bundle_digest_that_is_not_sha256_is_refused_whole() -> None:
    bad = replace(
        by_cve("CVE-2024-0003"), live_patch=replace(level(2, set()), bundle_sha256="../x")
    )
    for fmt in FORMATS:
        with pytest.raises(ExportError, match="CVE-2024-0003: bundle digest"):
            export(fmt, host(), [*findings(), bad], generated_at=WHEN)


def test_a_library_target_key_without_a_build_id_is_refused() -> None:
    bad = replace(level(2, set()), target_key="userspace:../../etc/shadow")
    finding = replace(by_cve("CVE-2024-0003"), live_patch=bad)
    with pytest.raises(ExportError, match="not a build-id"):
        export("oval", host(), [finding], generated_at=WHEN)


def _second_host_findings() -> list[Finding]:
    return [replace(by_cve("CVE-2024-0003"), status=Status.OPEN_FIX_AVAILABLE, live_patch=None)]


@pytest.mark.parametrize("fmt", FLEET_FORMATS)
def test_a_fleet_document_states_every_host_and_stays_valid(fmt: str) -> None:
    other = replace(host(), host_id="h-0002", hostname="web-2")
    data = export_fleet(
        fmt, [(other, _second_host_findings()), (host(), findings())], generated_at=WHEN
    )
    assert "web-1" in data.decode() and "web-2" in data.decode()
    assert errors(fmt, data) == []
    swapped = export_fleet(
        fmt, [(host(), findings()), (other, _second_host_findings())], generated_at=WHEN
    )
    assert swapped == data


@pytest.mark.parametrize("fmt", FORMATS)
def test_hostile_process_and_host_names_stay_inert(fmt: str) -> None:
    evil = ProcessRef(666, HOSTILE)
    data = export(fmt, host(hostname=HOSTILE, process=evil), findings(evil), generated_at=WHEN)
    text = data.decode()
    # No raw control, bidi override or newline from the name reaches the document: escapes do.
    assert not {"\x07", "\u202e"} & set(text)
    assert "\\x07" in text and "\\u202e" in text and "pid 666" in text
    if fmt == "oval":
        root = ET.fromstring(data)
        titles = [t.text or "" for t in root.iter(f"{{{OVAL}}}title")]
        assert titles and all(t.endswith('</oval>"]}\\x07\\u202e\\n<x y="z">&amp;') for t in titles)
        assert len(root.findall(f"{{{OVAL}}}definitions/*")) == len(findings()) - 1
    else:
        assert '</oval>\\"]}' in text
        assert errors(fmt, data) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_thousand_processes_are_counted_not_all_named(fmt: str) -> None:
    crowd = tuple(ProcessRef(pid, f"worker-{pid}") for pid in range(1000, 2000))
    finding = replace(by_cve("CVE-2024-0005"), processes=crowd)
    text = export(fmt, host(), [finding], generated_at=WHEN).decode()
    assert "worker-1019" in text and "worker-1020" not in text
    if fmt != "osv":
        assert "and 980 more" in text
    else:
        assert (
            json.loads(text)[0]["affected"][0]["ecosystem_specific"]["nonstop"]["process_count"]
            == 1000
        )


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_fixed_version_dpkg_would_refuse_is_refused_whole(fmt: str) -> None:
    bad = replace(by_cve("CVE-2024-0006"), fixed_version="1.0</x> ")
    with pytest.raises(ExportError, match="CVE-2024-0006: not a Debian version"):
        export(fmt, host(), [*findings(), bad], generated_at=WHEN)

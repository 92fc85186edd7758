"""OVAL definitions: which tests each finding gets (package, running kernel, live patch level).

The real scanner evaluates them in tests/cve/test_oval.py; here the structure.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest

from nonstop.cve.exports import ExportError, export
from nonstop.cve.model import Finding
from tests.cve.exports.hosts import BUILD_ID, WHEN, by_cve, findings, host, level
from tests.cve.oscap import OVAL

IND = OVAL + "#independent"
LINUX = OVAL + "#linux"


def _oval(found: list[Finding], **paths: str) -> ET.Element:
    return ET.fromstring(export("oval", host(), found, generated_at=WHEN, **paths))


def _by_id(root: ET.Element) -> dict[str, ET.Element]:
    return {e.get("id", ""): e for e in root.iter() if e.get("id")}


def _definition(root: ET.Element, cve: str) -> ET.Element:
    for definition in root.iter(f"{{{OVAL}}}definition"):
        if definition.find(f".//{{{OVAL}}}reference[@ref_id='{cve}']") is not None:
            return definition
    raise AssertionError(f"no definition for {cve}")


def _tested(root: ET.Element, criteria: ET.Element) -> list[tuple[str, str, str]]:
    """(object text, state value, state operation) of each criterion directly under CRITERIA."""
    items = _by_id(root)
    out = []
    for criterion in criteria.findall(f"{{{OVAL}}}criterion"):
        test = items[criterion.get("test_ref", "")]
        obj = items[next(c for c in test if c.tag.endswith("object")).get("object_ref", "")]
        states = [items[c.get("state_ref", "")] for c in test if c.tag.endswith("state")]
        value = states[0][0] if states else None
        text = obj.find(f"{{{IND}}}filepath")
        name = text if text is not None else obj.find(f"{{{LINUX}}}name")
        assert name is not None and test.get("check_existence") == "at_least_one_exists"
        out.append(
            (
                name.text or "",
                value.text or "" if value is not None else "",
                value.get("operation", "") if value is not None else "",
            )
        )
    return out


def test_not_affected_findings_get_no_definition() -> None:
    root = _oval(findings())
    refs = {r.get("ref_id") for r in root.iter(f"{{{OVAL}}}reference")}
    assert refs == {f.cve for f in findings()} - {"CVE-2024-0001"}


def test_a_live_patched_library_is_vulnerable_only_while_old_and_below_the_level() -> None:
    root = _oval(findings(), level_dir="/run/levels")
    definition = _definition(root, "CVE-2024-0003")
    assert definition.get("class") == "vulnerability"
    top = definition.find(f"{{{OVAL}}}criteria")
    assert top is not None and top.get("operator") == "AND"
    installed, applied = top.findall(f"{{{OVAL}}}criteria")
    assert installed.get("operator") == "OR"
    assert _tested(root, installed) == [
        ("expat", "0:2.5.0-1+deb12u2", "less than"),
        ("libexpat1", "0:2.5.0-1+deb12u2", "less than"),
    ]
    assert applied.get("negate") == "true"
    assert _tested(root, applied) == [(f"/run/levels/lib-{BUILD_ID}", "2", "greater than or equal")]


def test_a_kernel_finding_reads_the_running_kernel_and_its_enabled_livepatch() -> None:
    root = _oval(findings(), livepatch_dir="/sys/kernel/livepatch")
    top = _definition(root, "CVE-2024-0009").find(f"{{{OVAL}}}criteria")
    assert top is not None
    assert _tested(root, top) == [("/proc/version", "0:6.1.123-1", "less than")]
    applied = top.find(f"{{{OVAL}}}criteria[@negate='true']")
    assert applied is not None
    assert _tested(root, applied) == [
        ("/var/lib/nonstop/levels/kernel", "1", "greater than or equal"),
        ("/sys/kernel/livepatch/nonstop_6_1_0_28_l1/enabled", "1", "equals"),
    ]


def test_a_kernel_reboot_pending_is_the_running_kernel_test_alone() -> None:
    root = _oval(findings())
    top = _definition(root, "CVE-2024-0010").find(f"{{{OVAL}}}criteria")
    assert top is not None and len(top) == 1
    assert _tested(root, top) == [("/proc/version", "0:6.1.119-1", "less than")]


def test_an_available_bundle_is_tested_so_applying_it_needs_no_new_export() -> None:
    root = _oval(findings())
    applied = _definition(root, "CVE-2024-0006").find(f".//{{{OVAL}}}criteria[@negate='true']")
    assert applied is not None
    assert _tested(root, applied)[0][1:] == ("3", "greater than or equal")


def test_an_open_finding_without_fix_or_patch_is_the_package_test_alone() -> None:
    root = _oval(findings())
    top = _definition(root, "CVE-2024-0007").find(f"{{{OVAL}}}criteria")
    assert top is not None and len(top) == 1
    assert _tested(root, top[0]) == [("libxml2", "", "")]  # installed at any version


def test_shared_tests_appear_once_and_every_reference_resolves() -> None:
    root = _oval(findings())
    items = _by_id(root)
    ids = [e.get("id") for e in root.iter() if e.get("id")]
    assert len(ids) == len(set(ids))
    refs = [v for e in root.iter() for k, v in e.attrib.items() if k.endswith("_ref")]
    assert refs and all(ref in items for ref in refs)
    # Two expat findings with the same fixed version share their package tests.
    assert sum(1 for e in root.iter(f"{{{LINUX}}}dpkginfo_test")) < sum(
        1 for c in root.iter(f"{{{OVAL}}}criterion") if "installed" in c.get("comment", "")
    )


def test_a_kernel_module_name_that_is_not_one_is_refused() -> None:
    bad = replace(level(1, set(), kernel=True), kernel_module="../../../etc")
    with pytest.raises(ExportError, match="not a livepatch module name"):
        _oval([replace(by_cve("CVE-2024-0009"), live_patch=bad)])


def test_an_rpm_host_is_refused_in_one_line() -> None:
    with pytest.raises(ExportError, match="OVAL export reads dpkg; rhel:9 uses rpm"):
        export("oval", replace(host(), release="rhel:9"), findings(), generated_at=WHEN)

"""CSAF 2.0 VEX documents (profile ``csaf_vex``) for one host or many.

The product tree has one branch per host (``host_name``) holding the packages
its findings concern, each with its Package URL, so the same package on two
hosts is two products with their own status. A live patch is a product of
its own (vendor ``nonstop``, its level as ``patch_level``, its bundle digest
in its name), and the running state it makes is an ``installed_with``
relationship of that patch with the host's package: that combined product is
what ``product_status.fixed`` names for a live-patched CVE. The package alone
is never said to be fixed by a live patch.

One vulnerability per CVE (CSAF forbids two), listing every host's products.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from itertools import groupby
from typing import Any

from nonstop import __version__
from nonstop.cve.exports.subjects import (
    Package,
    Subject,
    inert,
    live_patch_text,
    stable_id,
    timestamp,
)
from nonstop.cve.model import LivePatchLevel, Status

PRODUCT_STATUS = {
    Status.NOT_AFFECTED: "known_not_affected",
    Status.FIXED_BY_PACKAGE: "fixed",
    Status.FIXED_BY_LIVE_PATCH: "fixed",
    Status.PARTLY_FIXED: "known_affected",
    Status.RESTART_NEEDED: "known_affected",
    Status.OPEN_FIX_AVAILABLE: "known_affected",
    Status.OPEN_NO_FIX: "known_affected",
    Status.UNDETERMINED: "under_investigation",
}
"""The ``product_status`` group each status puts the host's products in."""

NOT_AFFECTED_FLAG = "vulnerable_code_not_present"

Json = dict[str, Any]


class _Tree:
    """The product tree under construction: products by id, built once each."""

    def __init__(self) -> None:
        self.hosts: dict[tuple[str, str], dict[str, Json]] = defaultdict(dict)
        self.patches: dict[str, Json] = {}
        self.relationships: dict[str, Json] = {}

    def package(self, s: Subject, package: Package) -> str:
        """The id of PACKAGE as installed on S's host (added on first use)."""
        pid = "NS-" + stable_id(s.host.host_id, package.purl)[:20]
        product = {
            "product_id": pid,
            "name": _product_name(s, package),
            "product_identification_helper": {"purl": package.purl},
        }
        leaf: Json = {"category": "product_name", "name": inert(package.name)}
        if package.version is None:
            leaf["product"] = product
        else:
            version = {"category": "product_version", "name": inert(package.version)}
            leaf["branches"] = [version | {"product": product}]
        self.hosts[(s.host.host_id, s.hostname)][pid] = leaf
        return pid

    def live_patched(self, s: Subject, package: Package, level: LivePatchLevel) -> str:
        """The id of PACKAGE on S's host running with LEVEL applied (added on first use)."""
        patch = "NS-" + stable_id(level.target_key, level.level, level.bundle_sha256)[:20]
        self.patches[patch] = {
            "category": "product_name",
            "name": f"live patch for {inert(level.target_key)}",
            "branches": [
                {
                    "category": "patch_level",
                    "name": str(level.level),
                    "product": {"product_id": patch, "name": live_patch_text(level)},
                }
            ],
        }
        on_host = self.package(s, package)
        pid = "NS-" + stable_id(on_host, patch)[:20]
        self.relationships[pid] = {
            "category": "installed_with",
            "product_reference": patch,
            "relates_to_product_reference": on_host,
            "full_product_name": {
                "product_id": pid,
                "name": f"{_product_name(s, package)} with nonstop live patch level "
                f"{level.level} (bundle sha256 {level.bundle_sha256})",
            },
        }
        return pid

    def document(self, vendor: str) -> Json:
        hosts = [
            {
                "category": "host_name",
                "name": f"{hostname} ({inert(host_id)})",
                "branches": [leaves[pid] for pid in sorted(leaves)],
            }
            for (host_id, hostname), leaves in sorted(self.hosts.items())
        ]
        tree: Json = {"branches": [{"category": "vendor", "name": vendor, "branches": hosts}]}
        if self.patches:
            patches = [self.patches[pid] for pid in sorted(self.patches)]
            tree["branches"].append({"category": "vendor", "name": "nonstop", "branches": patches})
            tree["relationships"] = [self.relationships[pid] for pid in sorted(self.relationships)]
        return tree


def _product_name(s: Subject, package: Package) -> str:
    version = inert(package.version) if package.version is not None else "(version unknown)"
    return f"{inert(package.name)} {version} ({package.arch}) on {s.hostname}"


def _vulnerability(cve: str, group: Sequence[Subject], tree: _Tree) -> Json:
    statuses: dict[str, set[str]] = defaultdict(set)
    flagged: set[str] = set()
    remediations: list[Json] = []
    notes = []
    for s in group:
        f = s.finding
        if f.status is Status.FIXED_BY_LIVE_PATCH and f.live_patch:
            level = f.live_patch
            ids = sorted({tree.live_patched(s, p, level) for p in s.patched_packages})
        else:
            ids = sorted({tree.package(s, p) for p in s.packages})
        statuses[PRODUCT_STATUS[f.status]].update(ids)
        if f.status is Status.NOT_AFFECTED:
            flagged.update(ids)
        remediations += _remediations(s, ids)
        text = s.details()
        notes.append(
            {"category": "details", "title": f"{s.hostname}: {inert(f.source)}", "text": text}
        )
    vulnerability: Json = {
        "cve": cve,
        "notes": notes,
        "product_status": {group: sorted(ids) for group, ids in sorted(statuses.items())},
    }
    if flagged:
        vulnerability["flags"] = [{"label": NOT_AFFECTED_FLAG, "product_ids": sorted(flagged)}]
    if remediations:
        vulnerability["remediations"] = remediations
    return vulnerability


def _fix(details: str, ids: list[str], restart: str, restart_details: str = "") -> Json:
    """A vendor fix for products IDS, with the category of restart it takes to work."""
    required = {"category": restart} | ({"details": restart_details} if restart_details else {})
    return {
        "category": "vendor_fix",
        "details": details,
        "product_ids": ids,
        "restart_required": required,
    }


def _remediations(s: Subject, ids: list[str]) -> list[Json]:
    """What CSAF tells operators to do for S's products IDS, with the restart each needs."""
    f = s.finding
    if f.status is Status.FIXED_BY_LIVE_PATCH:
        return [_fix(f"Applied: {s.summary()}.", ids, "none")]
    if f.status in (Status.PARTLY_FIXED, Status.RESTART_NEEDED):
        restart = "machine" if f.kernel_reboot else "service"
        return [_fix(f"{s.summary()}: {s.restart_text()}.", ids, restart, s.restart_text())]
    if f.status is Status.OPEN_FIX_AVAILABLE:
        fixes = []
        if f.available_bundle:
            fixes.append(_fix(f"Apply {live_patch_text(f.available_bundle)}.", ids, "none"))
        if f.fixed_version:
            upgrade = s.upgrade_text(f.fixed_version)
            fixes.append(
                _fix(
                    upgrade[:1].upper() + upgrade[1:] + ".",
                    ids,
                    "machine" if s.kernel else "service",
                )
            )
        return fixes
    if f.status is Status.OPEN_NO_FIX:
        if f.nodsa:
            return [{"category": "no_fix_planned", "details": inert(f.nodsa), "product_ids": ids}]
        details = f"No fixed version of {inert(f.source)} in {inert(s.host.release)} yet."
        return [{"category": "none_available", "details": details, "product_ids": ids}]
    return []


def document(subjects: Sequence[Subject], *, generated_at: datetime, namespace: str) -> Json:
    """The CSAF VEX document stating SUBJECTS (one host's or a fleet's findings)."""
    tree = _Tree()
    ordered = sorted(subjects, key=lambda s: (s.finding.cve, s.host.host_id, s.finding.source))
    vulnerabilities = [
        _vulnerability(cve, list(group), tree)
        for cve, group in groupby(ordered, key=lambda s: s.finding.cve)
    ]
    vendors = sorted({s.host.release.partition(":")[0].capitalize() for s in subjects})
    product_tree = tree.document(" and ".join(vendors))
    hosts = sorted({s.hostname for s in subjects})
    when = timestamp(generated_at)
    about = hosts[0] if len(hosts) == 1 else f"{len(hosts)} hosts"
    return {
        "document": {
            "category": "csaf_vex",
            "csaf_version": "2.0",
            "lang": "en",
            "title": f"nonstop vulnerability status of {about}",
            "publisher": {"category": "user", "name": "nonstop", "namespace": namespace},
            "notes": [
                {
                    "category": "summary",
                    "title": "What this document states",
                    "text": "What each host runs, per CVE, as nonstop found it: packages "
                    "by their installed version, live patches by level and bundle digest.",
                }
            ],
            "tracking": {
                "id": "nonstop-vex-" + stable_id(product_tree, vulnerabilities)[:24],
                "status": "final",
                "version": "1",
                "initial_release_date": when,
                "current_release_date": when,
                "revision_history": [{"date": when, "number": "1", "summary": "Exported."}],
                "generator": {"engine": {"name": "nonstop", "version": __version__}, "date": when},
            },
        },
        "product_tree": product_tree,
        "vulnerabilities": vulnerabilities,
    }

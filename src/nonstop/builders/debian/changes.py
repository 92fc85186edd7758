"""The per-CVE plan of a Debian update: which patches fix which CVE, and what cannot be told.

The CVEs come in changelog order: entries oldest first, and in an entry in
the order its items name them; CVEs that only patches name follow, in series
order. Each CVE maps to the added or changed patches that name it (file name
or DEP-3 header, ``patches``), in series order. Nothing is guessed: a CVE
named by no patch, a patch naming no CVE or several, a removed patch, a
change outside ``debian/patches`` (a new upstream tarball, packaging files),
a patch whose diff does not read, and a CVE whose patches touch no library
code are written down as notes, for the CVE or for the whole update, as is a
version taken from the archive's pool instead of through apt's index.
"""

from __future__ import annotations

import filecmp
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nonstop.builders.debian.changelog import Entry, entries_between
from nonstop.builders.debian.patches import PatchChange, file_kind, series_changes
from nonstop.builders.debian.sources import SourcePackage
from nonstop.builders.errors import BuilderError

# debian/ files an update always changes, or that the series comparison covers.
_EXPECTED_DEBIAN_CHANGES = ("changelog", "patches/")


@dataclass
class CvePlan:
    """One CVE: the entries that name it, its patches and the files they touch, and notes."""

    cve: str
    entries: list[Entry] = field(default_factory=list)
    patches: list[PatchChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def closes(self) -> list[int]:
        return list(
            dict.fromkeys(
                bug
                for entry in self.entries
                for item in entry.items
                if self.cve in item.cves
                for bug in item.closes
            )
        )

    @property
    def files(self) -> list[str]:
        return list(dict.fromkeys(path for patch in self.patches for path in patch.files))

    @property
    def library_code(self) -> bool:
        return any(patch.library_code for patch in self.patches)


@dataclass
class Plan:
    """The plan from OLD to NEW: per-CVE plans, patches that name no CVE, and update-wide notes."""

    package: str
    old: SourcePackage
    new: SourcePackage
    entries: list[Entry]
    cves: list[CvePlan]
    unassigned: list[PatchChange]
    refreshed: list[str]
    notes: list[str]

    def only(self, wanted: list[str]) -> Plan:
        """This plan restricted to the CVEs in WANTED (each must be in the plan)."""
        known = {plan.cve for plan in self.cves}
        missing = [cve for cve in wanted if cve not in known]
        if missing:
            raise BuilderError(
                f"{', '.join(missing)} not in the update {self.old.version} -> "
                f"{self.new.version} (it names {', '.join(sorted(known)) or 'no CVE'})"
            )
        kept = [plan for plan in self.cves if plan.cve in wanted]
        return Plan(
            self.package, self.old, self.new, self.entries, kept,
            self.unassigned, self.refreshed, self.notes,
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.package,
            "from": self.old.version,
            "to": self.new.version,
            "entries": [
                {
                    "version": e.version,
                    "urgency": e.urgency,
                    "distribution": e.distribution,
                    "date": e.date,
                    "cves": e.cves,
                    "closes": e.closes,
                }
                for e in self.entries
            ],
            "cves": [
                {
                    "cve": plan.cve,
                    "versions": [e.version for e in plan.entries],
                    "urgency": [e.urgency for e in plan.entries],
                    "closes": plan.closes,
                    "patches": [_patch_json(p) for p in plan.patches],
                    "library_code": plan.library_code,
                    "notes": plan.notes,
                }
                for plan in self.cves
            ],
            "patches_without_cve": [_patch_json(p) for p in self.unassigned],
            "refreshed_patches": self.refreshed,
            "notes": self.notes,
        }


def _patch_json(change: PatchChange) -> dict[str, Any]:
    return {
        "name": change.name,
        "status": change.status,
        "strip": change.patch.strip,
        "cves": change.patch.cve_sources,
        "files": [{"path": path, "kind": file_kind(path)} for path in change.files],
        "library_code": change.library_code,
    }


def make_plan(old: SourcePackage, new: SourcePackage) -> Plan:
    """The plan of the update from OLD to NEW, two unpacked versions of one source package."""
    entries, old_listed = entries_between(
        new.tree / "debian" / "changelog", old.version, new.version
    )
    changes, refreshed = series_changes(
        old.tree / "debian" / "patches", new.tree / "debian" / "patches"
    )
    notes = [
        f"{source.package} {source.version} came {source.pool.describe()}"
        for source in (old, new)
        if source.pool is not None
    ]
    order = list(dict.fromkeys(cve for entry in entries for cve in entry.cves))
    for change in changes:
        if change.status != "removed":
            order += [cve for cve in change.patch.cves if cve not in order]
    plans = {cve: CvePlan(cve) for cve in order}
    for entry in entries:
        for cve in entry.cves:
            plans[cve].entries.append(entry)
    unassigned = []
    for change in changes:
        if change.patch.error and (change.status == "removed" or not change.patch.cves):
            notes.append(f"patch {change.name}: {change.patch.error}")  # else under its CVEs
        if change.status == "removed":
            names = ", ".join(change.patch.cves) or "no CVE"
            notes.append(
                f"patch {change.name} (naming {names}) was removed from the series: "
                "no CVE is mapped to a removal"
            )
            continue
        if not change.patch.cves:
            unassigned.append(change)
            notes.append(f"patch {change.name} ({change.status}) names no CVE")
            continue
        for cve in change.patch.cves:
            plans[cve].patches.append(change)
            if len(change.patch.cves) > 1:
                others = ", ".join(c for c in change.patch.cves if c != cve)
                plans[cve].notes.append(
                    f"patch {change.name} also names {others}: it is listed under each"
                )
    for plan in plans.values():
        _cve_notes(plan)
    notes += _outside_patches(old, new)
    if not old_listed:
        notes.append(
            f"the {new.version} changelog has no entry for {old.version} (another branch?): "
            "its entries are those newer than it by version order"
        )
    return Plan(new.package, old, new, entries, list(plans.values()), unassigned, refreshed, notes)


def _cve_notes(plan: CvePlan) -> None:
    if not plan.entries:
        plan.notes.append("no changelog entry of the update names it; only patches do")
    unread = [patch for patch in plan.patches if patch.patch.error]
    plan.notes += [f"patch {patch.name}: {patch.patch.error}" for patch in unread]
    if not plan.patches:
        plan.notes.append("no added or changed patch names it")
    elif not plan.library_code and not unread:
        kinds = sorted({file_kind(path) for path in plan.files})
        plan.notes.append(
            f"not library code: its patches' changes touch only {', '.join(kinds) or 'no'} files"
        )


def _outside_patches(old: SourcePackage, new: SourcePackage) -> list[str]:
    """Notes on the files the update changes outside debian/patches and debian/changelog."""
    notes = []
    debian = [
        path
        for path in _differing(old.tree / "debian", new.tree / "debian")
        if not path.startswith(_EXPECTED_DEBIAN_CHANGES) and path != "patches"
    ]
    if debian:
        notes.append(f"packaging files changed (no patch): debian/{', debian/'.join(debian)}")
    if old.upstream_tarballs != new.upstream_tarballs or old.format != new.format:
        upstream = [
            path
            for path in _differing(old.tree, new.tree)
            if path != "debian" and not path.startswith("debian/")
        ]
        if upstream:
            shown = ", ".join(upstream[:10]) + (", ..." if len(upstream) > 10 else "")
            notes.append(
                f"{len(upstream)} file{'s' if len(upstream) > 1 else ''} outside debian/ "
                "changed without a patch "
                f"(new upstream tarball or direct source change): {shown}"
            )
    return notes


def _differing(old: Path, new: Path, prefix: str = "") -> list[str]:
    """Relative paths of the files that differ between trees OLD and NEW (or are in one only)."""
    compared = filecmp.dircmp(old, new)
    found = [prefix + name for name in (*compared.left_only, *compared.right_only)]
    _, mismatch, errors = filecmp.cmpfiles(old, new, compared.common_files, shallow=False)
    found += [prefix + name for name in (*mismatch, *errors)]
    for name in compared.common_dirs:
        found += _differing(old / name, new / name, f"{prefix}{name}/")
    return sorted(found)

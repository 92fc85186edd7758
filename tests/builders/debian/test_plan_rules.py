"""The plan's rules on small synthetic packages: mapping, order, and every ambiguity note."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nonstop.builders.debian.changelog import closed_bugs, entries_between
from nonstop.builders.debian.changes import make_plan
from nonstop.builders.debian.command import render_text
from nonstop.builders.debian.patches import file_kind
from nonstop.builders.errors import BuilderError
from tests.builders.debian.synthetic import changelog_entry, make_source, patch_text

BASE = changelog_entry("1.0-1", ["Initial release."])
OLD_PATCHES = {
    "keep.patch": patch_text("Subject: keep", {"lib/keep.c": "kept"}),
    "gone.patch": patch_text("Subject: fix\nCVE: CVE-2020-0001", {"lib/gone.c": "x"}),
}


def plan_for(tmp_path: Path, entries: list[str], patches: dict[str, str], **new: dict[str, str]):
    old = make_source(tmp_path / "old", "1.0-1", [BASE], OLD_PATCHES)
    return make_plan(old, make_source(tmp_path / "new", "1.0-2", [*entries, BASE], patches, **new))


def by_cve(plan):
    return {cve.cve: cve for cve in plan.cves}


def test_cve_maps_to_patches_by_name_header_and_directory_in_changelog_order(tmp_path):
    entries = [
        changelog_entry("1.0-2", ["Fix CVE-2024-0003 (Closes: #1003)"], "high"),
        changelog_entry("1.0-1+deb1", ["Fix CVE-2024-0001.", "Fix CVE-2024-0002."]),
    ]
    patches = {
        **OLD_PATCHES,
        "CVE-2024-0001.patch": patch_text("Subject: bounds", {"lib/a.c": "a"}),
        "fix-b.patch": patch_text(
            "Description: b\nBug-Debian: https://security-tracker.debian.org/tracker/CVE-2024-0002",
            {"lib/b.c": "b"},
        ),
        "CVE-2024-0003/01-first.patch": patch_text("Subject: one", {"lib/c.c": "c"}),
        "CVE-2024-0003/02-second.patch": patch_text("Subject: two", {"lib/c.c": "d"}),
        # glib's patches give their CVE in a Bug-CVE field.
        "gstring-fix.patch": patch_text("Subject: s\nBug-CVE: CVE-2024-0002", {"lib/s.c": "s"}),
    }
    plan = plan_for(tmp_path, entries, patches)
    assert [cve.cve for cve in plan.cves] == ["CVE-2024-0001", "CVE-2024-0002", "CVE-2024-0003"]
    cves = by_cve(plan)
    assert [p.name for p in cves["CVE-2024-0001"].patches] == ["CVE-2024-0001.patch"]
    assert [p.name for p in cves["CVE-2024-0002"].patches] == ["fix-b.patch", "gstring-fix.patch"]
    assert [p.name for p in cves["CVE-2024-0003"].patches] == [
        "CVE-2024-0003/01-first.patch",
        "CVE-2024-0003/02-second.patch",
    ]
    assert cves["CVE-2024-0003"].closes == [1003]
    assert [e.urgency for e in cves["CVE-2024-0003"].entries] == ["high"]
    assert cves["CVE-2024-0003"].files == ["lib/c.c"]
    assert all(cve.library_code and not cve.notes for cve in plan.cves)


def test_every_ambiguity_is_a_note_not_a_guess(tmp_path):
    entries = [changelog_entry("1.0-2", ["Fix CVE-2024-0010.", "Fix CVE-2024-0011 and -0012."])]
    patches = {
        "keep.patch": OLD_PATCHES["keep.patch"],  # gone.patch is removed
        "both.patch": patch_text("CVE: CVE-2024-0011 CVE-2024-0012", {"lib/x.c": "x"}),
        "cleanup.patch": patch_text("Subject: tidy up", {"lib/y.c": "y"}),
        "CVE-2024-0013.patch": patch_text("Subject: test", {"tests/t.c": "t", "doc/a.md": "a"}),
    }
    plan = plan_for(
        tmp_path,
        entries,
        patches,
        upstream={"lib/parse.c": "new\n"},
        debian={"rules": "#!/usr/bin/make -f\n"},
    )
    cves = by_cve(plan)
    assert list(cves) == ["CVE-2024-0010", "CVE-2024-0011", "CVE-2024-0012", "CVE-2024-0013"]
    assert cves["CVE-2024-0010"].notes == ["no added or changed patch names it"]
    assert [p.name for p in cves["CVE-2024-0011"].patches] == ["both.patch"]
    assert cves["CVE-2024-0011"].notes == [
        "patch both.patch also names CVE-2024-0012: it is listed under each"
    ]
    assert cves["CVE-2024-0012"].notes == [
        "patch both.patch also names CVE-2024-0011: it is listed under each"
    ]
    assert not cves["CVE-2024-0013"].library_code
    assert cves["CVE-2024-0013"].notes == [
        "no changelog entry of the update names it; only patches do",
        "not library code: its patches' changes touch only doc, test files",
    ]
    # In the text, "not library code" labels only a CVE with patches: one without is refused.
    headers = [line for line in render_text(plan).splitlines() if line.startswith("CVE-")]
    assert headers[0] == "CVE-2024-0010" and headers[3] == "CVE-2024-0013  (not library code)"
    assert [p.name for p in plan.unassigned] == ["cleanup.patch"]
    assert plan.notes == [
        "patch cleanup.patch (added) names no CVE",
        "patch gone.patch (naming CVE-2020-0001) was removed from the series: "
        "no CVE is mapped to a removal",
        "packaging files changed (no patch): debian/rules",
        "1 file outside debian/ changed without a patch "
        "(new upstream tarball or direct source change): lib/parse.c",
    ]


def test_a_changed_patch_counts_only_files_whose_changes_differ(tmp_path):
    entries = [changelog_entry("1.0-2", ["Amend d/p/keep.patch for CVE-2024-0020."])]
    changed = {
        "keep.patch": patch_text(
            "Subject: keep\nCVE: CVE-2024-0020",
            {"lib/keep.c": "kept", "tests/keep.c": "new test"},
        ),
        "gone.patch": OLD_PATCHES["gone.patch"].replace("@@ -1,1 +1,1 @@", "@@ -7,1 +7,1 @@"),
    }
    plan = plan_for(tmp_path, entries, changed)
    (cve,) = plan.cves
    assert [(p.name, p.status) for p in cve.patches] == [("keep.patch", "changed")]
    assert cve.files == ["tests/keep.c"]
    assert not cve.library_code
    assert plan.refreshed == ["gone.patch"]  # other offsets, same changes
    assert plan.notes == []


def test_header_fields_outside_dep3_cve_fields_do_not_name_a_cve(tmp_path):
    header = "From: CVE-2024-0099 bot\nSubject: fix parse\nForwarded: CVE-2024-0098"
    plan = plan_for(
        tmp_path,
        [changelog_entry("1.0-2", ["Tidy."])],
        {"p.patch": patch_text(header, {"l.c": "x"})},
    )
    assert plan.cves == []
    assert [p.name for p in plan.unassigned] == ["p.patch"]


def test_plan_restricted_to_named_cves_and_unknown_cve_is_one_line(tmp_path):
    entries = [changelog_entry("1.0-2", ["Fix CVE-2024-0031.", "Fix CVE-2024-0032."])]
    patches = {
        "CVE-2024-0031.patch": patch_text("Subject: a", {"lib/a.c": "a"}),
        "CVE-2024-0032.patch": patch_text("Subject: b", {"lib/b.c": "b"}),
    }
    plan = plan_for(tmp_path, entries, patches)
    assert [c.cve for c in plan.only(["CVE-2024-0032"]).cves] == ["CVE-2024-0032"]
    with pytest.raises(
        BuilderError, match="^" + re.escape("CVE-2024-0099 not in the update 1.0-1 -> 1.0-2")
    ) as err:
        plan.only(["CVE-2024-0099"])
    assert "\n" not in str(err.value)


def test_changelog_entries_between_versions_oldest_first(tmp_path):
    path = tmp_path / "changelog"
    path.write_text(
        changelog_entry("1.3", ["Fix CVE-2024-0003."])
        + changelog_entry("1.2", ["Fix CVE-2024-0002."])
        + changelog_entry("1.1", ["Fix CVE-2024-0001."])
        + BASE
    )
    entries, listed = entries_between(path, "1.1", "1.3")
    assert ([e.version for e in entries], listed) == (["1.2", "1.3"], True)
    # --from need not be in the changelog: entries after it by version order.
    entries, listed = entries_between(path, "1.1~rc1", "1.3")
    assert ([e.version for e in entries], listed) == (["1.1", "1.2", "1.3"], False)
    with pytest.raises(BuilderError, match=re.escape("newest entry is 1.3, not 1.2")):
        entries_between(path, "1.0-1", "1.2")
    with pytest.raises(BuilderError, match=re.escape("--to 1.1 is not newer than --from 1.2")):
        entries_between(path, "1.2", "1.1")


def test_closed_bugs():
    assert closed_bugs("(Closes: #1107752, #1107755) closes: bug#42") == [1107752, 1107755, 42]


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("expat/lib/xmlparse.c", "source"),
        ("include/libxml/tree.h", "source"),
        ("expat/xmlwf/xmlfile.c", "tool"),
        ("expat/tests/runtests.c", "test"),
        ("runtest.c", "test"),
        ("testcatalog.c", "test"),
        ("result/schematron/cve-2025-49794_0", "test"),
        ("doc/reference.html", "doc"),
        ("README.md", "doc"),
        ("expat/Changes", "other"),
        ("Makefile.am", "build"),
        ("expat/CMakeLists.txt", "build"),
        ("python/libxml.c", "binding"),
        ("examples/elements.c", "example"),
    ],
)
def test_file_kind(path, kind):
    assert file_kind(path) == kind


def test_a_patch_that_cannot_be_read_is_a_note_and_nothing_outside_patches_is_read(tmp_path):
    (tmp_path / "secret.patch").write_text(patch_text("CVE: CVE-2024-0666", {"lib/s.c": "s"}))
    entries = [changelog_entry("1.0-2", ["Fix CVE-2024-0040."])]
    patches = {**OLD_PATCHES, "CVE-2024-0040.patch": "placeholder"}
    old = make_source(tmp_path / "old", "1.0-1", [BASE], OLD_PATCHES)
    new = make_source(tmp_path / "new", "1.0-2", [*entries, BASE], patches)
    series = new.tree / "debian" / "patches" / "series"
    series.write_text(series.read_text() + "../../../../../secret.patch\nmissing.patch\n")
    (new.tree / "debian" / "patches" / "CVE-2024-0040.patch").unlink()
    plan = make_plan(old, new)
    (cve,) = plan.cves  # CVE-2024-0666 of the file outside debian/patches was never read
    assert cve.cve == "CVE-2024-0040"
    assert cve.notes[0].startswith("patch CVE-2024-0040.patch: patch not found: ")
    assert len(cve.notes) == 1
    assert plan.notes[:2] == [
        "patch ../../../../../secret.patch: its name leaves debian/patches",
        "patch ../../../../../secret.patch (added) names no CVE",
    ]
    assert plan.notes[2].startswith("patch missing.patch: patch not found: ")


def test_a_from_version_missing_from_the_changelog_is_a_note(tmp_path):
    old = make_source(tmp_path / "old", "1.0-1~bpo1", [BASE], OLD_PATCHES)
    new = make_source(
        tmp_path / "new", "1.0-2", [changelog_entry("1.0-2", ["Tidy."]), BASE], OLD_PATCHES
    )
    assert make_plan(old, new).notes == [
        "the 1.0-2 changelog has no entry for 1.0-1~bpo1 (another branch?): "
        "its entries are those newer than it by version order"
    ]

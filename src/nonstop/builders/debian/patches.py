"""The ``debian/patches`` series of two versions: what changed, the CVEs named, the files touched.

A patch names a CVE in its file name (any component: ``CVE-2026-0992/01-x.patch``
counts) or in its DEP-3 header (the text before the diff: ``CVE:``,
``Bug-Debian:``, ``Bug-Debian-Security:``, ``Origin:``, ``Subject:``,
``Description:`` and its long description). A patch in both series whose
changes (added and removed lines, per file) are the same is only refreshed,
not changed. The files a patch touches come from its diff headers, minus the
series' ``-pN`` components (quilt's default: 1).

Library code or not is one path rule, ``file_kind``: a file under a test,
documentation, example, tool or binding directory (NON_LIBRARY_DIRS), or whose
name says it is a test program (``test*``, ``*test``, ``*tests``), or a
document, is not library code; build files (``Makefile.am``, ``configure.ac``,
``CMakeLists.txt``, ...) are "build"; C/C++/assembler sources and headers are
"source" and everything else "other". The rule sees paths only: a tool kept
among the library's sources (libxml2's ``xmllint.c``) counts as source until a
later step reads what the build links into the library.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from unidiff.errors import UnidiffParseError
from unidiff.patch import PatchSet

from nonstop.builders.errors import BuilderError
from nonstop.cve.ids import cve_ids
from nonstop.files import read_bounded

MAX_PATCH_BYTES = 32 * 1024 * 1024
"""Debian's largest patches (regenerated autotools files) are a few MB; past this is not one."""

NON_LIBRARY_DIRS = {
    **dict.fromkeys(("test", "tests", "testsuite", "testdata", "fuzz", "result"), "test"),
    **dict.fromkeys(("doc", "docs", "man", "documentation"), "doc"),
    **dict.fromkeys(("example", "examples", "demo", "demos"), "example"),
    **dict.fromkeys(("tools", "programs", "apps", "xmlwf"), "tool"),
    **dict.fromkeys(("python", "perl", "ruby", "bindings"), "binding"),
}
SOURCE_SUFFIXES = {".c", ".h", ".cc", ".cpp", ".cxx", ".hh", ".hpp", ".s", ".S", ".inc"}
DOC_SUFFIXES = {".md", ".rst", ".txt", ".html", ".xml", ".texi", ".1", ".3", ".5", ".8"}
BUILD_NAMES = re.compile(
    r"Makefile(\.am|\.in)?|configure(\.ac|\.in)?|CMakeLists\.txt|.*\.cmake|meson\.build|.*\.m4"
)
_TEST_PROGRAM = re.compile(r"(test.*|.*tests?)", re.IGNORECASE)
_HEADER_END = re.compile(r"(---|diff |Index: |--- |\+\+\+ |={4,})")
_FIELD = re.compile(r"([A-Za-z][A-Za-z0-9-]*):\s?(.*)")
# The DEP-3 fields whose CVE ids count (and Bug-CVE, which glib's patches use); free text counts
# as the description.
CVE_FIELDS = {
    "cve", "bug", "bug-cve", "bug-debian", "bug-debian-security", "origin", "subject", "description"
}  # fmt: skip


def file_kind(path: str) -> str:
    """``source``, ``build``, ``test``, ``doc``, ``example``, ``tool``, ``binding`` or ``other``."""
    parts = PurePosixPath(path).parts
    for directory in parts[:-1]:
        kind = NON_LIBRARY_DIRS.get(directory.lower())
        if kind:
            return kind
    name = PurePosixPath(path)
    if BUILD_NAMES.fullmatch(name.name):
        return "build"
    if name.suffix in SOURCE_SUFFIXES:
        return "test" if _TEST_PROGRAM.fullmatch(name.stem) else "source"
    if name.suffix.lower() in DOC_SUFFIXES or name.stem.upper() in ("README", "NEWS"):
        return "doc"
    return "other"


@dataclass(frozen=True)
class SeriesEntry:
    """One line of ``debian/patches/series``: the patch's name (a path under the dir) and -pN."""

    name: str
    strip: int


def read_series(patches_dir: Path) -> list[SeriesEntry]:
    """The series in order; empty if there is none (source format 1.0, or no patches)."""
    series = patches_dir / "series"
    if not series.exists():
        return []
    data = read_bounded(series, MAX_PATCH_BYTES, "series", BuilderError)
    lines = data.decode("latin-1").splitlines()
    entries = []
    for line in lines:
        words = line.split("#", 1)[0].split()
        if words:
            strip = next((int(w[2:]) for w in words[1:] if re.fullmatch(r"-p\d+", w)), 1)
            entries.append(SeriesEntry(words[0], strip))
    return entries


@dataclass(frozen=True)
class PatchFile:
    """One patch of a series, read: its DEP-3 CVEs (with where each was found) and its changes.

    CHANGES maps each file the patch touches to its added and removed lines.
    ERROR says why the diff could not be read (then CHANGES is empty).
    """

    name: str
    strip: int
    cve_sources: dict[str, list[str]]
    changes: dict[str, list[str]]
    digest: str = ""
    error: str = ""

    @property
    def cves(self) -> list[str]:
        return list(self.cve_sources)


def read_patch(patches_dir: Path, entry: SeriesEntry) -> PatchFile:
    """ENTRY's patch under PATCHES_DIR, read (see the module docstring).

    A name leading out of PATCHES_DIR (``..``, an absolute path, a symlink) is
    not read, nor a file past MAX_PATCH_BYTES: the patch then carries an error.
    """
    sources: dict[str, list[str]] = {}
    for part in PurePosixPath(entry.name).parts:
        for cve in cve_ids(part):
            sources.setdefault(cve, []).append("file name")
    path = patches_dir / entry.name
    if not path.resolve().is_relative_to(patches_dir.resolve()):
        return PatchFile(
            entry.name, entry.strip, sources, {}, error="its name leaves debian/patches"
        )
    try:
        data = read_bounded(path, MAX_PATCH_BYTES, "patch", BuilderError)
    except BuilderError as exc:
        return PatchFile(entry.name, entry.strip, sources, {}, error=str(exc))
    # Latin-1 maps every byte: a patch in any encoding reads, and ids and paths are ASCII.
    text = data.decode("latin-1")
    digest = hashlib.sha256(data).hexdigest()
    for where, line in _header_lines(text):
        if where in CVE_FIELDS:
            for cve in cve_ids(line):
                if where not in sources.setdefault(cve, []):
                    sources[cve].append(where)
    try:
        changes = _changes(PatchSet(text), entry.strip)
    except UnidiffParseError as exc:
        error = f"its diff does not parse: {exc}"
        return PatchFile(entry.name, entry.strip, sources, {}, digest, error)
    return PatchFile(entry.name, entry.strip, sources, changes, digest)


def _header_lines(text: str) -> list[tuple[str, str]]:
    """(field, line) of the DEP-3 header; a continuation or free line belongs to the last field."""
    found = []
    where = "description"
    for line in text.splitlines():
        if _HEADER_END.match(line):
            break
        field_match = _FIELD.match(line)
        if field_match and not line[0].isspace():
            where = field_match.group(1).lower()
        elif not line.strip():
            where = "description"  # a paragraph after a blank line is free text
        found.append((where, line))
    return found


def _changes(patch: PatchSet, strip: int) -> dict[str, list[str]]:
    changes: dict[str, list[str]] = {}
    for patched in patch:
        target = patched.source_file if patched.is_removed_file else patched.target_file
        parts = PurePosixPath(target).parts[strip:]
        path = "/".join(parts) if parts else target
        lines = [f"{line.line_type}{line.value}" for hunk in patched for line in hunk]
        changes.setdefault(path, []).extend(line for line in lines if line[:1] in ("+", "-"))
    return changes


@dataclass(frozen=True)
class PatchChange:
    """A patch the update added, changed or removed, and the files whose changes differ.

    For an added or removed patch FILES is every file it touches; for a changed
    one, only the files whose added or removed lines differ between versions.
    """

    patch: PatchFile
    status: str
    files: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.patch.name

    @property
    def library_code(self) -> bool:
        return any(file_kind(path) == "source" for path in self.files)


def series_changes(old_dir: Path, new_dir: Path) -> tuple[list[PatchChange], list[str]]:
    """The patches added or changed (in the new series' order) then removed, and refreshed ones.

    Refreshed patches (same changes, other offsets or context) are returned by
    name only: they change nothing a build would see.
    """
    old = {entry.name: entry for entry in read_series(old_dir)}
    changed: list[PatchChange] = []
    refreshed: list[str] = []
    new_names = set()
    for entry in read_series(new_dir):
        new_names.add(entry.name)
        patch = read_patch(new_dir, entry)
        if entry.name not in old:
            changed.append(PatchChange(patch, "added", tuple(patch.changes)))
            continue
        before = read_patch(old_dir, old[entry.name])
        if before.digest == patch.digest and not patch.error:
            continue
        files = tuple(
            path
            for path in dict.fromkeys([*before.changes, *patch.changes])
            if before.changes.get(path) != patch.changes.get(path)
        )
        if files or patch.error:
            changed.append(PatchChange(patch, "changed", files))
        else:
            refreshed.append(entry.name)
    for name, entry in old.items():
        if name not in new_names:
            patch = read_patch(old_dir, entry)
            changed.append(PatchChange(patch, "removed", tuple(patch.changes)))
    return changed, refreshed

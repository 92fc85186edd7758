"""What apt offers: deb-src entries (added where missing) and the source versions it serves.

``apt-get source`` needs a deb-src entry for every archive it fetches from.
A Debian machine is usually configured with binary (deb) entries only, in
``sources.list.d/debian.sources`` (deb822, containers and cloud images) or
``sources.list`` (one-line, the installer). ``enable_deb_src`` mirrors each
enabled deb entry of those two files as a deb-src entry in a file of its own
(``nonstop-deb-src.sources`` or ``.list``), unless a deb-src entry with the
same URI and suite exists already; it changes nothing when nothing is
missing, so it is safe to call before every fetch. Third-party repositories
are left alone: they often serve no sources, and their absence would only
make ``apt-get update`` report errors. ``archive_entries`` lists the same
files' entries with their components: where the archive's pool is.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from debian.deb822 import Deb822
from debian.debian_support import Version

from nonstop.builders import cache
from nonstop.builders.errors import BuilderError

APT_CONFIG = Path("/etc/apt")
OUTPUT_NAME = "nonstop-deb-src"


@dataclass(frozen=True)
class SourceEntry:
    """One apt source: its type (deb or deb-src), URI, suite and components."""

    kind: str
    uri: str
    suite: str
    components: tuple[str, ...] = ()


def _deb822_stanzas(path: Path) -> list[Deb822]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [s for s in Deb822.iter_paragraphs(text.splitlines()) if s.get("Types")]


def _stanza_entries(stanza: Deb822) -> list[SourceEntry]:
    if stanza.get("Enabled", "yes").strip().lower() == "no":
        return []
    components = tuple(stanza.get("Components", "").split())
    return [
        SourceEntry(kind, uri.rstrip("/"), suite, components)
        for kind in stanza["Types"].split()
        for uri in stanza.get("URIs", "").split()
        for suite in stanza.get("Suites", "").split()
    ]


def _one_line_entries(path: Path) -> list[tuple[SourceEntry, str]]:
    """The one-line entries of PATH with their lines: ``deb [options] URI SUITE COMPONENT...``."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    found = []
    for line in lines:
        words = line.split("#", 1)[0].split()
        if words and words[0] in ("deb", "deb-src"):
            rest = words[1:]
            if rest and rest[0].startswith("["):  # options end at the word ending with "]"
                while rest and not rest[0].endswith("]"):
                    rest = rest[1:]
                rest = rest[1:]
            if len(rest) >= 2:
                entry = SourceEntry(words[0], rest[0].rstrip("/"), rest[1], tuple(rest[2:]))
                found.append((entry, line.strip()))
    return found


def enable_deb_src(config: Path = APT_CONFIG, update: bool = True) -> bool:
    """Add the deb-src entries apt lacks (see the module docstring); True if it added any.

    Adding needs root; without it a missing entry is a BuilderError saying so.
    After a change ``apt-get update`` reads the new indexes (unless UPDATE is
    false); its errors about other repositories are not ours to fail on.
    """
    try:
        changes = _missing_deb_src(config)
    except OSError as exc:
        raise BuilderError(f"cannot read apt's sources: {exc.filename}: {exc.strerror}") from None
    if not changes:
        return False
    if os.geteuid() != 0:
        raise BuilderError(
            "apt has no deb-src entries for the Debian archive; run once as root so that "
            f"nonstop adds them ({', '.join(str(p) for p in changes)})"
        )
    for path, text in changes.items():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    if update:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
    return True


def _missing_deb_src(config: Path) -> dict[Path, str]:
    """Our files' wanted contents, for those that differ from what they hold now."""
    listd = config / "sources.list.d"
    deb822_out = listd / f"{OUTPUT_NAME}.sources"
    one_line_out = listd / f"{OUTPUT_NAME}.list"
    existing = _deb_src_keys(config, skip={deb822_out, one_line_out})

    stanzas = []
    for stanza in _deb822_stanzas(listd / "debian.sources"):
        entries = [e for e in _stanza_entries(stanza) if e.kind == "deb"]
        if entries and any((e.uri, e.suite) not in existing for e in entries):
            twin = Deb822(stanza)
            twin["Types"] = "deb-src"
            stanzas.append(str(twin).strip())
    lines = [
        "deb-src" + line[len("deb") :]
        for entry, line in _one_line_entries(config / "sources.list")
        if entry.kind == "deb" and (entry.uri, entry.suite) not in existing
    ]
    wanted = {
        deb822_out: "\n\n".join(stanzas) + "\n" if stanzas else None,
        one_line_out: "\n".join(lines) + "\n" if lines else None,
    }
    return {path: text for path, text in wanted.items() if text and _read(path) != text}


def archive_entries(config: Path = APT_CONFIG) -> list[SourceEntry]:
    """The enabled deb and deb-src entries of the Debian archive's two files, in file order."""
    listd = config / "sources.list.d"
    try:
        entries = [
            entry
            for stanza in _deb822_stanzas(listd / "debian.sources")
            for entry in _stanza_entries(stanza)
        ]
        entries += [entry for entry, _ in _one_line_entries(config / "sources.list")]
    except OSError as exc:
        raise BuilderError(f"cannot read apt's sources: {exc.filename}: {exc.strerror}") from None
    return [entry for entry in entries if entry.kind in ("deb", "deb-src")]


def _deb_src_keys(config: Path, skip: set[Path]) -> set[tuple[str, str]]:
    """(URI, suite) of every deb-src entry apt reads, outside the files in SKIP."""
    listd = config / "sources.list.d"
    keys: set[tuple[str, str]] = set()
    for path in sorted(listd.glob("*.sources")):
        if path not in skip:
            for stanza in _deb822_stanzas(path):
                keys.update(
                    (e.uri, e.suite) for e in _stanza_entries(stanza) if e.kind == "deb-src"
                )
    for path in [config / "sources.list", *sorted(listd.glob("*.list"))]:
        if path not in skip:
            keys.update((e.uri, e.suite) for e, _ in _one_line_entries(path) if e.kind == "deb-src")
    return keys


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def served_versions(package: str) -> list[Version]:
    """The versions of source package PACKAGE the archive serves, oldest first (maybe none)."""
    try:
        text = cache.run_tool(["apt-cache", "showsrc", "--only-source", package])
    except BuilderError:
        return []  # apt-cache fails when it knows no such source package
    versions = {
        Version(stanza["Version"])
        for stanza in Deb822.iter_paragraphs(text.splitlines())
        if stanza.get("Package") == package and stanza.get("Version")
    }
    return sorted(versions)

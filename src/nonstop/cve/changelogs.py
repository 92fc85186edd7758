"""Advisories from ``debian/changelog``: the CVEs a newer source version's entries say it fixes.

A third source that works with no tracker access: the configured Debian
archive's newer versions of the packages the fleet runs. Each changelog entry
that names a CVE (``nonstop.cve.ids``, shorthand included) fixes it in that
entry's version: the advisory is FIXED at the *earliest* entry naming it, so
a later entry that names it again (a test fixed, a regression amended) does
not move the fix. Given the installed version (``since``), only CVEs whose
earliest entry is newer are reported: those the upgrade would fix. The
changelog is parsed strictly by python-debian: a line that is no part of an
entry refuses the whole text.

The fetch takes a binary package at an exact version from the archive
(``apt-get download``, checked by apt against the archive's signed index)
into a temporary directory of the cache, reads
``/usr/share/doc/<package>/changelog.Debian.gz`` out of the ``.deb`` with
python-debian's ``DebFile`` (nothing is installed), and keeps only that text
in the cache, as ``<package>_<version>.changelog``. Every size is bounded.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import warnings
import zlib
from collections import Counter
from pathlib import Path

from debian.arfile import ArError
from debian.changelog import ChangeBlock, Changelog, ChangelogParseError
from debian.debfile import DebError, DebFile

from nonstop.cve import versions
from nonstop.cve.batch import PACKAGE_NAME, FeedBatch, batch
from nonstop.cve.errors import FeedError, shown
from nonstop.cve.ids import cve_ids
from nonstop.cve.model import Advisory, FeedState

FEED = "changelog"
LABEL = "changelog"

MAX_CHANGELOG_BYTES = 64 * 1024 * 1024
"""The longest Debian changelogs (the kernel's) are a few megabytes."""
MAX_COMPRESSED_BYTES = 16 * 1024 * 1024
MAX_DEB_BYTES = 1024 * 1024 * 1024
"""The largest .deb files (firmware, debug symbols) are some hundred megabytes."""
APT_TIMEOUT = 600.0
"""Seconds one apt command may take: a large .deb over a slow mirror."""


def changelog_advisories(
    text: str, release: str, *, since: str | None = None, source: str | None = None
) -> FeedBatch:
    """The CVEs TEXT's entries fix, for RELEASE (``debian:12``), each FIXED at the earliest
    entry naming it; with SINCE, only those fixed in entries newer than it. SOURCE, when
    given, must be the changelog's package. FeedError if TEXT is no changelog."""
    if not release.startswith("debian:"):
        raise FeedError(f"{release} is not a Debian release", feed=LABEL)
    name, entries = _entries(text)
    if source is not None and name != source:
        raise FeedError(f"the changelog is of {shown(name)}, not {source}", feed=LABEL)
    if since is not None:
        _checked(release, since, "the installed version")
    earliest: dict[str, str] = {}
    for text_version, block in reversed(entries):  # oldest first
        version = _checked(release, text_version, "an entry's version")
        for cve in cve_ids("\n".join(block.changes())):
            earliest.setdefault(cve, version)
    skipped: Counter[str] = Counter()
    advisories = []
    for cve, version in earliest.items():
        if since is not None and not versions.is_older(release, since, version):
            skipped[f"CVEs fixed at or before {since}"] += 1
            continue
        advisories.append(
            Advisory(
                cve=cve,
                source=name,
                release=release,
                state=FeedState.FIXED,
                fixed_version=version,
                feed=FEED,
            )
        )
    return batch(FEED, advisories, len(entries), skipped)


def _entries(text: str) -> tuple[str, list[tuple[str, ChangeBlock]]]:
    """TEXT's package, and its entries with their versions, newest first; parsed strictly
    (a stray line is a FeedError)."""
    if len(text) > MAX_CHANGELOG_BYTES:
        raise FeedError(f"longer than {MAX_CHANGELOG_BYTES} characters", feed=LABEL)
    try:
        with warnings.catch_warnings():  # old entries' odd dates and trailers are not ours
            warnings.simplefilter("ignore")
            blocks = list(Changelog(text, strict=True))
        # python-debian reads a heading's version on first use: a ValueError if it is none.
        entries = [(str(block.version), block) for block in blocks]
    except (ChangelogParseError, ValueError) as exc:
        raise FeedError(str(exc), feed=LABEL) from None
    if not blocks or not blocks[0].package:
        raise FeedError("no entry", feed=LABEL)
    return blocks[0].package, entries


def _checked(release: str, text: str, what: str) -> str:
    try:
        return versions.check(release, text)
    except versions.VersionError as exc:
        raise FeedError(f"{what}: {exc}", feed=LABEL) from None


# -- the fetch -------------------------------------------------------------------------


def archive_versions(package: str) -> list[str]:
    """The versions of binary PACKAGE the configured archive has (``apt-cache madison``),
    newest first; none when it has no such package."""
    _check_name(package)
    found = []
    for line in _apt(["apt-cache", "madison", package], package).splitlines():
        fields = [field.strip() for field in line.split("|")]
        if len(fields) == 3 and fields[0] == package and fields[2].endswith(" Packages"):
            found.append(fields[1])
    unique = list(dict.fromkeys(found))
    return sorted(unique, key=versions.debian_version, reverse=True)


def fetch_changelog(package: str, version: str, cache_dir: Path) -> str:
    """The ``changelog.Debian`` of binary PACKAGE at exactly VERSION, from CACHE_DIR or the
    archive (module docstring); FeedError if the archive does not have that version."""
    _check_name(package)
    _checked("debian", version, f"{package} {shown(version)}")
    cached = cache_dir / f"{package}_{version}.changelog"
    if cached.is_file():
        return cached.read_text()
    where = f"{package} {version}"
    have = archive_versions(package)
    wanted = versions.debian_version(version)
    exact = next((v for v in have if versions.debian_version(v) == wanted), None)
    if exact is None:
        if not have:
            problem = "the archive has no such package (apt-get update?)"
        else:
            problem = f"the archive does not have this version (it has {', '.join(have)})"
        raise FeedError(problem, feed=LABEL, where=where)
    cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".download-"))
    try:
        argv = ["apt-get", "download", "-q"]
        if os.geteuid() == 0:  # apt's _apt user cannot write into root's cache
            argv += ["-o", "APT::Sandbox::User=root"]
        _apt([*argv, f"{package}={exact}"], where, cwd=work)
        debs = list(work.glob("*.deb"))
        if len(debs) != 1:
            raise FeedError(
                f"apt-get download left {len(debs)} .deb files", feed=LABEL, where=where
            )
        text = read_deb_changelog(debs[0], package)
        partial = work / "changelog"
        partial.write_text(text)
        partial.replace(cached)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return text


def read_deb_changelog(deb: Path, package: str) -> str:
    """``/usr/share/doc/PACKAGE/changelog.Debian.gz`` of the .deb file DEB, as text."""
    where = deb.name
    try:
        if deb.stat().st_size > MAX_DEB_BYTES:
            raise FeedError(f"larger than {MAX_DEB_BYTES} bytes", feed=LABEL, where=where)
        package_file = DebFile(filename=deb)
        try:
            data = package_file.data.tgz()
            handle = data.extractfile(_changelog_member(data, package, where))
            assert handle is not None  # a regular file, checked there
            compressed = handle.read()
        finally:
            package_file.close()
    except (OSError, ArError, DebError, tarfile.TarError, EOFError) as exc:
        raise FeedError(f"not a .deb this reader takes: {exc}", feed=LABEL, where=where) from None
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(compressed)) as unzipped:
            raw = unzipped.read(MAX_CHANGELOG_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise FeedError(f"changelog.Debian.gz: {exc}", feed=LABEL, where=where) from None
    if len(raw) > MAX_CHANGELOG_BYTES:
        raise FeedError(
            f"changelog.Debian is longer than {MAX_CHANGELOG_BYTES} bytes", feed=LABEL, where=where
        )
    return raw.decode("utf-8", errors="replace")  # entries of the 1990s are often Latin-1


def _changelog_member(data: tarfile.TarFile, package: str, where: str) -> tarfile.TarInfo:
    doc = f"usr/share/doc/{package}"
    members = {member.name.removeprefix("./"): member for member in data.getmembers()}
    member = members.get(f"{doc}/changelog.Debian.gz")
    if member is None:
        link = members.get(doc)
        if link is not None and link.issym():
            raise FeedError(
                f"/{doc} is a link to {shown(link.linkname)}: the changelog is in the package "
                "that ships that directory",
                feed=LABEL,
                where=where,
            )
        raise FeedError(f"has no /{doc}/changelog.Debian.gz", feed=LABEL, where=where)
    if not member.isreg():
        raise FeedError(f"/{doc}/changelog.Debian.gz is not a file", feed=LABEL, where=where)
    if member.size > MAX_COMPRESSED_BYTES:
        raise FeedError(
            f"/{doc}/changelog.Debian.gz is larger than {MAX_COMPRESSED_BYTES} bytes",
            feed=LABEL,
            where=where,
        )
    return member


def _check_name(package: str) -> None:
    """Only a well-formed package name reaches apt's argv."""
    if not PACKAGE_NAME.fullmatch(package):
        raise FeedError(f"{shown(package)} is not a Debian package name", feed=LABEL)


def _apt(argv: list[str], where: str, cwd: Path | None = None) -> str:
    """ARGV's output; a FeedError with apt's first ``E:`` line (else its last line) if it fails.

    The Debian builder has the same rule in ``builders.cache.run_tool``, which this part
    may not import."""
    try:
        done = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=APT_TIMEOUT, check=False
        )
    except OSError as exc:
        raise FeedError(f"cannot run {argv[0]}: {exc.strerror}", feed=LABEL, where=where) from None
    except subprocess.TimeoutExpired:
        raise FeedError(
            f"{argv[0]} took more than {APT_TIMEOUT:.0f} s", feed=LABEL, where=where
        ) from None
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["no output"]
        detail = next((line for line in lines if line.startswith("E: ")), lines[-1])
        raise FeedError(f"{argv[0]} failed: {detail}", feed=LABEL, where=where)
    return done.stdout

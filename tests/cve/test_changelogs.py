"""Advisories from newer changelogs, and the changelog fetched out of a real .deb of the archive."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import pytest

from nonstop.cve import changelogs
from nonstop.cve.changelogs import (
    archive_versions,
    changelog_advisories,
    fetch_changelog,
    read_deb_changelog,
)
from nonstop.cve.errors import FeedError
from nonstop.cve.model import FeedState

FIXTURES = Path(__file__).parent.parent / "fixtures" / "cve" / "changelogs"
LIBXML2 = (FIXTURES / "libxml2.changelog").read_text()
ZLIB = (FIXTURES / "zlib.changelog").read_text()
U = "2.9.14+dfsg-1.3~deb12u"
# Pinned: the bookworm point release's expat, which apt serves while bookworm is stable.
EXPAT = "2.5.0-1+deb12u2"


def fixes(text: str, since: str | None = None) -> dict[str, str | None]:
    read = changelog_advisories(text, "debian:12", since=since)
    assert {(a.state, a.release, a.feed) for a in read.advisories} <= {
        (FeedState.FIXED, "debian:12", "changelog")
    }
    return {a.cve: a.fixed_version for a in read.advisories}


def test_each_cve_is_fixed_at_the_earliest_entry_naming_it() -> None:
    assert fixes(LIBXML2) == {
        "CVE-2025-6021": U + "3",
        "CVE-2025-6170": U + "3",  # "CVE-2025-6021 and -6170"
        "CVE-2025-49794": U + "3",
        "CVE-2025-49796": U + "3",  # named again by u6's test fix: the fix stays at u3
        "CVE-2025-7425": U + "4",  # amended in u5: the fix stays at u4
        "CVE-2025-9714": U + "5",
        "CVE-2026-0989": U + "6",
        "CVE-2026-0990": U + "6",
    }


def test_since_the_installed_version_only_what_the_upgrade_fixes() -> None:
    read = changelog_advisories(LIBXML2, "debian:12", since=U + "4", source="libxml2")
    assert [(a.cve, a.fixed_version) for a in read.advisories] == [
        ("CVE-2025-9714", U + "5"),
        ("CVE-2026-0989", U + "6"),
        ("CVE-2026-0990", U + "6"),
    ]
    assert read.records == 5
    assert read.skipped == {f"CVEs fixed at or before {U}4": 5}
    assert {a.source for a in read.advisories} == {"libxml2"}


def test_versions_compare_as_dpkg_does_epochs_and_tildes() -> None:
    # Without its epoch, 1.2.13.dfsg-1 is older than every 1:... entry.
    assert fixes(ZLIB, since="1.2.13.dfsg-1") == {
        "CVE-2018-25032": "1:1.2.11.dfsg-4",
        "CVE-2022-37434": "1:1.2.11.dfsg-4.1",
    }
    assert fixes(ZLIB, since="1:1.2.11.dfsg-4") == {"CVE-2022-37434": "1:1.2.11.dfsg-4.1"}
    assert fixes(ZLIB, since="1:1.2.11.dfsg-4.1~bpo1") == {"CVE-2022-37434": "1:1.2.11.dfsg-4.1"}
    assert fixes(LIBXML2, since="2.9.14+dfsg-1.3") == {}  # ~deb12uN sorts before -1.3


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        (LIBXML2, {"source": "expat"}, "changelog: the changelog is of 'libxml2', not expat"),
        (LIBXML2, {"release": "rhel:9"}, "changelog: rhel:9 is not a Debian release"),
        (
            LIBXML2,
            {"since": "2.9 14"},
            "changelog: the installed version: not a Debian version: '2.9 14'",
        ),
        ("", {}, "changelog: Could not parse changelog: Empty changelog file."),
        (
            "not a changelog\n",
            {},
            "changelog: Could not parse changelog: Unexpected line while looking for first "
            "heading: not a changelog",
        ),
        (
            LIBXML2.replace(" -- Jane Doe", "-- Jane Doe", 1),
            {},
            "changelog: Could not parse changelog: Unexpected line while looking for more "
            "change data or trailer: -- Jane Doe <jane@example.org>  Sun, 07 Jun 2026 17:53:53 "
            "+0200",
        ),
        (
            LIBXML2.replace("(2.9.14+dfsg-1.3~deb12u5)", "(2.9.14+dfsg-1.3~deb12u5!)"),
            {},
            "changelog: Invalid version string '2.9.14+dfsg-1.3~deb12u5!'",
        ),
    ],
)
def test_what_is_refused(text: str, kwargs: dict[str, str], message: str) -> None:
    release = kwargs.pop("release", "debian:12")
    with pytest.raises(FeedError) as refused:
        changelog_advisories(text, release, **kwargs)
    assert str(refused.value) == message


def test_a_changelog_too_long(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(changelogs, "MAX_CHANGELOG_BYTES", 100)
    with pytest.raises(FeedError, match=r"^changelog: longer than 100 characters$"):
        changelog_advisories(LIBXML2, "debian:12")


# -- .deb files ------------------------------------------------------------------------


def build_deb(tmp_path: Path, package: str, files: dict[str, bytes], links: dict[str, str]) -> Path:
    """A real .deb of PACKAGE (dpkg-deb) holding FILES and symbolic LINKS."""
    root = tmp_path / package
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 1.0-1\nArchitecture: all\n"
        "Maintainer: Jane Doe <jane@example.org>\nDescription: test package\n"
    )
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    for name, target in links.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(target)
    deb = tmp_path / f"{package}_1.0-1_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)],
        check=True,
        capture_output=True,
    )
    return deb


needs_dpkg_deb = pytest.mark.skipif(
    shutil.which("dpkg-deb") is None, reason="dpkg-deb missing (scripts/install-system-deps.sh)"
)


@needs_dpkg_deb
def test_the_changelog_out_of_a_deb(tmp_path: Path) -> None:
    doc = "usr/share/doc/demo/changelog.Debian.gz"
    deb = build_deb(tmp_path, "demo", {doc: gzip.compress(ZLIB.encode())}, {})
    assert read_deb_changelog(deb, "demo") == ZLIB


@needs_dpkg_deb
def test_debs_without_a_readable_changelog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    linked = build_deb(tmp_path, "demo-dev", {}, {"usr/share/doc/demo-dev": "demo"})
    none = build_deb(tmp_path, "demo-doc", {"usr/share/doc/demo-doc/copyright": b"x"}, {})
    junk = build_deb(tmp_path, "demo-bad", {"usr/share/doc/demo-bad/changelog.Debian.gz": b"x"}, {})
    big = build_deb(
        tmp_path, "demo-big", {"usr/share/doc/demo-big/changelog.Debian.gz": b"x" * 200}, {}
    )
    not_deb = tmp_path / "not.deb"
    not_deb.write_bytes(b"!<arch>\nnothing")
    cases = [
        (
            linked,
            "demo-dev",
            "changelog: demo-dev_1.0-1_all.deb: /usr/share/doc/demo-dev is a link to 'demo': "
            "the changelog is in the package that ships that directory",
        ),
        (
            none,
            "demo-doc",
            "changelog: demo-doc_1.0-1_all.deb: has no /usr/share/doc/demo-doc/changelog.Debian.gz",
        ),
        (
            junk,
            "demo-bad",
            "changelog: demo-bad_1.0-1_all.deb: changelog.Debian.gz: Not a gzipped file (b'x')",
        ),
        (
            big,
            "demo-big",
            "changelog: demo-big_1.0-1_all.deb: /usr/share/doc/demo-big/changelog.Debian.gz is "
            "larger than 100 bytes",
        ),
    ]
    monkeypatch.setattr(changelogs, "MAX_COMPRESSED_BYTES", 100)
    for deb, package, message in cases:
        with pytest.raises(FeedError) as refused:
            read_deb_changelog(deb, package)
        assert str(refused.value) == message
    with pytest.raises(FeedError, match=r"^changelog: not\.deb: not a \.deb this reader takes: "):
        read_deb_changelog(not_deb, "demo")


# -- the archive (apt) -----------------------------------------------------------------


@pytest.fixture(scope="module")
def apt() -> None:
    if shutil.which("apt-get") is None:
        pytest.skip(reason="apt-get missing: the changelog fetch needs a Debian machine")


def test_fetch_from_the_archive_and_the_cache(apt: None, tmp_path: Path, monkeypatch) -> None:
    assert EXPAT in archive_versions("libexpat1")
    text = fetch_changelog("libexpat1", EXPAT, tmp_path)
    assert text.startswith(f"expat ({EXPAT}) bookworm; urgency=medium\n")
    read = changelog_advisories(text, "debian:12", since="2.5.0-1+deb12u1", source="expat")
    assert {a.cve: a.fixed_version for a in read.advisories} == {
        "CVE-2023-52425": EXPAT,
        "CVE-2024-50602": EXPAT,
        "CVE-2024-8176": EXPAT,
    }
    older = changelog_advisories(text, "debian:12", since="2.5.0-1")
    assert {a.cve: a.fixed_version for a in older.advisories} == {
        "CVE-2024-45490": "2.5.0-1+deb12u1",
        "CVE-2024-45491": "2.5.0-1+deb12u1",
        "CVE-2024-45492": "2.5.0-1+deb12u1",
        "CVE-2023-52425": EXPAT,
        "CVE-2024-50602": EXPAT,
        "CVE-2024-8176": EXPAT,
    }
    assert [path.name for path in tmp_path.iterdir()] == [f"libexpat1_{EXPAT}.changelog"]
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # no apt: the cache answers
    assert fetch_changelog("libexpat1", EXPAT, tmp_path) == text


def test_what_the_archive_does_not_have(apt: None, tmp_path: Path) -> None:
    with pytest.raises(FeedError) as refused:
        fetch_changelog("libexpat1", "2.5.0-1+deb12u99", tmp_path)
    assert str(refused.value).startswith(
        "changelog: libexpat1 2.5.0-1+deb12u99: the archive does not have this version (it has "
    )
    assert EXPAT in str(refused.value)
    with pytest.raises(FeedError) as refused:
        fetch_changelog("nonstop-no-such-package", "1.0-1", tmp_path)
    assert str(refused.value) == (
        "changelog: nonstop-no-such-package 1.0-1: the archive has no such package "
        "(apt-get update?)"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("package", "version", "message"),
    [
        ("libexpat1;rm", EXPAT, "changelog: 'libexpat1;rm' is not a Debian package name"),
        ("-o", EXPAT, "changelog: '-o' is not a Debian package name"),
        ("libexpat1", "2.5 .0", "changelog: libexpat1 '2.5 .0': not a Debian version: '2.5 .0'"),
    ],
)
def test_names_and_versions_are_checked_before_apt_runs(
    tmp_path: Path, package: str, version: str, message: str
) -> None:
    with pytest.raises(FeedError) as refused:
        fetch_changelog(package, version, tmp_path)
    assert str(refused.value) == message


def test_apt_failures_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    fake = tools / "apt-cache"
    fake.write_text(
        "#!/bin/sh\necho 'W: warning first' >&2\necho 'E: The cache is broken' >&2\nexit 100\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tools))
    with pytest.raises(FeedError) as refused:
        archive_versions("libexpat1")
    assert str(refused.value) == "changelog: libexpat1: apt-cache failed: E: The cache is broken"
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    with pytest.raises(FeedError, match=r"^changelog: libexpat1: cannot run apt-cache: "):
        archive_versions("libexpat1")

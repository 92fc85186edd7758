"""Plans of real Debian updates fetched through apt, and the fetch's cache, offline and errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nonstop.builders.cache import cache_dir
from nonstop.builders.debian.apt import served_versions
from nonstop.builders.debian.changes import make_plan
from nonstop.builders.debian.sources import SourcePackage, fetch_source
from tests.builders.debian.conftest import (
    EXPAT_NEW,
    EXPAT_OLD,
    EXPAT_SIGNER,
    LIBXML2_NEW,
    LIBXML2_OLD,
    needs_apt,
)

NONSTOP = str(Path(sys.executable).parent / "nonstop")
U5, U6 = "2.9.14+dfsg-1.3~deb12u5", LIBXML2_NEW


def nonstop(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NONSTOP, "build", "debian", *argv], capture_output=True, text=True, env=env, check=False
    )


def test_libxml2_update_maps_each_cve_to_its_patch_files(
    libxml2: tuple[SourcePackage, SourcePackage],
) -> None:
    plan = make_plan(*libxml2)
    assert [e.version for e in plan.entries] == [U5, U6]
    cves = {cve.cve: cve for cve in plan.cves}
    # Changelog order: deb12u5's items, then deb12u6's ("CVE-2025-49794 and -49796" is two).
    assert list(cves) == [
        "CVE-2025-9714",
        "CVE-2025-7425",
        "CVE-2026-0989",
        "CVE-2026-0990",
        "CVE-2026-0992",
        "CVE-2025-8732",
        "CVE-2026-1757",
        "CVE-2025-49794",
        "CVE-2025-49796",
    ]
    patches = {cve: [(p.name, p.status) for p in plan.patches] for cve, plan in cves.items()}
    testcatalog = ("0034-testcatalog-Add-new-tests-for-catalog.c.patch", "added")
    assert patches == {
        "CVE-2025-9714": [("CVE-2025-9714.patch", "added")],
        "CVE-2025-7425": [("CVE-2025-7425.patch", "changed")],
        "CVE-2026-0989": [("CVE-2026-0989.patch", "added")],
        "CVE-2026-0990": [("CVE-2026-0990.patch", "added"), testcatalog],
        "CVE-2026-0992": [
            ("CVE-2026-0992/01-4af23b523.patch", "added"),
            ("CVE-2026-0992/02-096402c94.patch", "added"),
            testcatalog,
        ],
        "CVE-2025-8732": [("CVE-2025-8732.patch", "added")],
        "CVE-2026-1757": [("CVE-2026-1757.patch", "added")],
        "CVE-2025-49794": [("CVE-2025-49794_CVE-2025-49796.patch", "changed")],
        "CVE-2025-49796": [("CVE-2025-49794_CVE-2025-49796.patch", "changed")],
    }
    assert [e.urgency for e in cves["CVE-2025-9714"].entries] == ["high"]
    assert cves["CVE-2026-0989"].closes == [1125691]
    assert cves["CVE-2026-0990"].closes == [1125695]
    assert cves["CVE-2026-0992"].closes == [1125696]
    assert cves["CVE-2025-9714"].files == ["xpath.c"]
    # The amended patch: only the files whose changed lines differ between the versions.
    assert cves["CVE-2025-7425"].files == ["HTMLparser.c", "parser.c", "valid.c"]
    # deb12u6 only adds expected test results to the schematron patch: no library code.
    assert cves["CVE-2025-49794"].files == [
        "result/schematron/cve-2025-49794_0",
        "result/schematron/cve-2025-49796_0",
    ]
    assert [c for c, plan in cves.items() if not plan.library_code] == [
        "CVE-2025-49794",
        "CVE-2025-49796",
    ]
    assert cves["CVE-2025-49794"].notes == [
        "patch CVE-2025-49794_CVE-2025-49796.patch also names CVE-2025-49796: "
        "it is listed under each",
        "not library code: its patches' changes touch only test files",
    ]
    assert cves["CVE-2026-0990"].notes == [
        f"patch {testcatalog[0]} also names CVE-2026-0992: it is listed under each"
    ]
    assert [p.name for p in plan.unassigned] == [
        "0029-Fix-memory-leak-of-prefix-in-xmlTextWriterStartEleme.patch",
        "0036-use-duplicating-variant-in-relaxng-to-mitigate-UAF.patch",
        "0037-fix-memory-leak-in-issue-1054.patch",
        "0038-schematron-fix-additional-memory-leaks-on-error-path.patch",
        "0039-catalog-fix-stack-overflow-from-self-referencing-SGM.patch",
    ]
    assert plan.notes[-1] == "packaging files changed (no patch): debian/libxml2.symbols"
    # The cached tree is the upstream tree with debian/, its patches not applied.
    assert not (libxml2[1].tree / ".pc").exists()
    assert "xmlCatalogXMLResolveURI" in (libxml2[1].tree / "catalog.c").read_text()


def test_command_prints_the_plan_as_one_json_document_or_text(
    libxml2: tuple[SourcePackage, SourcePackage],
) -> None:
    versions = ["--from", LIBXML2_OLD, "--to", LIBXML2_NEW, "--plan"]
    done = nonstop("libxml2", *versions, "--json", "--cve", "CVE-2026-0992")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert (document["source"], document["from"], document["to"]) == (
        "libxml2",
        LIBXML2_OLD,
        LIBXML2_NEW,
    )
    assert [cve["cve"] for cve in document["cves"]] == ["CVE-2026-0992"]
    (cve,) = document["cves"]
    assert cve["versions"] == [U6] and cve["closes"] == [1125696]
    assert [p["name"] for p in cve["patches"]][:2] == [
        "CVE-2026-0992/01-4af23b523.patch",
        "CVE-2026-0992/02-096402c94.patch",
    ]
    assert cve["patches"][0]["cves"] == {"CVE-2026-0992": ["file name", "bug-debian-security"]}

    text = nonstop("libxml2", *versions, "--cve", "CVE-2025-49796")
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[2:6] == [
        "CVE-2025-49796  (not library code)",
        f"  version  {U6} (urgency high)",
        "  patch    CVE-2025-49794_CVE-2025-49796.patch (changed)",
        "  file     result/schematron/cve-2025-49794_0 (test)",
    ]

    no_key = nonstop("libxml2", "--from", LIBXML2_OLD, "--to", LIBXML2_NEW)
    assert no_key.returncode == 64
    assert "building needs --key KEY and -o OUTDIR (or --plan to only plan)" in no_key.stderr


def test_offline_after_a_fetch_reads_only_the_cache(
    libxml2: tuple[SourcePackage, SourcePackage],
) -> None:
    versions = ["--from", LIBXML2_OLD, "--to", LIBXML2_NEW, "--plan", "--json"]
    online = nonstop("libxml2", *versions, "--cache", str(cache_dir("debian")))
    # No apt-get, apt-cache or dpkg-source on PATH: offline must not need them.
    env = {**os.environ, "PATH": "/nonexistent"}
    offline = nonstop(
        "libxml2", *versions, "--offline", "--cache", str(cache_dir("debian")), env=env
    )
    assert online.returncode == 0, online.stderr
    assert offline.returncode == 0, offline.stderr
    assert offline.stderr == ""  # nothing fetched, nothing to report
    assert offline.stdout == online.stdout


def test_offline_with_an_empty_cache_is_one_line(tmp_path: Path) -> None:
    done = nonstop(
        "expat", "--from", EXPAT_OLD, "--to", "2.5.0-1+deb12u5", "--plan", "--offline",
        "--cache", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        f"nonstop build debian: error: expat {EXPAT_OLD} is not in the cache {tmp_path} "
        "(--offline; cached versions: none); run once without --offline to fetch it\n"
    )


def test_a_version_the_archive_does_not_serve_is_one_line_naming_those_it_serves(
    tmp_path: Path,
) -> None:
    needs_apt()
    done = nonstop(
        "expat", "--from", "2.5.0-1+deb12u99", "--to", "2.5.0-1+deb12u100", "--plan",
        "--cache", str(tmp_path),
    )  # fmt: skip
    served = served_versions("expat")
    assert EXPAT_OLD in [str(v) for v in served]
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        "nonstop build debian: error: the archive does not serve expat 2.5.0-1+deb12u99 (not in "
        f"apt's index nor in its pool); its index lists {', '.join(str(v) for v in served)}"
    )
    assert list(tmp_path.iterdir()) == [tmp_path / ".lock"]  # nothing half-fetched is left
    unknown = nonstop("no-such-source-xyz", "--from", "1.0-1", "--to", "1.0-2", "--plan")
    assert unknown.returncode == 1
    assert unknown.stderr.splitlines()[-1] == (
        "nonstop build debian: error: the archive serves no source package no-such-source-xyz "
        "(apt-get update?)"
    )


def test_a_version_only_the_pool_has_is_refused_when_its_signers_key_had_expired(
    tmp_path: Path,
) -> None:
    """expat deb12u3: signed by a Debian developer whose key, as Debian 12's keyring has it,
    expired before the signature; the run says so in one line and keeps nothing."""
    needs_apt()
    versions = ["--from", EXPAT_OLD, "--to", EXPAT_NEW, "--plan"]
    done = nonstop("expat", *versions, "--cache", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr.splitlines()[-3:] == [
        f"nonstop build debian: expat {EXPAT_NEW}: not in apt's index; looking in the archive's "
        "pool",
        f"nonstop build debian: expat {EXPAT_NEW}: found http://deb.debian.org/debian-security/"
        f"pool/updates/main/e/expat/expat_{EXPAT_NEW}.dsc; verifying its signature",
        f"nonstop build debian: error: expat_{EXPAT_NEW}.dsc was signed by Andrej Shadura "
        f"<andrew@shadura.me> (key {EXPAT_SIGNER}, debian-keyring.gpg) on 2026-08-31; the key "
        "expired on 2024-04-01, before the signature: refused (--trust-expired-key "
        f"{EXPAT_SIGNER} accepts this key)",
    ]
    assert not (tmp_path / f"expat_{EXPAT_NEW}").exists()


def test_a_pool_version_is_fetched_verified_and_then_read_offline_from_the_cache() -> None:
    needs_apt()
    versions = ["--from", EXPAT_OLD, "--to", EXPAT_NEW, "--plan", "--json"]
    trust = ["--trust-expired-key", EXPAT_SIGNER.lower()]  # any case
    online = nonstop("expat", *versions, *trust)
    assert online.returncode == 0, online.stderr
    plan = json.loads(online.stdout)
    assert plan["notes"][0] == (
        f"expat {EXPAT_NEW} came from the pool, not apt's index: http://deb.debian.org/"
        f"debian-security/pool/updates/main/e/expat/expat_{EXPAT_NEW}.dsc, signed by Andrej "
        f"Shadura <andrew@shadura.me> (key {EXPAT_SIGNER}, debian-keyring.gpg) on 2026-08-31; "
        "the key expired on 2024-04-01 (accepted by --trust-expired-key)"
    )
    assert "CVE-2026-72522" in [cve["cve"] for cve in plan["cves"]]
    env = {**os.environ, "PATH": "/nonexistent"}  # no apt, gpgv or network tool needed
    offline = nonstop("expat", *versions, *trust, "--offline", env=env)
    assert (offline.returncode, offline.stdout) == (0, online.stdout)
    # The operator's decision holds for one run: the cached copy needs it again.
    again = nonstop("expat", *versions, "--offline")
    assert again.returncode == 1
    assert again.stderr.endswith(
        f"after that expiry: refused (--trust-expired-key {EXPAT_SIGNER} accepts this key)\n"
    )


def test_the_newest_version_the_index_lists_is_planned_or_refused_in_one_line() -> None:
    """The index lists expat deb12u5 but the archive answered 404 for its source files when this
    was written; the pool is tried next. Whichever holds when the test runs, the command plans
    the update or says in one line what apt and the pool answered."""
    needs_apt()
    newest = str(served_versions("expat")[-1])
    done = nonstop("expat", "--from", EXPAT_OLD, "--to", newest, "--plan", "--json")
    if done.returncode == 0:
        assert json.loads(done.stdout)["to"] == newest
        return
    (line,) = [line for line in done.stderr.splitlines() if " error: " in line]
    apt_and_pool = line.startswith("nonstop build debian: error: apt-get source") and (
        line.endswith(f"; the archive's pool has no expat {newest} either")
    )
    assert apt_and_pool or f"expat_{newest}.dsc" in line  # or the pool's .dsc was refused


def test_a_fetch_is_cached_and_a_partial_entry_is_redone(tmp_path: Path) -> None:
    needs_apt()
    said: list[str] = []
    first = fetch_source("expat", EXPAT_OLD, tmp_path, progress=said.append)
    assert said == [
        f"expat {EXPAT_OLD}: downloading the source package (apt-get source)",
        f"expat {EXPAT_OLD}: unpacking expat_{EXPAT_OLD}.dsc (dpkg-source -x, patches not applied)",
    ]
    assert first.root == tmp_path / f"expat_{EXPAT_OLD}"
    assert first.format == "3.0 (quilt)"
    assert (first.tree / "debian" / "changelog").read_text().startswith(f"expat ({EXPAT_OLD})")
    assert (first.tree / "expat" / "lib" / "xmlparse.c").is_file()

    said.clear()
    assert fetch_source("expat", EXPAT_OLD, tmp_path, progress=said.append) == first
    assert said == []

    (first.root / "source.json").unlink()  # as if the fetch had been killed before its stamp
    (first.tree / "expat" / "lib" / "xmlparse.c").unlink()
    again = fetch_source("expat", EXPAT_OLD, tmp_path, progress=said.append)
    assert len(said) == 2 and (again.tree / "expat" / "lib" / "xmlparse.c").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".fetch-")] == []


@pytest.mark.parametrize(
    ("package", "version", "error"),
    [
        ("../etc", "1.0", "'../etc' is not a Debian source package name"),
        ("expat", "1.0/../../x", "'1.0/../../x' is not a Debian version"),
        ("expat", "-o", "'-o' is not a Debian version"),
    ],
)
def test_names_that_could_reach_a_path_or_argv_are_refused(
    tmp_path: Path, package: str, version: str, error: str
) -> None:
    done = nonstop(package, f"--from={version}", "--to", "9", "--plan", "--cache", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr == f"nonstop build debian: error: {error}\n"
    assert list(tmp_path.iterdir()) == []

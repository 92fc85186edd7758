"""`nonstop build debian` on real updates: per-CVE levels built, refused, applied live.

The updates are libxml2 2.9.14+dfsg-1.3~deb12u4 -> ~deb12u6 (nine CVEs) and
expat 2.5.0-1+deb12u2 -> deb12u3 (fifteen CVEs; deb12u3 only from the
archive's pool). Each is built once per session through the command line
(the original builds are cached in ``~/.cache/nonstop/debian``, so a later
session only builds levels). The bundles are applied to running programs that
use the archive's own ``--from`` libraries, unpacked from the .deb, and the
fixed functions are exercised before and after.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nonstop.builders.cache import cache_dir
from nonstop.builders.debian.original import BUILD_ROOT
from nonstop.bundle import TrustedKeys, open_bundle
from nonstop.bundle.identity import userspace_target_of
from tests.builders.debian.conftest import (
    EXPAT_NEW,
    EXPAT_OLD,
    EXPAT_SIGNER,
    LIBXML2_NEW,
    LIBXML2_OLD,
    needs_apt,
)
from tests.builders.debian.test_real_updates import nonstop
from tests.builders.driven import Driven
from tests.userspace import conftest as engine_tests
from tests.userspace.conftest import nonstopctl

agent_env = engine_tests.agent_env  # nonstopctl with a private config, as the engine's tests use

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "debian"
ARCHIVE_LIBRARY = (
    cache_dir("debian")
    / f"libxml2_{LIBXML2_OLD}"
    / "binaries/libxml2/usr/lib/x86_64-linux-gnu/libxml2.so.2.9.14"
)
BUILT = [
    "CVE-2025-9714",
    "CVE-2025-7425",
    "CVE-2026-0990",
    "CVE-2026-0992",
    "CVE-2025-8732",
    "CVE-2026-1757",
]


@dataclass(frozen=True)
class UpdateBuild:
    status: int
    report: dict[str, Any]
    stdout_report: dict[str, Any]
    outdir: Path
    keys: Path

    def cve(self, cve: str) -> dict[str, Any]:
        return next(entry for entry in self.report["cves"] if entry["cve"] == cve)

    def bundle(self, cve: str) -> Path:
        (level,) = self.cve(cve)["levels"]
        return Path(level["bundle"])


@pytest.fixture(scope="session")
def update(tmp_path_factory: pytest.TempPathFactory, key_dir: Path) -> UpdateBuild:
    """The whole update built once, signed with the tests' vendor key (agent_env trusts it)."""
    needs_apt()
    work = tmp_path_factory.mktemp("libxml2-update")
    done = nonstop(
        "libxml2", "--from", LIBXML2_OLD, "--to", LIBXML2_NEW,
        "--key", str(key_dir / "signing.key"), "-o", str(work / "out"),
        "--report", str(work / "report.json"), "--json",
    )  # fmt: skip
    assert done.stdout, done.stderr
    report = json.loads((work / "report.json").read_text())
    return UpdateBuild(done.returncode, report, json.loads(done.stdout), work / "out", key_dir)


def test_each_cve_is_built_refused_or_not_applicable_with_its_reason(update: UpdateBuild) -> None:
    assert update.status == 3  # some CVE was refused
    assert update.stdout_report == update.report
    statuses = {entry["cve"]: entry["status"] for entry in update.report["cves"]}
    assert statuses == {
        **dict.fromkeys(BUILT, "built"),
        "CVE-2026-0989": "refused",
        "CVE-2025-49794": "not-applicable",
        "CVE-2025-49796": "not-applicable",
    }
    # CVE-2026-0989 adds a member to a parser context struct that live code reads.
    refused = " ".join(update.cve("CVE-2026-0989")["reasons"])
    assert "struct _xmlRelaxNGParserCtxt: layout changed" in refused
    assert "only test files" in update.cve("CVE-2025-49794")["reasons"][0]
    # One library, one cumulative series: level N for the Nth CVE built.
    assert [update.cve(cve)["levels"][0]["level"] for cve in BUILT] == [1, 2, 3, 4, 5, 6]
    assert update.report["summary"] == {
        "built": 6,
        "refused": 1,
        "not_applicable": 2,
        "auto_build_rate": 0.86,
        "seconds": update.report["summary"]["seconds"],
    }
    (library,) = update.report["libraries"]
    assert library["build_id"] == userspace_target_of(ARCHIVE_LIBRARY).build_id


def test_bundles_name_the_archive_binary_the_update_and_every_cve_of_their_level(
    update: UpdateBuild,
) -> None:
    trusted = TrustedKeys.from_dir(update.keys)
    archive = userspace_target_of(ARCHIVE_LIBRARY, with_package=False)
    for number, cve in enumerate(BUILT, start=1):
        manifest = open_bundle(update.bundle(cve), trusted).manifest
        assert manifest.level == number
        assert manifest.target.build_id == archive.build_id
        assert manifest.update is not None
        assert (manifest.update.source, manifest.update.from_version) == ("libxml2", LIBXML2_OLD)
        assert manifest.update.to_version == LIBXML2_NEW
        assert manifest.cves == sorted(BUILT[:number])
        assert manifest.effective_version == f"{LIBXML2_OLD}+nonstop{number}"
    level1 = update.cve("CVE-2025-9714")["levels"][0]["functions"]
    assert "xmlXPathEval" in level1 and "xmlXPathCtxtCompile" in level1


@pytest.fixture(scope="session")
def xmlprobe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    program = tmp_path_factory.mktemp("xmlprobe") / "xmlprobe"
    subprocess.run(
        ["gcc", "-O1", "-I/usr/include/libxml2", "-o", str(program),
         str(FIXTURES / "xmlprobe.c"), "-lxml2"],
        check=True,
    )  # fmt: skip
    return program


@pytest.fixture
def probes(xmlprobe: Path) -> Iterator[Any]:
    started: list[Driven] = []

    def start() -> Driven:
        started.append(Driven(xmlprobe, ARCHIVE_LIBRARY))
        return started[-1]

    yield start
    for probe in started:
        probe.process.kill()
        probe.process.wait(timeout=10)


def lib_update(env: dict[str, str], bundle: Path, pid: int) -> dict[str, Any]:
    done = nonstopctl(env, "--lib-update", "--bundle", str(bundle), "--pid", str(pid), "--json")
    assert done.stdout, done.stderr
    (process,) = json.loads(done.stdout)["processes"]
    assert process["result"] == "patched", process
    return dict(process)


@pytest.mark.skipif(os.geteuid() != 0, reason="applying bundles live needs root (ptrace)")
def test_levels_fix_the_cves_in_a_process_running_the_archive_library(
    update: UpdateBuild, probes: Any, agent_env: dict[str, str], tmp_path: Path
) -> None:
    recursive = tmp_path / "recursive.sgml"
    recursive.write_text('CATALOG "recursive.sgml"\n')
    probe = probes()
    assert probe.maps(ARCHIVE_LIBRARY)
    # CVE-2025-9714: before the fix an evaluation resets the context's depth to 0.
    assert probe.ask("depth") == "depth 0"
    applied = lib_update(agent_env, update.bundle("CVE-2025-9714"), probe.pid)
    assert (applied["level_before"], applied["level_after"]) == (None, 1)
    assert probe.ask("depth") == "depth 5"

    # CVE-2025-8732: a catalog naming itself recursed until the stack overflowed.
    unpatched = probes()
    unpatched.stdin.write(f"catalog {recursive}\n")
    unpatched.stdin.flush()
    assert unpatched.process.wait(timeout=30) == -signal.SIGSEGV

    top = lib_update(agent_env, update.bundle("CVE-2026-1757"), probe.pid)
    assert (top["level_before"], top["level_after"]) == (1, 6)
    assert probe.ask(f"catalog {recursive}") == "catalog loaded"
    assert probe.ask("depth") == "depth 5"  # level 6 still carries level 1's fix
    assert probe.process.poll() is None


def test_a_second_run_reuses_the_original_build_offline(
    update: UpdateBuild, tmp_path: Path
) -> None:
    done = nonstop(
        "libxml2", "--from", LIBXML2_OLD, "--to", LIBXML2_NEW, "--cve", "CVE-2025-9714",
        "--key", str(update.keys / "signing.key"), "-o", str(tmp_path), "--offline", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["original_build"]["reused"] is True
    assert [entry["status"] for entry in report["cves"]] == ["built"]
    assert (tmp_path / "libxml2.so.2-level1.nsb").is_file()
    assert "dpkg-buildpackage" not in done.stderr and "apt-get" not in done.stderr


EXPAT_BUILT = [
    "CVE-2026-56403",
    "CVE-2026-56404",
    "CVE-2026-56405",
    "CVE-2026-56406",
    "CVE-2026-56407",
    "CVE-2026-72522",
]
EXPAT_LIBRARIES = cache_dir("debian") / f"expat_{EXPAT_OLD}" / "binaries/libexpat1"
LIBEXPAT = EXPAT_LIBRARIES / "lib/x86_64-linux-gnu/libexpat.so.1.8.10"
LIBEXPATW = EXPAT_LIBRARIES / "usr/lib/x86_64-linux-gnu/libexpatw.so.1.8.10"


@pytest.fixture(scope="session")
def expat_update(tmp_path_factory: pytest.TempPathFactory, key_dir: Path) -> UpdateBuild:
    """expat deb12u2 -> deb12u3 (from the pool, its signer's expired key accepted) built once."""
    needs_apt()
    work = tmp_path_factory.mktemp("expat-update")
    done = nonstop(
        "expat", "--from", EXPAT_OLD, "--to", EXPAT_NEW, "--trust-expired-key", EXPAT_SIGNER,
        "--key", str(key_dir / "signing.key"), "-o", str(work / "out"),
        "--report", str(work / "report.json"), "--json",
    )  # fmt: skip
    assert done.stdout, done.stderr
    report = json.loads((work / "report.json").read_text())
    return UpdateBuild(done.returncode, report, json.loads(done.stdout), work / "out", key_dir)


def test_expat_update_from_the_pool_is_built_refused_or_not_applicable_per_cve(
    expat_update: UpdateBuild,
) -> None:
    update = expat_update
    assert update.status == 3
    statuses = {entry["cve"]: entry["status"] for entry in update.report["cves"]}
    assert statuses == {
        **dict.fromkeys(EXPAT_BUILT, "built"),
        **dict.fromkeys(
            ["CVE-2026-50219", "CVE-2026-56131", "CVE-2026-56412", "CVE-2026-76957"], "refused"
        ),
        **dict.fromkeys(
            ["CVE-2026-56408", "CVE-2026-56409", "CVE-2026-56410", "CVE-2026-56411"],
            "not-applicable",
        ),
        "CVE-2024-8176": "not-applicable",
    }

    def why(cve: str) -> str:
        return " ".join(update.cve(cve)["reasons"])

    # The handler-depth counter is a new member of the parser struct live parsers lack.
    assert "struct XML_ParserStruct: layout changed (member m_handlerCallDepth added)" in why(
        "CVE-2026-50219"
    )
    # The guards built on it call functions only that refused CVE adds: refused before any
    # process sees them, not by a failing smoke test.
    assert "calls isCalledFromInsideHandler, which nothing in this tree declares" in why(
        "CVE-2026-56131"
    )
    assert "calls afterHandler, beforeHandler" in why("CVE-2026-56412")
    assert "does not apply" in why("CVE-2026-76957") and "CVE-2026-50219" in why("CVE-2026-76957")
    # copyString's new check is dead code where XML_Char is one byte: nothing new to ship.
    assert "compile to the code the shipped libraries run already" in why("CVE-2026-56408")
    assert "only tool files" in why("CVE-2026-56409")  # xmlwf
    # deb12u3 refreshed the CVE-2024-8176 patch deb12u2 already had: same effect.
    assert "change no file beyond the CVEs built before it" in why("CVE-2024-8176")

    # libexpat1 ships two libraries (UTF-8 and UTF-16 builds): one series each.
    libraries = {lib["soname"]: lib["build_id"] for lib in update.report["libraries"]}
    assert libraries == {
        "libexpat.so.1": userspace_target_of(LIBEXPAT).build_id,
        "libexpatw.so.1": userspace_target_of(LIBEXPATW).build_id,
    }
    for number, cve in enumerate(EXPAT_BUILT, start=1):
        levels = {level["soname"]: level["level"] for level in update.cve(cve)["levels"]}
        assert levels == {"libexpat.so.1": number, "libexpatw.so.1": number}
    assert update.report["summary"]["auto_build_rate"] == 0.6  # 6 of 10 library CVEs

    pool = update.report["sources"]["to"]["pool"]
    assert update.report["sources"]["from"]["origin"] == "apt"
    assert (pool["fingerprint"], pool["keyring"]) == (EXPAT_SIGNER, "debian-keyring.gpg")
    assert pool["trusted_expired_key"] is True
    assert [p.name for p in BUILD_ROOT.iterdir() if not p.is_dir()] == [".lock"]


@pytest.fixture(scope="session")
def expatprobes(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Path]:
    """The probe built for each library of libexpat1 (UTF-8, and UTF-16 with XML_UNICODE)."""
    directory = tmp_path_factory.mktemp("expatprobe")
    programs = {}
    for library, flags in ((LIBEXPAT, []), (LIBEXPATW, ["-DXML_UNICODE"])):
        program = directory / library.name.split(".")[0]
        subprocess.run(
            ["gcc", "-O1", *flags, "-o", str(program), str(FIXTURES / "expatprobe.c"),
             str(library)],
            check=True,
        )  # fmt: skip
        programs[library] = program
    return programs


@pytest.mark.skipif(os.geteuid() != 0, reason="applying bundles live needs root (ptrace)")
def test_expat_levels_fix_a_process_running_the_archive_libraries(
    expat_update: UpdateBuild,
    expatprobes: dict[Path, Path],
    agent_env: dict[str, str],
) -> None:
    """Every libexpat.so.1 fix deb12u3 lets us build guards a size of 2 GiB or more, which
    expat's own pools refuse to reach: the UTF-8 library is patched and still parses the
    same. The UTF-16 library of the same package shows CVE-2026-72522: before its level the
    UTF-16 copy of an attribute value drops a trailing low surrogate."""

    def bundle(soname: str, cve: str) -> Path:
        (level,) = [lv for lv in expat_update.cve(cve)["levels"] if lv["soname"] == soname]
        return Path(level["bundle"])

    names = "namespaces urn:e|doc urn:a|id urn:e|child"
    utf8 = Driven(expatprobes[LIBEXPAT], LIBEXPAT)
    utf16 = Driven(expatprobes[LIBEXPATW], LIBEXPATW)
    try:
        assert utf8.maps(LIBEXPAT) and utf16.maps(LIBEXPATW)
        assert utf8.answers(["namespaces", "surrogates"]) == [names, "truncated 0"]
        top = lib_update(agent_env, bundle("libexpat.so.1", "CVE-2026-72522"), utf8.pid)
        assert (top["level_before"], top["level_after"]) == (None, 6)
        assert "storeAtts" in top["functions"] and "addBinding" in top["functions"]
        assert utf8.answers(["namespaces", "surrogates"]) == [names, "truncated 0"]

        assert utf16.answers(["surrogates", "namespaces"]) == ["truncated 3", names]
        level5 = lib_update(agent_env, bundle("libexpatw.so.1", "CVE-2026-56407"), utf16.pid)
        assert level5["level_after"] == 5
        assert utf16.ask("surrogates") == "truncated 3"  # the levels before it do not fix it
        level6 = lib_update(agent_env, bundle("libexpatw.so.1", "CVE-2026-72522"), utf16.pid)
        assert (level6["level_before"], level6["level_after"]) == (5, 6)
        assert utf16.answers(["surrogates", "namespaces"]) == ["truncated 0", names]
        assert utf8.process.poll() is None and utf16.process.poll() is None
    finally:
        for probe in (utf8, utf16):
            probe.process.kill()
            probe.process.wait(timeout=10)

"""`nonstop build debian` on a real update: per-CVE levels built, refused, applied live.

The update is libxml2 2.9.14+dfsg-1.3~deb12u4 -> ~deb12u6 (nine CVEs). The
build runs once per session through the command line (the original build is
cached in ``~/.cache/nonstop/debian``, so a later session only builds levels).
Its bundles are applied to a running program that uses the archive's own
``--from`` library, unpacked from the .deb, and the fixed functions are
exercised before and after.
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
from nonstop.bundle import TrustedKeys, generate_keypair, open_bundle
from nonstop.bundle.identity import userspace_target_of
from tests.builders.debian.conftest import LIBXML2_NEW, LIBXML2_OLD, needs_apt
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


def test_expat_newest_update_builds_or_says_why_in_one_line(tmp_path: Path) -> None:
    """expat 2.5.0-1+deb12u2 -> the newest version the archive serves: when the archive cannot
    deliver that version's source (its security suite answers 404 for some), one line says so."""
    needs_apt()
    from nonstop.builders.debian.apt import served_versions

    newest = str(served_versions("expat")[-1])
    generate_keypair(tmp_path / "keys")
    done = nonstop(
        "expat", "--from", "2.5.0-1+deb12u2", "--to", newest,
        "--key", str(tmp_path / "keys" / "signing.key"), "-o", str(tmp_path / "out"), "--json",
    )  # fmt: skip
    if done.returncode == 1:
        (line,) = done.stderr.strip().splitlines()[-1:]
        assert line.startswith("nonstop build debian: error: apt-get source")
        assert f"expat={newest}" in line and "Failed to fetch" in line
        assert not (tmp_path / "out").exists()
        return
    report = json.loads(done.stdout)
    assert {entry["status"] for entry in report["cves"]} <= {"built", "refused", "not-applicable"}
    assert report["summary"]["built"] >= 1

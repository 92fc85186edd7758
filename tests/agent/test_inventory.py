"""What the agent reports at check-in: distribution (os-release of each supported family),
kernel identity, and the libraries of real running processes with packages and levels."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from nonstop.agent.client import ServerClient
from nonstop.agent.config import Blocklist
from nonstop.agent.host_info import detect_distro
from nonstop.agent.inventory import (
    LibraryFacts,
    collect,
    kernel_report,
    kernel_source_version,
    libraries_in_use,
    library_report,
)
from nonstop.agent.packages import installed_packages
from nonstop.bundle.identity import running_kernel_target
from nonstop.cve.package_lists import packages_digest
from nonstop.server.schemas import CheckinRequest, InstalledPackages
from nonstop.userspace import Engine, EngineOptions
from tests.agent.conftest import Admin, nsfix_build_id

OS_RELEASE = Path(__file__).parents[1] / "fixtures" / "os-release"
DISTROS = [
    ("debian-12", "debian", "12"),
    ("ubuntu-22.04", "ubuntu", "22.04"),
    ("rhel-9.4", "rhel", "9.4"),
    ("almalinux-9.4", "almalinux", "9.4"),
    ("rocky-8.10", "rocky", "8.10"),
    ("sles-15-sp5", "sles", "15.5"),
    ("opensuse-leap-15.6", "opensuse-leap", "15.6"),
    ("amzn-2", "amzn", "2"),
    ("amzn-2023", "amzn", "2023"),
]
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="reading other processes' maps: root")


def test_checkin_reports_each_distribution_as_the_server_records_it(patch_server, admin: Admin):
    key = admin.key()
    kernel = kernel_report(running_kernel_target(), None)
    for fixture, os_id, version in DISTROS:
        distro = detect_distro((OS_RELEASE / fixture,))
        body = collect(hostname=f"host-{fixture}", distro=distro, kernel=kernel, libraries=[])
        CheckinRequest.model_validate({"checkin_id": "0" * 32, **body})  # the API contract
        with ServerClient(patch_server.url) as client:
            registered = client.register(key["key"], f"host-{fixture}")
        with ServerClient(patch_server.url, token=registered.token) as client:
            client.check_in(registered.host_id, body)
        host = admin.host(registered.host_id)
        assert (host["distro_id"], host["distro_version"]) == (os_id, version), fixture
        assert host["kernel_release"] == kernel["release"]


@root_only
def test_libraries_of_running_processes_with_packages_and_levels(
    tmp_path, start_target, fixture_build, bundles, agent
):
    first = start_target(busy=0, sleepers=1)
    second = start_target(busy=0, sleepers=1)
    # Debian's python3 links libexpat.so.1 (package libexpat1) directly.
    python = subprocess.Popen(
        ["/usr/bin/python3", "-c", "import time; time.sleep(60)"], stdin=subprocess.DEVNULL
    )
    try:
        agent.json("--lib-update", "--bundle", str(bundles[1]), "--pid", str(first.pid))
        engine = Engine(EngineOptions(cache_dir=tmp_path / "elf"))
        uses = libraries_in_use(engine, Blocklist())
        nsfix = uses[nsfix_build_id(fixture_build)]
        assert {first.pid, second.pid} <= nsfix.pids
        assert nsfix.levels[first.pid] == 1 and nsfix.levels[second.pid] is None
        assert nsfix.applied_level is None  # one process still runs the unpatched code

        facts = LibraryFacts(tmp_path / "cache")
        report = {entry["build_id"]: entry for entry in library_report(uses, facts)}
        entry = report[nsfix.build_id]
        assert entry["soname"] == "libnsfix.so.1" and entry["package"] is None
        assert entry["processes"] == len(nsfix.pids) and entry["applied_level"] is None
        # The processes still running the unpatched code are named (pid and comm).
        assert {"pid": second.pid, "name": "nsfix_prog"} in entry["unpatched"]
        assert first.pid not in {process["pid"] for process in entry["unpatched"]}
        assert entry["deleted"] is False
        assert entry["partial_level"] == 1  # what the patched process runs
        expat = [e for e in report.values() if e["soname"] == "libexpat.so.1"]
        assert expat and expat[0]["package"]["name"] == "libexpat1"  # asked dpkg
        assert (tmp_path / "cache" / "inventory-libraries.json").exists()
        again = LibraryFacts(tmp_path / "cache")  # from the cache: no dpkg query needed
        assert again.of(expat[0]["build_id"])["package"] == expat[0]["package"]

        # Blocklisted processes do not hold the level down.
        blocked = libraries_in_use(engine, Blocklist(paths=(str(fixture_build.program),)))
        assert blocked[nsfix.build_id].applied_level is None
        assert not blocked[nsfix.build_id].levels
        agent.json("--lib-update", "--bundle", str(bundles[1]))
        assert libraries_in_use(engine, Blocklist())[nsfix.build_id].applied_level == 1
    finally:
        python.kill()
        python.wait()


@root_only
def test_a_library_replaced_on_disk_is_reported_deleted(
    tmp_path: Path, start_target, fixture_build
) -> None:
    """An upgrade replaces the file a process maps: the process runs an old copy."""
    copy = tmp_path / "copy"
    shutil.copytree(fixture_build.directory, copy)
    target = start_target(busy=0, sleepers=1, program=copy / "nsfix_prog")
    (copy / "libnsfix.so.1").unlink()
    uses = libraries_in_use(Engine(EngineOptions(cache_dir=tmp_path / "elf")), Blocklist())
    use = uses[nsfix_build_id(fixture_build)]
    assert target.pid in use.pids and use.deleted
    (entry,) = [
        e
        for e in library_report(uses, LibraryFacts(tmp_path / "cache"))
        if e["build_id"] == use.build_id
    ]
    assert entry["deleted"] is True and entry["path"] == str(copy / "libnsfix.so.1")


def test_installed_packages_are_dpkgs_with_their_source_packages() -> None:
    listed = installed_packages()
    assert listed is not None and listed.manager == "dpkg"
    assert listed.digest == packages_digest("dpkg", listed.rows)
    expat = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}\t${source:Version}", "libexpat1"],
        capture_output=True, text=True, check=True,
    ).stdout.split("\t")  # fmt: skip
    assert ("libexpat1", expat[0], "expat", expat[1], "amd64") in listed.rows
    assert listed.rows == sorted(set(listed.rows))
    # The API takes the list exactly as the agent sends it.
    section = {"manager": listed.manager, "digest": listed.digest, "items": listed.rows}
    assert InstalledPackages.model_validate(section).digest == listed.digest


@pytest.mark.parametrize(
    ("proc_version", "expected"),
    [
        (
            "Linux version 6.1.0-28-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian "
            "12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC "
            "Debian 6.1.119-1 (2024-11-22)",
            "6.1.119-1",
        ),
        ("Linux version 6.18.44 (builder@host) (gcc (GCC) 15.3.0) #1 SMP PREEMPT_DYNAMIC", None),
    ],
)
def test_the_kernel_source_version_is_read_from_proc_version(
    proc_version: str, expected: str | None
) -> None:
    assert kernel_source_version(proc_version) == expected

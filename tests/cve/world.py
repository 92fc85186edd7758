"""A small Debian 12 world for matching tests: the fixture's advisories and levels, and hosts.

``tests/fixtures/cve/bookworm.json`` holds expat, openssl and kernel advisories
in the tracker's shape and the levels published for one libexpat, libssl,
libcrypto and kernel build; ``host`` builds a host that installs them at the
versions a test names and runs what it names.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from nonstop.cve.index import AdvisoryIndex
from nonstop.cve.matching import HostAssessment, Matcher
from nonstop.cve.model import (
    Advisory,
    FeedState,
    Finding,
    HostState,
    InstalledPackage,
    LivePatchLevel,
    ProcessRef,
    RunningKernel,
    RunningLibrary,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "cve" / "bookworm.json"
RELEASE = "debian:12"

EXPAT_ID = "6b1c0e2f9a3d4c5b8e7f6a5b4c3d2e1f0a9b8c7d"
LIBSSL_ID = "0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e"
LIBCRYPTO_ID = "a1b2c3d4e5f60718293a4b5c6d7e8f9011223344"
KERNEL_TARGET = "kernel:6.1.0-28-amd64:4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e"

NGINX = ProcessRef(812, "nginx")
NGINX_WORKER = ProcessRef(813, "nginx")
APACHE = ProcessRef(1020, "apache2")
SSHD = ProcessRef(640, "sshd")
POSTFIX = ProcessRef(955, "master")


@cache
def world() -> tuple[tuple[Advisory, ...], tuple[LivePatchLevel, ...]]:
    document = json.loads(FIXTURE.read_text())
    advisories = tuple(
        Advisory(release=RELEASE, **{**record, "state": FeedState(record["state"])})
        for record in document["advisories"]
    )
    levels = tuple(
        LivePatchLevel(bundle_sha256=f"{n:064x}", **{**record, "cves": frozenset(record["cves"])})
        for n, record in enumerate(document["levels"], 1)
    )
    return advisories, levels


def matcher(*extra: Advisory, levels: tuple[LivePatchLevel, ...] | None = None) -> Matcher:
    """A matcher of the fixture's advisories plus EXTRA, with LEVELS (default: the fixture's)."""
    advisories, published = world()
    return Matcher(AdvisoryIndex((*advisories, *extra)), published if levels is None else levels)


def level(target: str, number: int) -> LivePatchLevel:
    return next(lv for lv in world()[1] if lv.target_key == target and lv.level == number)


def expat(version: str) -> tuple[InstalledPackage, ...]:
    return (InstalledPackage("libexpat1", version, "expat", version),)


def openssl(version: str, libcrypto: str | None = None) -> tuple[InstalledPackage, ...]:
    """libssl3 and openssl at VERSION; libcrypto3 at LIBCRYPTO (default: the same)."""
    return (
        InstalledPackage("libssl3", version, "openssl", version),
        InstalledPackage("libcrypto3", libcrypto or version, "openssl", libcrypto or version),
        InstalledPackage("openssl", version, "openssl", version),
    )


def images(*versions: str) -> tuple[InstalledPackage, ...]:
    """Signed kernel images (source linux-signed-amd64, binary version = linux's)."""
    return tuple(
        InstalledPackage(f"linux-image-6.1.0-{n}-amd64", v, "linux-signed-amd64", f"{v[:-2]}+1")
        for n, v in enumerate(versions, 28)
    )


def library(
    build_id: str,
    package: str,
    version: str,
    *processes: ProcessRef,
    level: int | None = None,
    unpatched: tuple[ProcessRef, ...] = (),
    deleted: bool = False,
) -> RunningLibrary:
    """A library mapped by PROCESSES; LEVEL applied in all but UNPATCHED."""
    soname = {"libexpat1": "libexpat.so.1", "libssl3": "libssl.so.3"}.get(package, "lib.so")
    return RunningLibrary(
        build_id=build_id,
        soname=soname,
        package=package,
        package_version=version,
        deleted=deleted,
        applied_level=None if unpatched else level,
        partial_level=level if unpatched else None,
        processes=processes,
        unpatched=unpatched,
    )


def kernel(version: str | None, applied: int | None = None) -> RunningKernel:
    return RunningKernel("6.1.0-28-amd64", version, KERNEL_TARGET, applied)


def host(
    packages: tuple[InstalledPackage, ...],
    libraries: tuple[RunningLibrary, ...] = (),
    running: RunningKernel | None = None,
    host_id: str = "h1",
) -> HostState:
    return HostState(host_id, f"{host_id}.example", RELEASE, packages, libraries, running)


def listed(assessment: HostAssessment) -> dict[str, Finding]:
    """CVE -> finding, of the listed findings."""
    return {f.cve: f for f in assessment.findings()}


def statuses(assessment: HostAssessment, source: str) -> dict[str, str]:
    """CVE -> status of SOURCE's findings, resolved ones included."""
    return {f.cve: f.status.value for f in assessment.source_findings(source, resolved=True)}

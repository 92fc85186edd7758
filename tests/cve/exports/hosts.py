"""A host and one finding per status, built by hand as matching would give them."""

from __future__ import annotations

from datetime import UTC, datetime

from nonstop.cve.model import (
    Finding,
    HostState,
    InstalledPackage,
    LivePatchLevel,
    ProcessRef,
    RunningKernel,
    RunningLibrary,
    Status,
)

WHEN = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
BUILD_ID = "4a1b0c2d3e4f5061728394a5b6c7d8e9f0a1b2c3"
KERNEL_KEY = "kernel:6.1.0-28-amd64:0f1e2d3c4b5a69788796a5b4c3d2e1f001122334"
HOSTILE = '</oval>"]}\x07\u202e\n<x y="z">&amp;'
"""A name another user could give a process or a host: markup, quotes, controls, bidi."""

NGINX = ProcessRef(412, "nginx")
PHP = ProcessRef(977, "php-fpm8.2")


def level(n: int, cves: set[str], *, kernel: bool = False) -> LivePatchLevel:
    """A published level N of the expat library (or the kernel) closing CVES."""
    return LivePatchLevel(
        target_key=KERNEL_KEY if kernel else f"userspace:{BUILD_ID}",
        level=n,
        cves=frozenset(cves),
        bundle_sha256=f"{n:02x}" * 32,
        effective_version="6.1.119-1+nonstop1" if kernel else "2.5.0-1+deb12u1+nonstop2",
        source="linux" if kernel else "expat",
        kernel_module=f"nonstop_6_1_0_28_l{n}" if kernel else None,
    )


def host(*, hostname: str = "web-1", process: ProcessRef = NGINX) -> HostState:
    """web-1: Debian 12 with expat 2.5.0-1+deb12u1 mapped by two processes, and kernel 6.1.119-1."""
    return HostState(
        host_id="h-0001",
        hostname=hostname,
        release="debian:12",
        packages=(
            InstalledPackage("libexpat1", "2.5.0-1+deb12u1", "expat", "2.5.0-1+deb12u1"),
            InstalledPackage("expat", "2.5.0-1+deb12u1", "expat", "2.5.0-1+deb12u1"),
            InstalledPackage("zlib1g", "1:1.2.13.dfsg-1", "zlib", "1:1.2.13.dfsg-1"),
            InstalledPackage(
                "libxml2", "2.9.14+dfsg-1.3~deb12u1", "libxml2", "2.9.14+dfsg-1.3~deb12u1"
            ),
        ),
        libraries=(
            RunningLibrary(
                BUILD_ID,
                "libexpat.so.1",
                "libexpat1",
                "2.5.0-1+deb12u1",
                applied_level=2,
                processes=(process, PHP),
            ),
        ),
        kernel=RunningKernel("6.1.0-28-amd64", "6.1.119-1", KERNEL_KEY, applied_level=1),
    )


def findings(process: ProcessRef = NGINX) -> list[Finding]:
    """One finding per status, each on its own CVE."""
    return [
        Finding("CVE-2024-0001", "zlib", Status.NOT_AFFECTED, "1:1.2.13.dfsg-1", "0"),
        Finding("CVE-2024-0002", "zlib", Status.FIXED_BY_PACKAGE, "1:1.2.13.dfsg-1", "1.2.11-1"),
        Finding(
            "CVE-2024-0003",
            "expat",
            Status.FIXED_BY_LIVE_PATCH,
            "2.5.0-1+deb12u1",
            "2.5.0-1+deb12u2",
            urgency="high",
            cvss=7.5,
            live_patch=level(2, {"CVE-2024-0003"}),
        ),
        Finding(
            "CVE-2024-0004",
            "expat",
            Status.PARTLY_FIXED,
            "2.5.0-1+deb12u1",
            "2.5.0-1+deb12u2",
            live_patch=level(2, {"CVE-2024-0004"}),
            processes=(process,),
        ),
        Finding(
            "CVE-2024-0005",
            "libxml2",
            Status.RESTART_NEEDED,
            "2.9.14+dfsg-1.3~deb12u1",
            "2.9.14+dfsg-1.3~deb12u1",
            processes=(process, PHP),
        ),
        Finding(
            "CVE-2024-0006",
            "expat",
            Status.OPEN_FIX_AVAILABLE,
            "2.5.0-1+deb12u1",
            "2.5.0-1+deb12u3",
            available_bundle=level(3, {"CVE-2024-0006"}),
        ),
        Finding(
            "CVE-2024-0007",
            "libxml2",
            Status.OPEN_NO_FIX,
            "2.9.14+dfsg-1.3~deb12u1",
            nodsa="Minor issue",
        ),
        Finding("CVE-2024-0008", "libxml2", Status.UNDETERMINED, "2.9.14+dfsg-1.3~deb12u1"),
        Finding(
            "CVE-2024-0009",
            "linux",
            Status.FIXED_BY_LIVE_PATCH,
            "6.1.119-1",
            "6.1.123-1",
            live_patch=level(1, {"CVE-2024-0009"}, kernel=True),
        ),
        Finding(
            "CVE-2024-0010",
            "linux",
            Status.RESTART_NEEDED,
            "6.1.119-1",
            "6.1.119-1",
            kernel_reboot=True,
        ),
    ]


def by_cve(cve: str) -> Finding:
    return next(f for f in findings() if f.cve == cve)

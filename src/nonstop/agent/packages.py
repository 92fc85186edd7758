"""The installed packages this host reports at check-in, read from dpkg (or rpm).

Each package comes with the source package it was built from, because
vulnerability feeds name source packages. The check-in carries the list's
digest every time and the list only when the server's last answer did not
acknowledge that digest (``nonstop.cve.package_lists``), so an unchanged host
sends 64 bytes instead of about 150 KB.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from nonstop.cve.model import InstalledPackage
from nonstop.cve.package_lists import MAX_PACKAGES, PackageRow, canonical_rows, packages_digest

_QUERY_TIMEOUT = 60
# What dpkg and rpm accept in names and versions; anything else is not reported.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9+._-]{0,199}")
_VERSION = re.compile(r"[A-Za-z0-9.+~:_-]{1,255}")
_ARCH = re.compile(r"[A-Za-z0-9_-]{1,32}")
# dpkg-query and rpm expand the \t and \n themselves.
_DPKG_FORMAT = (
    r"${db:Status-Abbrev}\t${Package}\t${Version}\t${source:Package}\t${source:Version}"
    r"\t${Architecture}\n"
)
_RPM_FORMAT = r"%{NAME}\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\t%{SOURCERPM}\t%{ARCH}\n"


@dataclass(frozen=True)
class PackageList:
    """The host's installed packages in canonical form, with their digest."""

    manager: str
    rows: list[PackageRow]
    digest: str


def installed_packages() -> PackageList | None:
    """The installed packages from dpkg, else rpm; None when neither answers."""
    for manager, read in (("dpkg", _dpkg_packages), ("rpm", _rpm_packages)):
        if shutil.which(f"{manager}-query" if manager == "dpkg" else manager) is None:
            continue
        packages = read()
        if packages:
            rows = canonical_rows(packages)[:MAX_PACKAGES]
            return PackageList(manager, rows, packages_digest(manager, rows))
    return None


def _output(argv: list[str]) -> str:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=_QUERY_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""


def _valid(name: str, version: str, source: str, source_version: str, arch: str) -> bool:
    return bool(
        _NAME.fullmatch(name)
        and _NAME.fullmatch(source)
        and _VERSION.fullmatch(version)
        and _VERSION.fullmatch(source_version)
        and _ARCH.fullmatch(arch)
    )


def _dpkg_packages() -> list[InstalledPackage]:
    found = []
    for line in _output(["dpkg-query", "-W", f"-f={_DPKG_FORMAT}"]).splitlines():
        fields = line.split("\t")
        # Status-Abbrev: desired, current, error; only what is installed now counts.
        if len(fields) != 6 or fields[0][1:2] != "i":
            continue
        _, name, version, source, source_version, arch = fields
        if _valid(name, version, source, source_version, arch):
            found.append(InstalledPackage(name, version, source, source_version, arch))
    return found


def _rpm_packages() -> list[InstalledPackage]:
    found = []
    for line in _output(["rpm", "-qa", "--qf", _RPM_FORMAT]).splitlines():
        fields = line.split("\t")
        if len(fields) != 4:
            continue
        name, version, source_rpm, arch = fields
        # openssl-3.0.7-27.el9.src.rpm: the source's name, version and release.
        source, _, source_release = source_rpm.removesuffix(".src.rpm").rpartition("-")
        source, _, source_version = source.rpartition("-")
        epoch, colon, _ = version.partition(":")
        if colon:
            source_version = f"{epoch}:{source_version}"
        full_source_version = f"{source_version}-{source_release}"
        if _valid(name, version, source, full_source_version, arch):
            found.append(InstalledPackage(name, version, source, full_source_version, arch))
    return found

"""The package part of a host's findings: what its installed packages alone are exposed to.

Advisories name source packages; hosts install binary packages. Each source
counts once, at the oldest source version any of its installed binaries was
built from. The result depends on the package list only, so the matcher
computes it once per distinct list (the server keeps lists deduplicated by
their digest, ``package_set_digest``) and every host with that list shares it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from nonstop.cve import counts
from nonstop.cve.index import AdvisoryIndex, Exposure
from nonstop.cve.model import InstalledPackage
from nonstop.cve.versions import is_older

KERNEL_IMAGE_PREFIX = "linux-image-"
"""Installed kernel images (and their metapackages, versioned like the image they pull)."""


def package_set_digest(packages: Iterable[InstalledPackage]) -> str:
    """SHA-256 of a package list in a canonical order: equal lists, equal digests."""
    lines = sorted(
        f"{p.name}\t{p.arch}\t{p.version}\t{p.source}\t{p.source_version}\n" for p in packages
    )
    return hashlib.sha256("".join(lines).encode()).hexdigest()


class PackageSet:
    """One distinct package list of one release, with the exposure of each source it installs."""

    __slots__ = ("_conflicts", "_names", "counts", "digest", "exposures", "kernel_image", "release")

    def __init__(
        self,
        index: AdvisoryIndex,
        release: str,
        packages: Iterable[InstalledPackage],
        digest: str | None,
        names: dict[str, str],
    ) -> None:
        """NAMES: binary package name -> source, shared by the package sets of RELEASE (a
        binary comes from the same source on nearly every host; the others keep their own)."""
        self.release = release
        self.digest = digest
        self._names = names
        self._conflicts: dict[str, str] = {}
        versions: dict[str, str] = {}
        images: list[str] = []
        for package in packages:
            source = package.source
            version = package.source_version
            seen = versions.get(source)
            if seen is None or (seen != version and is_older(release, version, seen)):
                versions[source] = version
            name = package.name
            known = names.setdefault(name, source)
            if known != source:
                self._conflicts[name] = source
            if name.startswith(KERNEL_IMAGE_PREFIX):
                images.append(package.version)
        self.exposures: dict[str, Exposure] = {}
        self.counts: counts.Counts = {}
        for source, version in versions.items():
            exposure = index.exposure(release, source, version)
            if exposure is not None:
                self.exposures[source] = exposure
                counts.add(self.counts, exposure.counts)
        self.kernel_image = _newest(release, images)
        """The newest installed kernel image's version: what the next boot runs."""

    def source_of(self, binary: str) -> str | None:
        """The source package of installed binary package BINARY."""
        return self._conflicts.get(binary) or self._names.get(binary)


def _newest(release: str, versions: list[str]) -> str | None:
    newest = None
    for version in versions:
        if newest is None or (version != newest and is_older(release, newest, version)):
            newest = version
    return newest

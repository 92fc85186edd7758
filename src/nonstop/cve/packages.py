"""The package part of a host's findings: what its installed packages alone are exposed to.

Advisories name source packages; hosts install binary packages. Each source
counts once, at the oldest source version any of its installed binaries was
built from. Running libraries are matched to a source through the binary
package that owns them (``PackageSet.sources_of``). The result depends on the
package list only, so the matcher computes it once per distinct list (the
server keeps lists deduplicated by their digest, ``package_lists.packages_digest``) and
every host with that list shares it.
"""

from __future__ import annotations

from collections.abc import Iterable

from nonstop.cve import counts
from nonstop.cve.index import AdvisoryIndex, Exposure
from nonstop.cve.model import InstalledPackage
from nonstop.cve.versions import is_older

KERNEL_IMAGE_PREFIX = "linux-image-"
"""Installed kernel images (and their metapackages, versioned like the image they pull)."""
MAX_BINARIES = 65536
"""Binary names a package set remembers the source of (hosts name them: untrusted)."""


class PackageSet:
    """One distinct package list of one release, with the exposure of each source it installs."""

    __slots__ = ("_binaries", "counts", "digest", "exposures", "kernel_image", "release")

    def __init__(
        self,
        index: AdvisoryIndex,
        release: str,
        packages: Iterable[InstalledPackage],
        digest: str | None,
        like: PackageSet | None = None,
    ) -> None:
        """LIKE: a package set that may share most sources at the same versions (the host's
        previous one, or the last one built): what they share is taken from it, not looked up
        and summed again."""
        self.release = release
        self.digest = digest
        versions: dict[str, str] = {}
        images: list[str] = []
        for package in packages:
            source = package.source
            version = package.source_version
            seen = versions.get(source)
            if seen is None or (seen != version and is_older(release, version, seen)):
                versions[source] = version
            if package.name.startswith(KERNEL_IMAGE_PREFIX):
                images.append(package.version)
        known = like.exposures if like is not None and like.release == release else {}
        exposures: dict[str, Exposure] = {}
        changed = []
        for source, version in versions.items():
            exposure = known.get(source)
            if exposure is None or exposure.version != version:
                exposure = index.exposure(release, source, version)
                if exposure is None:
                    continue
                changed.append(exposure)
            exposures[source] = exposure
        dropped = [e for source, e in known.items() if exposures.get(source) is not e]
        self.exposures: dict[str, Exposure] = exposures
        self.counts: counts.Counts
        if like is not None and len(changed) + len(dropped) < len(exposures):
            self.counts = _sum(like.counts, changed, dropped)
        else:
            self.counts = _sum({}, list(exposures.values()), [])
        self.kernel_image = _newest(release, images)
        """The newest installed kernel image's version: what the next boot runs."""
        self._binaries: dict[str, str | None] = {}

    def sources_of(
        self, binaries: Iterable[str], packages: Iterable[InstalledPackage]
    ) -> dict[str, str | None]:
        """Binary package name -> its source, for BINARIES (None: not installed). PACKAGES is
        this set's list, read only for a binary no host of this set has asked for before
        (running libraries name few binaries, and hosts of one set name the same ones)."""
        known = self._binaries
        missing = [binary for binary in binaries if binary not in known]
        if missing:
            if len(known) + len(missing) > MAX_BINARIES:
                known.clear()
            names = {package.name: package.source for package in packages}
            for binary in missing:
                known[binary] = names.get(binary)
        return known


def _sum(start: counts.Counts, added: list[Exposure], dropped: list[Exposure]) -> counts.Counts:
    """START's counts with ADDED's added and DROPPED's taken off."""
    summed = dict(start)
    get = summed.get
    for exposure in added:
        # Inlined counts.add: this runs for every source of every new package list.
        for key, number in exposure.counts.items():
            summed[key] = get(key, 0) + number
    for exposure in dropped:
        counts.add(summed, exposure.counts, -1)
    return summed


def _newest(release: str, versions: list[str]) -> str | None:
    newest = None
    for version in versions:
        if newest is None or (version != newest and is_older(release, newest, version)):
            newest = version
    return newest

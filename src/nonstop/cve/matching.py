"""Matching: one host's findings from the advisory index, its state and the published levels.

A host's findings are its package set's (``packages.PackageSet``: computed
once per distinct package list, shared by every host that has it), with the
sources its running kernel and mapped libraries touch replaced by
``running.SourcePart``s (computed once per shape of what runs, shared too,
only the processes a finding names filled in per host). So a host costs what
it runs, not what it installs, once its package list has been seen.

Findings of statuses in ``index.LISTED`` are kept; not-affected and
fixed-by-package verdicts are counted (``HostAssessment.counts``) and listed
only on request (``findings(resolved=True)``): a host has thousands.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import TypeVar

from nonstop.cve import counts
from nonstop.cve.index import AdvisoryIndex, Exposure
from nonstop.cve.levels import PublishedLevels, library_target
from nonstop.cve.model import Finding, HostState, InstalledPackage, LivePatchLevel, RunningLibrary
from nonstop.cve.packages import PackageSet
from nonstop.cve.running import LibraryPlan, SourcePart, kernel_part, library_shape
from nonstop.cve.versions import VersionError

MAX_PACKAGES = 100_000
"""Installed packages one host may report (a large Debian desktop has about 5,000)."""
MAX_LIBRARIES = 20_000
"""Mapped library files one host may report."""
PACKAGE_SETS = 8192
"""Package sets kept by digest, the least recently used dropped first."""
PLANS = 100_000
"""Running shapes kept (kernel and library plans) before the cache starts over."""

K = TypeVar("K")
T = TypeVar("T")


class HostError(ValueError):
    """A host state matching refuses (too large, or a version no package manager takes)."""


class HostAssessment:
    """One host's findings and counts."""

    __slots__ = ("counts", "host_id", "package_set", "parts")

    def __init__(self, host_id: str, package_set: PackageSet, parts: dict[str, SourcePart]):
        self.host_id = host_id
        self.package_set = package_set
        self.parts = parts
        """Source -> its findings changed by what runs (the kernel's, mapped libraries')."""
        summed = dict(package_set.counts)
        for source, part in parts.items():
            own = package_set.exposures.get(source)
            if own is not part.base:
                if own is not None:
                    counts.add(summed, own.counts, -1)
                counts.add(summed, part.base.counts)
            counts.add(summed, part.delta)
        self.counts: counts.Counts = summed
        """Findings per status and urgency, listed or not."""

    def sources(self) -> Iterator[str]:
        """Every source package with advisories on this host."""
        yield from self.package_set.exposures
        yield from (source for source in self.parts if source not in self.package_set.exposures)

    def view(self, source: str) -> tuple[Exposure | None, SourcePart | None]:
        """What SOURCE's findings come from: the same objects mean the same findings."""
        return self.package_set.exposures.get(source), self.parts.get(source)

    def base(self, source: str) -> Exposure | None:
        """SOURCE's exposure at the version that counts (the kernel's: the running one)."""
        exposure, part = self.view(source)
        return part.base if part else exposure

    def changed(self, source: str) -> Iterable[str]:
        """The CVEs of SOURCE whose finding what runs changed."""
        part = self.parts.get(source)
        return part.changes.keys() if part else ()

    def finding(self, source: str, cve: str) -> Finding | None:
        """SOURCE's listed finding on CVE, if any."""
        exposure, part = self.view(source)
        if part is not None:
            return part.finding(cve)
        return exposure.finding(cve) if exposure else None

    def source_findings(self, source: str, resolved: bool = False) -> Iterator[Finding]:
        exposure, part = self.view(source)
        if part is not None:
            yield from part.findings(resolved)
        elif exposure is not None:
            yield from exposure.findings(resolved)

    def findings(self, resolved: bool = False) -> Iterator[Finding]:
        """Every listed finding, by source (RESOLVED: every verdict's, thousands)."""
        for source in self.sources():
            yield from self.source_findings(source, resolved)

    def effective_versions(self) -> dict[str, str]:
        """Source -> its effective version, for sources live patches moved past the installed
        version (the kernel: the applied level's, what ``nonstopctl --uname`` reports)."""
        return {source: part.effective for source, part in self.parts.items() if part.effective}


class Matcher:
    """Assesses hosts against one advisory index and one set of published levels.

    It caches what hosts share (package sets by digest, kernel and library plans); a new
    index or new published levels need a new Matcher, and a recompute of the fleet.
    """

    def __init__(
        self, index: AdvisoryIndex, levels: PublishedLevels | Iterable[LivePatchLevel]
    ) -> None:
        self.index = index
        self.levels = levels if isinstance(levels, PublishedLevels) else PublishedLevels(levels)
        self._package_sets: OrderedDict[tuple[str, str | None], PackageSet] = OrderedDict()
        self._last: dict[str, PackageSet] = {}
        self._kernels: dict[tuple[object, ...], SourcePart] = {}
        self._reboots: dict[Exposure, dict[str, Finding]] = {}
        """Restart-needed findings by running kernel and CVE, shared by images and levels."""
        self._plans: dict[tuple[object, ...], LibraryPlan] = {}

    def has_package_set(self, release: str, digest: str) -> bool:
        """Whether the package set of DIGEST is cached (its packages need not be read)."""
        return (release, digest) in self._package_sets

    def package_set(
        self,
        release: str,
        packages: Iterable[InstalledPackage],
        digest: str | None = None,
        like: PackageSet | None = None,
    ) -> PackageSet:
        """The package part for PACKAGES, cached by DIGEST when given (the list's digest,
        ``package_lists.packages_digest``). A new one is built from LIKE (default: the last
        one built for RELEASE) and what differs from it."""
        key = (release, digest)
        cached = self._package_sets.get(key) if digest is not None else None
        if cached is not None:
            self._package_sets.move_to_end(key)
            return cached
        like = like or self._last.get(release)
        package_set = PackageSet(self.index, release, packages, digest, like)
        self._last[release] = package_set
        if digest is not None:
            self._package_sets[key] = package_set
            if len(self._package_sets) > PACKAGE_SETS:
                self._package_sets.popitem(last=False)
        return package_set

    def assess(
        self, host: HostState, digest: str | None = None, previous: PackageSet | None = None
    ) -> HostAssessment:
        """HOST's findings. DIGEST names its package list; PREVIOUS is the host's previous
        package set: taken as it is when its digest is DIGEST, else built on."""
        if len(host.packages) > MAX_PACKAGES or len(host.libraries) > MAX_LIBRARIES:
            raise HostError(
                f"host {host.host_id}: {len(host.packages)} packages and "
                f"{len(host.libraries)} libraries, more than matching takes "
                f"({MAX_PACKAGES} and {MAX_LIBRARIES})"
            )
        try:
            if previous is not None and digest is not None and previous.digest == digest:
                package_set = previous
            else:
                package_set = self.package_set(host.release, host.packages, digest, previous)
            parts = self._library_parts(host, package_set)
            kernel = self._kernel_part(host, package_set)
        except VersionError as error:
            raise HostError(f"host {host.host_id}: {error}") from None
        if kernel is not None:
            parts[kernel.base.advisories.source] = kernel
        return HostAssessment(host.host_id, package_set, parts)

    def _kernel_part(self, host: HostState, package_set: PackageSet) -> SourcePart | None:
        kernel = host.kernel
        if kernel is None:
            return None
        base = self.index.exposure(host.release, kernel.source, kernel.source_version)
        if base is None:
            return None
        key = (base, kernel.target_key, kernel.applied_level, package_set.kernel_image)
        part = self._kernels.get(key)
        if part is None:
            reboots = self._reboots.get(base)
            if reboots is None:
                reboots = {}
                _remember(self._reboots, base, reboots)
            part = kernel_part(
                base,
                kernel.target_key,
                kernel.applied_level,
                package_set.kernel_image,
                self.levels,
                reboots,
            )
            _remember(self._kernels, key, part)
        return part

    def _library_parts(self, host: HostState, package_set: PackageSet) -> dict[str, SourcePart]:
        levels = self.levels
        kernel_source = host.kernel.source if host.kernel else None
        relevant = []
        for library in host.libraries:
            if library.package is None:
                continue
            target = library_target(library.build_id)
            if library.deleted or levels.has(target):  # else nothing can change its word
                relevant.append((library, library.package, target))
        sources = package_set.sources_of((package for _, package, _ in relevant), host.packages)
        grouped: dict[str, list[tuple[RunningLibrary, str]]] = {}
        for library, package, target in relevant:
            source = sources[package]
            if source is not None and source != kernel_source:
                grouped.setdefault(source, []).append((library, target))
        parts = {}
        for source, running in grouped.items():
            base = package_set.exposures.get(source)
            if base is None:
                continue
            libraries = [library for library, _ in running]
            shapes = tuple(library_shape(lib, target, base.version) for lib, target in running)
            key = (base, shapes)
            plan = self._plans.get(key)
            if plan is None:
                plan = LibraryPlan(base, shapes, levels)
                _remember(self._plans, key, plan)
            if plan.entries:
                parts[source] = plan.part(base, libraries)
        return parts


def _remember(cache: dict[K, T], key: K, value: T) -> None:
    """Cache VALUE, starting over when CACHE is full (shapes come from hosts: untrusted)."""
    if len(cache) >= PLANS:
        cache.clear()
    cache[key] = value

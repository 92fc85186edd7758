"""What a host runs, laid over what its packages say: the running kernel and mapped libraries.

A source package's findings on one host are its installed version's exposure
(``index.Exposure``), with some CVEs changed by what runs (``SourcePart``):

- Libraries (matched to a source through the binary package owning them).
  A CVE the package leaves open is fixed by live patch when every library of
  the source whose target has a published level naming the CVE runs a level
  closing it in every process; partly fixed when only some processes do (the
  others are named); open with the bundle named when none does. Libraries
  with no level naming the CVE do not count against it, and with no such
  library the package decides. A CVE fixed on disk still runs in a replaced
  (deleted) older library's processes: restart needed, naming them, unless a
  live patch applied there closes it.
- The kernel, against its source's advisories at the running build's version:
  a CVE the running build has not fixed is fixed by live patch when the
  applied level closes it, else restart needed (``kernel_reboot``) when the
  newest installed image fixes it, else open with the bundle named when a
  published level closes it.

What a source's changes are depends only on the exposure and the shape of what
runs (targets, levels, deleted or not, patched in all, some or no processes),
which a fleet repeats: they are computed once per shape (``LibraryPlan``,
``kernel_part``) and only the processes a finding names are filled in per host.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

from nonstop.cve import counts
from nonstop.cve.index import LISTED, Exposure, Verdict
from nonstop.cve.levels import PublishedLevels
from nonstop.cve.model import Finding, LivePatchLevel, ProcessRef, RunningLibrary, Status

OPEN_BY_PACKAGE = frozenset({Status.OPEN_FIX_AVAILABLE, Status.OPEN_NO_FIX, Status.UNDETERMINED})
"""Package statuses a live patch can close."""


class SourcePart:
    """One source package's findings on one host: an exposure with the CVEs what runs changed."""

    __slots__ = ("base", "changes", "delta", "effective")

    def __init__(
        self,
        base: Exposure,
        changes: dict[str, Finding],
        delta: counts.Counts,
        effective: str | None,
    ) -> None:
        self.base = base
        self.changes = changes
        """CVE -> the finding that replaces the package's."""
        self.delta = delta
        """``base.counts`` + DELTA = this part's counts."""
        self.effective = effective
        """The effective version (docs/vulnerabilities.md), if anything runs patched."""

    def finding(self, cve: str) -> Finding | None:
        """CVE's finding, if listed."""
        return self.changes.get(cve) or self.base.finding(cve)

    def findings(self, resolved: bool = False) -> Iterator[Finding]:
        """The listed findings (with RESOLVED: every verdict's), changes applied."""
        changes = self.changes
        for finding in self.base.findings(resolved):
            yield changes.get(finding.cve, finding)
        if not resolved:
            by_cve = self.base.advisories.by_cve
            for cve, finding in changes.items():
                if self.base.status(by_cve[cve]) not in LISTED:
                    yield finding


class LibraryShape(NamedTuple):
    """What matching needs of one mapped library, processes left out (they vary per host)."""

    target: str
    deleted: bool
    replaced_version: str | None
    """A deleted library's older version, when known (not the installed one)."""
    level: int | None
    """The level applied in its patched processes."""
    everywhere: bool
    somewhere: bool


def library_shape(library: RunningLibrary, target: str, installed: str | None) -> LibraryShape:
    level = library.applied_level if library.applied_level is not None else library.partial_level
    everywhere = level is not None and library.applied_level is not None and not library.unpatched
    somewhere = everywhere or (
        level is not None
        and len(library.unpatched) < max(len(library.processes), library.process_count)
    )
    replaced = library.package_version if library.deleted else None
    return LibraryShape(
        target,
        library.deleted,
        None if replaced == installed else replaced,
        level,
        everywhere,
        somewhere,
    )


class _Entry(NamedTuple):
    verdict: Verdict
    status: Status
    live: LivePatchLevel | None
    shared: Finding | None
    """The finding, when it names no process (same on every host of this shape)."""
    named: tuple[tuple[int, bool], ...]
    """(library index, only its unpatched processes) whose processes the finding names."""


class LibraryPlan:
    """The changes mapped libraries of one shape make to one exposure."""

    __slots__ = ("delta", "effective", "entries")

    def __init__(
        self, base: Exposure, shapes: Sequence[LibraryShape], levels: PublishedLevels
    ) -> None:
        advisories = base.advisories
        candidates: dict[str, Verdict] = {}
        for shape in shapes:
            for cve in levels.cves(shape.target):
                verdict = advisories.by_cve.get(cve)
                if verdict is not None:
                    candidates[cve] = verdict
            if shape.deleted and base.position is not None:
                for rank in range(_replaced_position(base, shape), base.position):
                    candidates.update((v.cve, v) for v in advisories.by_rank[rank])
        entries = []
        for cve in sorted(candidates):
            entry = self._entry(base, shapes, levels, candidates[cve])
            if entry is not None:
                entries.append(entry)
        self.entries = tuple(entries)
        self.delta = _delta(base, [(entry.verdict, entry.status) for entry in self.entries])
        self.effective = _effective(base, self.entries)

    @staticmethod
    def _entry(
        base: Exposure, shapes: Sequence[LibraryShape], levels: PublishedLevels, verdict: Verdict
    ) -> _Entry | None:
        cve = verdict.cve
        package = base.status(verdict)
        if package is Status.FIXED_BY_PACKAGE:
            # Only replaced libraries older than the fix still run the flaw.
            running = [
                (i, s)
                for i, s in enumerate(shapes)
                if s.deleted and verdict.rank >= _replaced_position(base, s)
            ]
        elif package in OPEN_BY_PACKAGE:
            running = [(i, s) for i, s in enumerate(shapes) if levels.first_closing(s.target, cve)]
        else:
            return None
        if not running:
            return None
        live = None
        patched_somewhere = False
        named: list[tuple[int, bool]] = []
        for i, shape in running:
            if levels.closes(shape.target, shape.level, cve) and shape.somewhere:
                live = live or _applied(levels, shape.target, shape.level, cve)
                patched_somewhere = True
                if not shape.everywhere:
                    named.append((i, True))
            else:
                named.append((i, False))
        available = None
        if not named:
            status = Status.FIXED_BY_LIVE_PATCH
        elif package is Status.FIXED_BY_PACKAGE:
            status = Status.RESTART_NEEDED
        elif patched_somewhere:
            status = Status.PARTLY_FIXED
        else:
            status = Status.OPEN_FIX_AVAILABLE
            available = levels.first_closing(running[0][1].target, cve)
            named = []
        shared = None
        if not named:
            shared = verdict.finding(
                status, base.version, live_patch=live, available_bundle=available
            )
        return _Entry(verdict, status, live, shared, tuple(named))

    def part(self, base: Exposure, libraries: Sequence[RunningLibrary]) -> SourcePart:
        """This plan's changes for one host, whose LIBRARIES have this plan's shapes."""
        changes = {}
        for verdict, status, live, shared, named in self.entries:
            if shared is None:
                shared = verdict.finding(
                    status, base.version, live_patch=live, processes=_named(libraries, named)
                )
            changes[verdict.cve] = shared
        return SourcePart(base, changes, self.delta, self.effective)


def kernel_part(
    base: Exposure,
    target: str,
    applied: int | None,
    image: str | None,
    levels: PublishedLevels,
    reboots: dict[str, Finding],
) -> SourcePart:
    """The running kernel's findings: BASE is its source's exposure at the running version,
    APPLIED the level applied on TARGET, IMAGE the newest installed image's version. REBOOTS
    keeps BASE's restart-needed findings by CVE, shared by every image and level."""
    advisories = base.advisories
    candidates: dict[str, Verdict] = {}
    reboot = 0  # how many fixed versions the newest installed image has reached
    if base.position is not None and image is not None:
        reboot = advisories.position(image) or 0
        for rank in range(base.position, reboot):
            candidates.update((v.cve, v) for v in advisories.by_rank[rank])
    for cve in levels.cves(target):
        verdict = advisories.by_cve.get(cve)
        if verdict is not None and base.status(verdict) in OPEN_BY_PACKAGE:
            candidates[cve] = verdict
    changes = {}
    for cve, verdict in candidates.items():
        first = levels.first_closing(target, cve)
        if first is not None and applied is not None and first.level <= applied:
            live = _applied(levels, target, applied, cve)
            finding = verdict.finding(Status.FIXED_BY_LIVE_PATCH, base.version, live_patch=live)
        elif 0 <= verdict.rank < reboot:
            finding = reboots.get(cve) or reboots.setdefault(
                cve, verdict.finding(Status.RESTART_NEEDED, base.version, kernel_reboot=True)
            )
        else:
            finding = verdict.finding(
                Status.OPEN_FIX_AVAILABLE, base.version, available_bundle=first
            )
        changes[cve] = finding
    applied_level = None if applied is None else levels.level(target, applied)
    return SourcePart(
        base,
        changes,
        _delta(base, [(candidates[cve], f.status) for cve, f in changes.items()]),
        applied_level.effective_version if applied_level else None,
    )


def _replaced_position(base: Exposure, shape: LibraryShape) -> int:
    """How many fixed versions a replaced library had reached (0 when its version is unknown:
    it may predate every fix)."""
    if shape.replaced_version is None:
        return 0
    return base.advisories.position(shape.replaced_version) or 0


def _applied(
    levels: PublishedLevels, target: str, applied: int | None, cve: str
) -> LivePatchLevel | None:
    """The applied level's record, or the first level closing CVE if the applied one is not
    published (any later published level is cumulative)."""
    record = None if applied is None else levels.level(target, applied)
    return record or levels.first_closing(target, cve)


def _named(
    libraries: Sequence[RunningLibrary], named: tuple[tuple[int, bool], ...]
) -> tuple[ProcessRef, ...]:
    seen: set[int] = set()
    processes = []
    for index, only_unpatched in named:
        library = libraries[index]
        for process in library.unpatched if only_unpatched else library.processes:
            if process.pid not in seen:
                seen.add(process.pid)
                processes.append(process)
    return tuple(processes)


def _delta(base: Exposure, changed: Iterable[tuple[Verdict, Status]]) -> counts.Counts:
    """What CHANGED (verdicts with their new status) change in BASE's counts."""
    delta: counts.Counts = {}
    for verdict, status in changed:
        before = (base.status(verdict), verdict.urgency)
        after = (status, verdict.urgency)
        delta[before] = delta.get(before, 0) - 1
        delta[after] = delta.get(after, 0) + 1
    return {key: number for key, number in delta.items() if number}


def _effective(base: Exposure, entries: Sequence[_Entry]) -> str | None:
    """The newest fixed version whose fixes since the installed one are all live."""
    if base.position is None:
        return None
    live = {entry.verdict.cve for entry in entries if entry.status is Status.FIXED_BY_LIVE_PATCH}
    advisories = base.advisories
    effective = None
    for rank in range(base.position, len(advisories.fixed)):
        if not all(verdict.cve in live for verdict in advisories.by_rank[rank]):
            break
        effective = advisories.fixed[rank]
    return effective

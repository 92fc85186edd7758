"""The advisory index: every feed's records merged into one verdict per release, source and CVE.

Feeds are ranked (``FEED_PRECEDENCE``): the Debian security tracker is
authoritative for Debian, OSV derives from it, and newer-source changelogs and
bundle CVE lists know some fixes before the others do. For one release, source
package and CVE:

- the verdict is the first feed's in that order that says fixed, not affected
  or open (a feed that says undetermined knows nothing yet, so the next one
  speaks);
- when that word is open, a later feed that names a fixed version fills it in
  (the fix exists; the earlier feeds have not seen it yet). A later feed never
  overrules fixed or not affected;
- urgency, CVSS score, nodsa reason and description come from the first feed
  in that order that has each;
- ``Verdict.feeds`` names the feeds the state and fixed version rest on.

A malformed record refuses the whole batch (``AdvisoryError``), so an index is
never built from half a feed.

Per source package the distinct fixed versions are sorted once, each verdict
keeping its fixed version's rank: whether an installed version is fixed is then
one comparison of ranks, and each installed version is placed among the fixed
ones once. ``AdvisoryIndex.exposure`` computes, per release, source and
installed version, what that version is exposed to, and caches it: a fleet
repeats the same few thousand versions.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from nonstop.cve.counts import Counts
from nonstop.cve.model import Advisory, FeedState, Finding, Status
from nonstop.cve.versions import VersionError, debian_version, rpm_version, uses_rpm

FEED_PRECEDENCE = ("debian-tracker", "osv", "changelog", "bundles")
"""Feeds in the order their word counts; feeds not named here come after, by name."""

LISTED = frozenset(Status) - {Status.NOT_AFFECTED, Status.FIXED_BY_PACKAGE}
"""Statuses kept as findings; the others are counted (a host has thousands) and listed on
request (``Exposure.findings(resolved=True)``)."""

MAX_EXPOSURES = 500_000
"""Cached installed versions before the cache starts over (hosts report versions: untrusted)."""

_CVE_ID = re.compile(r"[A-Za-z][A-Za-z0-9]*-[0-9A-Za-z-]{1,60}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_~-]{0,199}")
_RELEASE = re.compile(r"[a-z0-9_.-]{1,40}:[a-z0-9_.-]{1,40}")
_MAX_TEXT = {"urgency": 64, "nodsa": 2048, "description": 16384, "feed": 64}
_STATE_STATUS = {
    FeedState.NOT_AFFECTED: Status.NOT_AFFECTED,
    FeedState.OPEN: Status.OPEN_NO_FIX,
    FeedState.UNDETERMINED: Status.UNDETERMINED,
}


class AdvisoryError(ValueError):
    """A feed record the index refuses; the whole batch is refused with it."""


class Verdict:
    """The merged word of every feed on one CVE in one source package of one release."""

    __slots__ = (
        "cve",
        "cvss",
        "description",
        "feeds",
        "fixed_version",
        "nodsa",
        "rank",
        "source",
        "state",
        "urgency",
    )

    def __init__(self, records: list[Advisory]) -> None:
        """RECORDS: one per feed, in precedence order (see the module docstring)."""
        lead = next((r for r in records if r.state is not FeedState.UNDETERMINED), records[0])
        fill = None
        if lead.state is FeedState.OPEN:
            fill = next((r for r in records if r.state is FeedState.FIXED), None)
        decided = fill or lead
        self.cve = lead.cve
        self.source = lead.source
        self.state = decided.state
        self.fixed_version = decided.fixed_version
        self.feeds = (lead.feed, fill.feed) if fill else (lead.feed,)
        self.urgency = _first(records, "urgency")
        self.cvss = _first(records, "cvss")
        self.nodsa = _first(records, "nodsa") if self.state is FeedState.OPEN else None
        self.description = _first(records, "description")
        self.rank = -1
        """Index of ``fixed_version`` among the source's sorted fixed versions (-1: not fixed)."""

    def finding(self, status: Status, installed: str | None, **extra: Any) -> Finding:
        """This verdict as one host's finding with STATUS."""
        return Finding(
            cve=self.cve,
            source=self.source,
            status=status,
            installed_version=installed,
            fixed_version=self.fixed_version,
            urgency=self.urgency,
            cvss=self.cvss,
            nodsa=self.nodsa,
            feeds=self.feeds,
            **extra,
        )


def _first(records: list[Advisory], name: str) -> Any:
    return next((value for r in records if (value := getattr(r, name)) is not None), None)


class SourceAdvisories:
    """Every verdict on one source package of one release, with its fixed versions in order."""

    __slots__ = ("by_cve", "by_rank", "fixed", "parse", "release", "sorted_fixed", "source")

    def __init__(self, release: str, source: str, verdicts: list[Verdict]) -> None:
        self.release = release
        self.source = source
        self.parse = version_parser(release)
        verdicts.sort(key=lambda v: v.cve)
        self.by_cve = {v.cve: v for v in verdicts}
        texts = {v.fixed_version for v in verdicts if v.fixed_version is not None}
        self.fixed = tuple(sorted(texts, key=self.parse))
        """The distinct fixed versions, oldest first."""
        self.sorted_fixed = [self.parse(text) for text in self.fixed]
        rank_of = {text: rank for rank, text in enumerate(self.fixed)}
        by_rank: list[list[Verdict]] = [[] for _ in self.fixed]
        for verdict in verdicts:
            if verdict.fixed_version is not None:
                verdict.rank = rank_of[verdict.fixed_version]
                by_rank[verdict.rank].append(verdict)
        self.by_rank = tuple(tuple(group) for group in by_rank)
        """The verdicts fixed in each fixed version, by its rank."""

    def position(self, version: str | None) -> int | None:
        """How many fixed versions VERSION has reached (None: the version is not known)."""
        if version is None:
            return None
        return bisect_right(self.sorted_fixed, self.parse(version))

    def status(self, verdict: Verdict, position: int | None) -> Status:
        """VERDICT's status for an installed version at POSITION, by the package alone."""
        if verdict.state is not FeedState.FIXED:
            return _STATE_STATUS[verdict.state]
        if position is None:
            return Status.UNDETERMINED
        return Status.FIXED_BY_PACKAGE if verdict.rank < position else Status.OPEN_FIX_AVAILABLE


class Exposure:
    """What one installed version of a source package is exposed to, by the package alone."""

    __slots__ = ("_listed_by_cve", "advisories", "counts", "listed", "position", "version")

    def __init__(self, advisories: SourceAdvisories, version: str | None) -> None:
        self.advisories = advisories
        self.version = version
        self.position = advisories.position(version)
        counts: Counts = {}
        listed = []
        for verdict in advisories.by_cve.values():
            status = advisories.status(verdict, self.position)
            key = (status, verdict.urgency)
            counts[key] = counts.get(key, 0) + 1
            if status in LISTED:
                listed.append(verdict.finding(status, version))
        self.counts = counts
        self.listed = tuple(listed)
        """The findings of LISTED statuses, by CVE."""
        self._listed_by_cve: dict[str, Finding] | None = None

    def status(self, verdict: Verdict) -> Status:
        return self.advisories.status(verdict, self.position)

    def finding(self, cve: str) -> Finding | None:
        """CVE's finding, if listed (the shared object)."""
        if self._listed_by_cve is None:
            self._listed_by_cve = {finding.cve: finding for finding in self.listed}
        return self._listed_by_cve.get(cve)

    def findings(self, resolved: bool = False) -> Iterator[Finding]:
        """The listed findings; with RESOLVED, every verdict's (not affected, fixed too)."""
        if not resolved:
            yield from self.listed
            return
        for verdict in self.advisories.by_cve.values():
            yield verdict.finding(self.status(verdict), self.version)


class AdvisoryIndex:
    """Every feed's advisories, merged and indexed by release and source package."""

    def __init__(self, advisories: Iterable[Advisory]) -> None:
        grouped: dict[tuple[str, str, str], dict[str, Advisory]] = {}
        for number, advisory in enumerate(advisories, 1):
            _check(number, advisory)
            key = (advisory.release, advisory.source, advisory.cve)
            feeds = grouped.setdefault(key, {})
            earlier = feeds.setdefault(advisory.feed, advisory)
            if earlier != advisory:
                raise AdvisoryError(
                    f"advisory {number}: feed {advisory.feed!r} says two different things of "
                    f"{advisory.cve} in {advisory.source} ({advisory.release})"
                )
        per_source: dict[tuple[str, str], list[Verdict]] = {}
        for (release, source, _), feeds in grouped.items():
            records = sorted(feeds.values(), key=_precedence)
            per_source.setdefault((release, source), []).append(Verdict(records))
        self._sources = {
            key: SourceAdvisories(*key, verdicts) for key, verdicts in per_source.items()
        }
        self.records = sum(len(feeds) for feeds in grouped.values())
        """How many feed records went in."""
        self.verdicts = len(grouped)
        """How many (release, source, CVE) verdicts came out."""
        self._exposures: dict[tuple[str, str, str | None], Exposure | None] = {}

    def advisories(self, release: str, source: str) -> SourceAdvisories | None:
        return self._sources.get((release, source))

    def exposure(self, release: str, source: str, version: str | None) -> Exposure | None:
        """What SOURCE at installed VERSION is exposed to in RELEASE (None: no advisory names
        it); cached. VersionError if VERSION is not one the release's package manager takes."""
        key = (release, source, version)
        try:
            return self._exposures[key]
        except KeyError:
            pass
        advisories = self._sources.get((release, source))
        exposure = None if advisories is None else Exposure(advisories, version)
        if len(self._exposures) >= MAX_EXPOSURES:
            self._exposures.clear()
        self._exposures[key] = exposure
        return exposure

    def clear_cache(self) -> None:
        """Forget every cached exposure (benchmarks measure the cold cost with it)."""
        self._exposures.clear()


def version_parser(release: str) -> Callable[[str], Any]:
    """RELEASE's version parser: its results compare as the release's package manager does."""
    return rpm_version if uses_rpm(release) else debian_version


def _precedence(advisory: Advisory) -> tuple[int, str]:
    feed = advisory.feed
    rank = FEED_PRECEDENCE.index(feed) if feed in FEED_PRECEDENCE else len(FEED_PRECEDENCE)
    return rank, feed


def _check(number: int, advisory: Advisory) -> None:
    """AdvisoryError naming record NUMBER if it is malformed."""

    def refuse(problem: str) -> AdvisoryError:
        return AdvisoryError(f"advisory {number} ({str(advisory.cve)[:80]!r}): {problem}")

    if not isinstance(advisory, Advisory):
        raise refuse(f"not an Advisory but {type(advisory).__name__}")
    for name, pattern in (("cve", _CVE_ID), ("source", _NAME), ("release", _RELEASE)):
        value = getattr(advisory, name)
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise refuse(f"{name} {str(value)[:80]!r} is not one")
    if not isinstance(advisory.state, FeedState):
        raise refuse(f"state {advisory.state!r} is not a FeedState")
    for name, limit in _MAX_TEXT.items():
        value = getattr(advisory, name)
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            raise refuse(f"{name} is not a text of at most {limit} characters")
    if advisory.cvss is not None and not (
        isinstance(advisory.cvss, int | float) and 0 <= advisory.cvss <= 10
    ):
        raise refuse(f"CVSS score {advisory.cvss!r} is not between 0 and 10")
    if (advisory.state is FeedState.FIXED) != (advisory.fixed_version is not None):
        raise refuse(f"state {advisory.state} with fixed version {advisory.fixed_version!r}")
    if advisory.fixed_version is not None:
        try:
            version_parser(advisory.release)(advisory.fixed_version)
        except (VersionError, TypeError) as error:
            raise refuse(str(error)) from None

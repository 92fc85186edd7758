"""The fleet's figures: every host recomputed at once, or one host updated at its check-in.

``Fleet.recompute`` assesses every host (after a feed or a published level
changed); ``Fleet.checkin`` assesses one host and answers what changed
(``HostChange``): the difference of its counts, which the fleet's totals take
without a recount, and, when asked, the findings whose word changed. Hosts given in digest
order share each package set's computation (the matcher keeps the recent ones).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import fields
from operator import attrgetter
from typing import NamedTuple

from nonstop.cve import counts
from nonstop.cve.matching import HostAssessment, HostError, Matcher
from nonstop.cve.model import Finding, HostState


class FindingChange(NamedTuple):
    """One finding of one host that appeared (before None), went (after None) or changed: in
    anything but the installed version it names (an upgrade that left a CVE open at the same
    fix is not a change)."""

    before: Finding | None
    after: Finding | None


class HostChange(NamedTuple):
    """What one check-in changed: the counts at once, the findings when asked for."""

    host_id: str
    counts: counts.Counts
    """What to add to the fleet's counts."""
    before: HostAssessment | None
    after: HostAssessment | None

    def findings(self) -> tuple[FindingChange, ...]:
        """The listed findings that appeared, went or changed (computed on each call)."""
        return finding_changes(self.before, self.after)


class Fleet:
    """Every host's assessment and the fleet's counts, their sum."""

    def __init__(self, matcher: Matcher) -> None:
        self.matcher = matcher
        self.totals: counts.Counts = {}
        self._hosts: dict[str, HostAssessment] = {}

    def __len__(self) -> int:
        return len(self._hosts)

    def assessment(self, host_id: str) -> HostAssessment | None:
        return self._hosts.get(host_id)

    def assessments(self) -> Iterator[HostAssessment]:
        """Every assessed host's assessment, in no particular order."""
        return iter(list(self._hosts.values()))

    def recompute(self, hosts: Iterable[tuple[HostState, str | None]]) -> dict[str, str]:
        """Assess every host of HOSTS (host state, package list digest) anew; the hosts refused,
        with why (they are left out of the counts, the others are not held back)."""
        self._hosts = {}
        self.totals = {}
        refused = {}
        for host, digest in hosts:
            try:
                assessment = self.matcher.assess(host, digest)
            except HostError as error:
                refused[host.host_id] = str(error)
                continue
            self._hosts[host.host_id] = assessment
            counts.add(self.totals, assessment.counts)
        return refused

    def checkin(self, host: HostState, digest: str | None = None) -> HostChange:
        """Assess HOST at its check-in and update the totals; HostError leaves all as it was."""
        old = self._hosts.get(host.host_id)
        new = self.matcher.assess(host, digest, old.package_set if old else None)
        self._hosts[host.host_id] = new
        return self._apply(host.host_id, old, new)

    def remove(self, host_id: str) -> HostChange:
        """Forget HOST_ID (unregistered): its counts leave the totals."""
        return self._apply(host_id, self._hosts.pop(host_id, None), None)

    def _apply(
        self, host_id: str, old: HostAssessment | None, new: HostAssessment | None
    ) -> HostChange:
        delta = counts.difference(new.counts if new else {}, old.counts if old else {})
        counts.add(self.totals, delta)
        return HostChange(host_id, delta, old, new)


def finding_changes(
    old: HostAssessment | None, new: HostAssessment | None
) -> tuple[FindingChange, ...]:
    """The listed findings that differ between OLD and NEW assessments of one host."""
    changed: list[FindingChange] = []
    for source in _touched(old, new):
        if old is None or new is None or old.view(source) != new.view(source):
            changed.extend(_source_changes(old, new, source))
    return tuple(changed)


def _touched(old: HostAssessment | None, new: HostAssessment | None) -> list[str]:
    """The sources whose findings may differ between OLD and NEW."""
    if old is None or new is None:
        either = old or new
        return list(either.sources()) if either else []
    touched = old.parts.keys() | new.parts.keys()
    if old.package_set is not new.package_set:
        before, after = old.package_set.exposures, new.package_set.exposures
        touched |= {source for source, e in after.items() if before.get(source) is not e}
        touched |= before.keys() - after.keys()
    return sorted(touched)


def _source_changes(
    old: HostAssessment | None, new: HostAssessment | None, source: str
) -> Iterator[FindingChange]:
    before_base = old.base(source) if old else None
    after_base = new.base(source) if new else None
    if (
        old is not None
        and new is not None
        and before_base is not None
        and after_base is not None
        and before_base.advisories is after_base.advisories
        and before_base.position is not None
        and after_base.position is not None
    ):
        # The same source in the same release: what runs, and the fixes between the two
        # versions, are all that can change its findings' word.
        low, high = sorted((before_base.position, after_base.position))
        cves = {*old.changed(source), *new.changed(source)}
        for rank in range(low, high):
            cves.update(verdict.cve for verdict in before_base.advisories.by_rank[rank])
        before = {cve: old.finding(source, cve) for cve in cves}
        after = {cve: new.finding(source, cve) for cve in cves}
    else:
        before = {f.cve: f for f in old.source_findings(source)} if old else {}
        after = {f.cve: f for f in new.source_findings(source)} if new else {}
    for cve in sorted(before.keys() | after.keys()):
        if _differs(before.get(cve), after.get(cve)):
            yield FindingChange(before.get(cve), after.get(cve))


_WORD = attrgetter(*(f.name for f in fields(Finding) if f.name != "installed_version"))


def _differs(before: Finding | None, after: Finding | None) -> bool:
    """Whether a finding's word changed: anything but the installed version it names."""
    if before is None or after is None or before is after:
        return before is not after
    return bool(_WORD(before) != _WORD(after))

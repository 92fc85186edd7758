"""The fleet's figures: every host recomputed at once, or one host updated at its check-in.

``Fleet.recompute`` assesses every host (after a feed or a published level
changed); ``Fleet.checkin`` assesses one host and answers what changed
(``HostChange``): the difference of its counts, which the fleet's totals take
without a recount, and the findings whose word changed. Hosts given in digest
order share each package set's computation (the matcher keeps the recent ones).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from nonstop.cve import counts
from nonstop.cve.matching import HostAssessment, HostError, Matcher
from nonstop.cve.model import Finding, HostState


class FindingChange(NamedTuple):
    """One finding of one host that appeared (before None), went (after None) or changed."""

    before: Finding | None
    after: Finding | None


class HostChange(NamedTuple):
    host_id: str
    counts: counts.Counts
    """What to add to the fleet's counts."""
    findings: tuple[FindingChange, ...]


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
        return HostChange(host_id, delta, finding_changes(old, new))


def finding_changes(
    old: HostAssessment | None, new: HostAssessment | None
) -> tuple[FindingChange, ...]:
    """The listed findings that differ between OLD and NEW assessments of one host."""
    if old is not None and new is not None and old.package_set is new.package_set:
        sources: Iterable[str] = old.parts.keys() | new.parts.keys()
    else:
        sources = {
            *(old.sources() if old else ()),
            *(new.sources() if new else ()),
        }
    changed = []
    for source in sorted(sources):
        if old is not None and new is not None and old.view(source) == new.view(source):
            continue
        before = {f.cve: f for f in old.source_findings(source)} if old else {}
        after = {f.cve: f for f in new.source_findings(source)} if new else {}
        for cve in sorted(before.keys() | after.keys()):
            if before.get(cve) != after.get(cve):
                changed.append(FindingChange(before.get(cve), after.get(cve)))
    return tuple(changed)

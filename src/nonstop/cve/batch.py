"""What reading one feed gives: its advisories, how many records it had, what it skipped and why.

Shared by every feed reader, with the rules they share: what a package name
may be, the urgency words (the Debian tracker's, which Debian's OSV records
repeat) and how two words of one feed on the same CVE, source package and
release become one.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from nonstop.cve import versions
from nonstop.cve.errors import Malformed, shown
from nonstop.cve.model import Advisory, FeedState

PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
"""Debian policy 5.6.1 and 5.6.7: a source or binary package name (nothing else reaches argv)."""
URGENCIES = frozenset({"unimportant", "low", "medium", "high", "end-of-life"})
"""The tracker's urgency words; ``not yet assigned`` means none."""
NO_URGENCY = "not yet assigned"


@dataclass(frozen=True)
class FeedBatch:
    """One feed document read whole: advisories, records read, records or entries skipped."""

    feed: str
    """The feed's name, as ``Advisory.feed`` says it (``debian-tracker``, ``osv``...)."""
    advisories: tuple[Advisory, ...]
    records: int
    """What the document holds: tracker package/CVE pairs, OSV records, changelog entries..."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Reason -> how many were left out for it (a TEMP id, a release nobody runs...)."""

    def summary(self) -> str:
        """One line for the import command: ``osv: 12 advisories from 5 records; skipped: ...``."""
        line = f"{self.feed}: {len(self.advisories)} advisories from {self.records} records"
        if self.skipped:
            reasons = ", ".join(
                f"{count} {reason}" for reason, count in sorted(self.skipped.items())
            )
            line += f"; skipped: {reasons}"
        return line


def batch(
    feed: str, advisories: Iterable[Advisory], records: int, skipped: Counter[str]
) -> FeedBatch:
    """A FeedBatch of FEED, its skip counts as a plain dict."""
    return FeedBatch(feed, tuple(advisories), records, dict(skipped))


def urgency(value: object) -> str | None:
    """VALUE as an urgency word (``**`` marks dropped, ``not yet assigned`` -> None); Malformed
    when it is not a word the tracker writes."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise Malformed(f"urgency {shown(value)} is not text")
    word = value.rstrip("*").strip()
    if word == NO_URGENCY:
        return None
    if word not in URGENCIES:
        raise Malformed(
            f"urgency {shown(value)} is not one of {', '.join(sorted(URGENCIES))}, {NO_URGENCY}"
        )
    return word


_RANK = {
    FeedState.FIXED: 3,
    FeedState.NOT_AFFECTED: 2,
    FeedState.OPEN: 1,
    FeedState.UNDETERMINED: 0,
}


def merged(advisories: Iterable[Advisory]) -> list[Advisory]:
    """One advisory per CVE, source and release, in first-seen order.

    Of two words on the same one, a fixed version beats none (a published fix
    is a fact), and of two fixed versions the later stands: a later advisory
    may complete an earlier, incomplete fix, and a host between the two is
    better reported exposed than fixed.
    """
    kept: dict[tuple[str, str, str], Advisory] = {}
    for advisory in advisories:
        key = (advisory.cve, advisory.source, advisory.release)
        old = kept.get(key)
        if old is None or _better(advisory, old):
            kept[key] = advisory
    return list(kept.values())


def _better(new: Advisory, old: Advisory) -> bool:
    if _RANK[new.state] != _RANK[old.state]:
        return _RANK[new.state] > _RANK[old.state]
    if new.state is FeedState.FIXED and new.fixed_version and old.fixed_version:
        return versions.is_older(new.release, old.fixed_version, new.fixed_version)
    return False

"""Findings counted per status and urgency: one host's summary, the fleet's being their sum.

A host has thousands of not-affected and fixed-by-package verdicts: they are
counted, not listed. Counts add up (a package set's, then what the host's
running kernel and libraries change) and subtract (what a check-in changed),
so fleet figures follow each host's difference without a recount. A key whose
count falls to zero is dropped, so equal summaries compare equal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from nonstop.cve.model import Status

Counts = dict[tuple[Status, str | None], int]
"""How many findings per (status, urgency word); urgency None when no feed gives one."""


def add(target: Counts, counts: Mapping[tuple[Status, str | None], int], sign: int = 1) -> None:
    """Add COUNTS (times SIGN) into TARGET."""
    for key, number in counts.items():
        value = target.get(key, 0) + sign * number
        if value:
            target[key] = value
        else:
            target.pop(key, None)


def difference(new: Counts, old: Counts) -> Counts:
    """NEW - OLD: what to add to a sum holding OLD to make it hold NEW."""
    delta = dict(new)
    add(delta, old, -1)
    return delta


def total(summaries: Iterable[Counts]) -> Counts:
    summed: Counts = {}
    for counts in summaries:
        add(summed, counts)
    return summed


def by_status(counts: Counts) -> dict[Status, int]:
    """COUNTS with the urgencies summed, every status present."""
    statuses = dict.fromkeys(Status, 0)
    for (status, _), number in counts.items():
        statuses[status] += number
    return statuses


def exposed(counts: Counts) -> int:
    """How many of the counted findings still leave flawed code running."""
    return sum(number for (status, _), number in counts.items() if status.exposed)

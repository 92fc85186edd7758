"""Counts add and subtract to the same figures a recount gives."""

from __future__ import annotations

from nonstop.cve import counts
from nonstop.cve.model import Status

OPEN_HIGH = (Status.OPEN_FIX_AVAILABLE, "high")
LIVE_HIGH = (Status.FIXED_BY_LIVE_PATCH, "high")
FIXED = (Status.FIXED_BY_PACKAGE, None)


def test_a_difference_added_to_the_old_sum_gives_the_new() -> None:
    old = {OPEN_HIGH: 2, FIXED: 10}
    new = {OPEN_HIGH: 1, LIVE_HIGH: 1, FIXED: 10}
    fleet = counts.total([old, {FIXED: 5}])
    counts.add(fleet, counts.difference(new, old))
    assert fleet == counts.total([new, {FIXED: 5}])
    assert counts.difference(new, new) == {}, "zero keys are dropped"
    assert counts.exposed(new) == 1
    assert counts.by_status(new)[Status.FIXED_BY_LIVE_PATCH] == 1
    assert counts.by_status(new)[Status.UNDETERMINED] == 0

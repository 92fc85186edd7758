"""Cumulative level policy: when a bundle may replace the level that is applied.

Level N contains every fix of levels <= N, so the only legitimate move is up.
Going down (or re-applying a different build of the same level) is a rollback
and must be asked for explicitly.
"""

from __future__ import annotations

from enum import Enum

from nonstop.bundle.errors import LevelPolicyError


class LevelAction(Enum):
    """What :func:`decide_level` allows: apply the offered level, or nothing to do."""

    APPLY = "apply"
    ALREADY = "already"


def decide_level(
    applied: int | None, offered: int, *, allow_downgrade: bool = False
) -> LevelAction:
    """What to do with a bundle of level OFFERED when APPLIED (None: nothing) is in place.

    Raises LevelPolicyError when OFFERED is below 1, or lower than APPLIED and no downgrade
    was asked for. Only levels are compared: telling two builds of one level apart is the
    caller's part.
    """
    if offered < 1:
        raise LevelPolicyError(f"level {offered} is not a valid level")
    if applied is None or offered > applied:
        return LevelAction.APPLY
    if offered == applied:
        return LevelAction.ALREADY
    if allow_downgrade:
        return LevelAction.APPLY
    raise LevelPolicyError(
        f"level {offered} is lower than applied level {applied}; "
        "a downgrade must be requested explicitly"
    )

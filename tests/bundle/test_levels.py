"""Cumulative level policy."""

from __future__ import annotations

import pytest

from nonstop.bundle import LevelAction, decide_level
from nonstop.bundle.errors import LevelPolicyError


@pytest.mark.parametrize(
    ("applied", "offered", "expected"),
    [
        (None, 1, LevelAction.APPLY),
        (1, 2, LevelAction.APPLY),
        (1, 7, LevelAction.APPLY),
        (3, 3, LevelAction.ALREADY),
    ],
)
def test_upgrades_apply_and_same_level_is_already(applied, offered, expected):
    assert decide_level(applied, offered) is expected


def test_downgrade_needs_explicit_request():
    with pytest.raises(LevelPolicyError, match="explicitly"):
        decide_level(3, 2)
    assert decide_level(3, 2, allow_downgrade=True) is LevelAction.APPLY


def test_invalid_level():
    with pytest.raises(LevelPolicyError):
        decide_level(None, 0)

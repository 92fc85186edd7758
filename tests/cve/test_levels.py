"""Published levels: cumulative, indexed by target, refused when two records disagree."""

from __future__ import annotations

import pytest

from nonstop.cve.levels import LevelError, PublishedLevels, library_target
from nonstop.cve.model import LivePatchLevel

TARGET = library_target("6b1c0e2f9a3d4c5b8e7f6a5b4c3d2e1f0a9b8c7d")


def published(number: int, *cves: str) -> LivePatchLevel:
    return LivePatchLevel(TARGET, number, frozenset(cves), f"{number:064x}", f"1.0+nonstop{number}")


def test_a_level_closes_what_every_earlier_level_named() -> None:
    levels = PublishedLevels([published(3, "CVE-3"), published(1, "CVE-1"), published(2, "CVE-2")])
    assert TARGET == "userspace:6b1c0e2f9a3d4c5b8e7f6a5b4c3d2e1f0a9b8c7d"
    assert levels.closes(TARGET, 2, "CVE-1") and levels.closes(TARGET, 2, "CVE-2")
    assert not levels.closes(TARGET, 2, "CVE-3")
    assert not levels.closes(TARGET, None, "CVE-1")
    assert levels.first_closing(TARGET, "CVE-2") == published(2, "CVE-2")
    assert set(levels.cves(TARGET)) == {"CVE-1", "CVE-2", "CVE-3"}
    assert not levels.has("userspace:other") and list(levels.cves("userspace:other")) == []


def test_two_records_of_one_level_must_agree() -> None:
    assert PublishedLevels([published(1, "CVE-1"), published(1, "CVE-1")]).has(TARGET)
    with pytest.raises(LevelError, match="two different records for level 1 of userspace:"):
        PublishedLevels([published(1, "CVE-1"), published(1, "CVE-9")])

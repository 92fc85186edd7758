"""The safety check on hand-made thread views: RIP ranges, and the stack scan's candidate
search (aligned words only, in the right windows, however wide the hazard ranges are)."""

from __future__ import annotations

import struct

from nonstop.userspace.safety import Hazard, HazardRanges, SafetyRules, ThreadView

LIB = 0x7F3A_1C05_1150  # an entry in a library
PATCH = 0x7F3A_1B00_0000  # patch code, another 16 MiB window


def stack_of(*words: int, misalign: bool = False) -> bytes:
    junk = struct.pack("<4Q", 0, 0x7F3A_1C00_0000, 1, 0x5555_5555_0000)
    body = b"".join(struct.pack("<Q", w) for w in words)
    return junk + (b"\x00" * 3 if misalign else b"") + body + junk


def rules(strict: bool = False) -> SafetyRules:
    return SafetyRules.build(
        [(LIB, "nsfix_get")],
        [(PATCH, PATCH + 0x3000, "level 1 patch code")],
        [(LIB - 4, LIB + 0x40, "nsfix_get")],
        strict,
        dispatching=[(PATCH + 0x10101, PATCH + 0x10120, "nsfix_get")],  # the new level
    )


def test_return_address_just_after_the_overwritten_bytes_is_found():
    view = ThreadView(1, 0x1000, stack_of(LIB + 5))
    assert view.hazard(rules()) == "thread 1 may be returning into the entry of nsfix_get"
    assert ThreadView(1, 0x1000, stack_of(LIB)).hazard(rules()) is None  # the entry itself
    assert ThreadView(1, 0x1000, stack_of(LIB + 6)).hazard(rules()) is None


def test_only_aligned_words_count():
    assert ThreadView(1, 0x1000, stack_of(LIB + 5, misalign=True)).hazard(rules()) is None


def test_return_into_code_being_removed_and_strict_ranges():
    view = ThreadView(2, 0x1000, stack_of(PATCH + 0x2FFF))
    assert "level 1 patch code, which is being removed" in (view.hazard(rules()) or "")
    inside = ThreadView(3, 0x1000, stack_of(LIB + 0x20))
    assert inside.hazard(rules()) is None
    assert inside.hazard(rules(strict=True)) == "thread 3 may be returning into nsfix_get (strict)"


def test_rip_in_overwritten_bytes_or_a_dispatch_stub():
    assert (
        ThreadView(4, LIB + 2, b"").hazard(rules()) == "thread 4 is inside the entry of nsfix_get"
    )
    assert ThreadView(4, LIB, b"").hazard(rules()) is None
    stub = ThreadView(4, PATCH + 0x10110, b"").hazard(rules())
    assert stub == "thread 4 is inside the dispatch stub of nsfix_get"


def test_wide_ranges_use_wider_windows_and_are_still_found():
    wide = SafetyRules.build([], [(0x7F00_0000_0000, 0x7F10_0000_0000, "big")], [], False)
    assert len(wide.suffixes) <= 32
    view = ThreadView(5, 0x1000, stack_of(0x7F08_1234_5678))
    assert view.hazard(wide) == "thread 5 may be returning into big, which is being removed"
    assert ThreadView(5, 0x1000, stack_of(0x7F10_0000_0001)).hazard(wide) is None


def test_many_hazards_in_one_window_share_its_suffix():
    """Forty stacked levels of patch code: a few windows, not forty suffixes or none."""
    levels = [(PATCH + i * 0x4000, PATCH + i * 0x4000 + 0x3000, f"level {i}") for i in range(40)]
    many = SafetyRules.build([], levels, [], False)
    assert 1 <= len(many.suffixes) <= 32  # 64 KiB windows: 10 of them
    view = ThreadView(6, 0x1000, stack_of(PATCH + 39 * 0x4000 + 0x10))
    assert view.hazard(many) == "thread 6 may be returning into level 39, which is being removed"


def test_hazards_spread_over_the_address_space_check_every_aligned_word():
    """Too many windows even at 1 TiB granularity: the scan decodes every word, and ends."""
    spread = [(w << 40, (w << 40) + 0x1000, f"code {w}") for w in range(1, 40)]
    rules_ = SafetyRules.build([], spread, [], False)
    assert rules_.suffixes == []
    assert ThreadView(7, 0x1000, stack_of(0x1234_5678)).hazard(rules_) is None
    hit = ThreadView(7, 0x1000, stack_of((38 << 40) + 0x800)).hazard(rules_)
    assert hit == "thread 7 may be returning into code 38, which is being removed"
    misaligned = ThreadView(7, 0x1000, stack_of((38 << 40) + 0x800, misalign=True))
    assert misaligned.hazard(rules_) is None


def test_overlapping_hazards_merge_into_disjoint_ranges():
    ranges = HazardRanges([Hazard(10, 20, "a"), Hazard(15, 30, "b"), Hazard(40, 41, "c")])
    assert [(h.start, h.end) for h in ranges.ranges] == [(10, 30), (40, 41)]
    assert ranges.find(29) is not None and ranges.find(30) is None and ranges.find(9) is None

"""Choosing where patch memory goes: a free hole within rel32 reach of everything it must reach.

Every site's 5-byte ``jmp rel32`` and every PC-relative reference of the
patch into the library must reach, so the whole patch memory must lie within
+-2 GiB of each of those addresses. Candidates nearest the library come
first, one guard page away from neighbours; the caller maps with
MAP_FIXED_NOREPLACE and moves to the next candidate if it lost a race.
"""

from __future__ import annotations

from collections.abc import Iterator

from nonstop.userspace.procfs import Mapping

PAGE = 4096
REACH = (1 << 31) - PAGE
LOWEST = 0x10000
HIGHEST = 0x7FFF_FFFF_F000


def candidates(maps: list[Mapping], size: int, anchors: list[int], near: int) -> Iterator[int]:
    """Page-aligned addresses for SIZE bytes, reachable from all ANCHORS, nearest NEAR first."""
    low = max([LOWEST, *(a - REACH for a in anchors)])
    high = min([HIGHEST, *(a + REACH for a in anchors)])
    ordered = sorted(maps, key=lambda m: m.start)
    holes = []
    previous_end = LOWEST
    for mapping in ordered:
        if mapping.start > previous_end:
            holes.append((previous_end, mapping.start))
        previous_end = max(previous_end, mapping.end)
    holes.append((previous_end, HIGHEST))
    options = []
    for hole_start, hole_end in holes:
        start = max(hole_start + PAGE, low)
        end = min(hole_end - PAGE, high)
        if end - start < size:
            continue
        # Just below the upper neighbour or just above the lower one: whichever is nearer NEAR.
        top = (end - size) & ~(PAGE - 1)
        bottom = (start + PAGE - 1) & ~(PAGE - 1)
        for address in (top, bottom):
            if start <= address and address + size <= end:
                options.append(address)
    yield from sorted(set(options), key=lambda a: abs(a - near))

"""A level's dispatch area: one stub per entry site, its original-code trampoline, its slot.

Every entry jump of a level goes to that level's stub for the function::

    [endbr64]                  when the function starts with one
    cmpb $0, COMMIT(%rip)      the commit flag in the level's header (region.py)
    jne  NEW                   the replacement; or the trampoline, for a function
                               this level no longer replaces
    jmp  *FALLBACK(%rip)       what ran before this level: the previous level's
                               stub, or the trampoline (the original code)

so pointing entries at the stubs changes nothing while the flag is 0, and
the one write of the flag switches every function of the level at once.
After the commit the fallback slots are pointed at the level's own
trampolines, so a revert is again one write of the flag (back to 0) and the
previous level is no longer referenced. Stubs, trampolines and slots lie in
the R-X code of the region: only the patcher writes them, through
/proc/PID/mem.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from nonstop.userspace.sites import Site
from nonstop.userspace.trampoline import ENDBR64, rel32

STUB_SIZE = 32
SLOT_SIZE = 8
_FILL = b"\xcc"  # int3 between pieces: never executed


@dataclass(frozen=True)
class DispatchEntry:
    """Where one site's pieces go, as offsets from the start of the patch memory."""

    stub: int
    trampoline: int
    slot: int


def layout_dispatch(sites: list[Site], start: int) -> tuple[list[DispatchEntry], int]:
    """Offsets of every site's stub, trampoline and slot from START on, and the end offset."""
    offset = start
    places = []
    for site in sites:
        stub = offset = _align(offset, STUB_SIZE)
        trampoline = offset = _align(offset + STUB_SIZE, 16)
        offset += site.displaced.size(site.cet)
        places.append((stub, trampoline))
    offset = _align(offset, SLOT_SIZE)
    entries = []
    for stub, trampoline in places:
        entries.append(DispatchEntry(stub, trampoline, offset))
        offset += SLOT_SIZE
    return entries, offset


def stub_bytes(at: int, flag: int, new: int, slot: int, cet: bool) -> bytes:
    """The dispatch stub placed at AT."""
    code = bytearray(ENDBR64 if cet else b"")
    end = at + len(code) + 7
    code += b"\x80\x3d" + rel32(end, flag, "commit flag") + b"\x00"  # cmpb $0, flag(%rip)
    end += 6
    code += b"\x0f\x85" + rel32(end, new, "new code")  # jne new
    end += 6
    code += b"\xff\x25" + rel32(end, slot, "fallback slot")  # jmp *slot(%rip)
    return bytes(code.ljust(STUB_SIZE, _FILL))


def fill_dispatch(
    image: bytearray,
    base: int,
    flag: int,
    sites: list[Site],
    entries: list[DispatchEntry],
    new: list[int],
    fallback: list[int],
) -> None:
    """Write the dispatch area of the patch memory mapped at BASE into IMAGE (its bytes from
    BASE on). NEW and FALLBACK hold, per site, the addresses its stub leads to."""
    if entries:
        first, last = entries[0].stub, entries[-1].slot + SLOT_SIZE
        image[first:last] = _FILL * (last - first)
    for site, entry, new_code, before in zip(sites, entries, new, fallback, strict=True):
        stub = stub_bytes(base + entry.stub, flag, new_code, base + entry.slot, site.cet)
        image[entry.stub : entry.stub + STUB_SIZE] = stub
        trampoline = site.displaced.encode(base + entry.trampoline, site.patch_address, site.cet)
        image[entry.trampoline : entry.trampoline + len(trampoline)] = trampoline
        struct.pack_into("<Q", image, entry.slot, before)


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment

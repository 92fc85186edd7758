"""Is it safe to switch now? Checks every stopped thread's RIP and (conservatively) its stack.

Unsafe ranges come in two kinds. For RIP: inside bytes the jump overwrites
(after their first byte), or inside code about to be unmapped, or inside a
dispatch stub whose fallback slot changes after the commit, or (strict)
inside any replaced function. For the stack, every 8-byte word from RSP to
the end of the stack mapping is treated as a possible return address: a
word pointing just after overwritten bytes, into code about to be unmapped,
or (strict) into a replaced function makes the switch unsafe. Integers that
happen to look like such addresses give false positives; the caller backs
off and retries within a bound, then reports ``busy``.

The scan runs at C speed: every stack hazard lies in a few small aligned
windows (64 KiB, or wider when the ranges are large), all words of one window
share their upper bytes, so a literal search locates the candidate words and
only those are decoded and looked up (bisect over disjoint ranges). All of
this is prepared when the rules are built, before any thread stops.
"""

from __future__ import annotations

import re
import struct
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from nonstop.userspace.memory import ProcessMemory
from nonstop.userspace.procfs import MapIndex
from nonstop.userspace.ptrace import Regs
from nonstop.userspace.sites import JMP_SIZE

MAX_STACK_SCAN = 8 << 20
MAX_SUFFIXES = 32
"""Use the narrowest window (16, 24, 32 or 40 bits) that covers every stack hazard with at
most this many windows."""


@dataclass(frozen=True)
class Hazard:
    """Addresses no stopped thread may be at (RIP) or may return to (stack word); WHAT ends
    the busy reason "thread N is ..." / "thread N may be ..."."""

    start: int
    end: int
    """Half-open range [start, end)."""
    what: str


class HazardRanges:
    """Hazards merged into disjoint ranges (each named after the first that starts there),
    looked up by bisect."""

    def __init__(self, hazards: list[Hazard]) -> None:
        merged: list[Hazard] = []
        for hazard in sorted(hazards, key=lambda h: (h.start, -h.end)):
            if merged and hazard.start <= merged[-1].end:
                last = merged[-1]
                merged[-1] = Hazard(last.start, max(last.end, hazard.end), last.what)
            else:
                merged.append(hazard)
        self.ranges = merged
        self._starts = [h.start for h in merged]

    def find(self, address: int) -> Hazard | None:
        index = bisect_right(self._starts, address) - 1
        if index >= 0 and address < self.ranges[index].end:
            return self.ranges[index]
        return None


class SafetyRules:
    """What no stopped thread may do, prepared for fast checks."""

    def __init__(self, rip: list[Hazard], stack: list[Hazard]) -> None:
        self.rip = HazardRanges(rip)
        self.stack = HazardRanges(stack)
        suffixes, self.suffix_at = _suffixes(stack)
        self.suffixes = [re.compile(re.escape(suffix)) for suffix in suffixes]
        """Searches for the upper bytes of every window a stack hazard touches (a literal
        pattern: faster than bytes.find on stack contents), and where those bytes start in a
        little-endian word."""

    @classmethod
    def build(
        cls,
        overwritten: list[tuple[int, str]],
        unmapped: list[tuple[int, int, str]],
        replaced: list[tuple[int, int, str]],
        strict: bool,
        dispatching: Sequence[tuple[int, int, str]] = (),
    ) -> SafetyRules:
        """OVERWRITTEN: jump addresses; UNMAPPED/REPLACED: (start, end, name) code ranges;
        DISPATCHING: (start, end, function) of stubs no thread may be inside."""
        rip = [Hazard(a + 1, a + JMP_SIZE, f"inside the entry of {n}") for a, n in overwritten]
        rip += [Hazard(s, e, f"inside the dispatch stub of {n}") for s, e, n in dispatching]
        stack = [
            Hazard(a + 1, a + JMP_SIZE + 1, f"returning into the entry of {n}")
            for a, n in overwritten
        ]
        for start, end, name in unmapped:
            rip.append(Hazard(start, end, f"executing {name}, which is being removed"))
            stack.append(Hazard(start, end + 1, f"returning into {name}, which is being removed"))
        if strict:
            for start, end, name in replaced:
                rip.append(Hazard(start, end, f"executing {name} (strict)"))
                stack.append(Hazard(start + 1, end + 1, f"returning into {name} (strict)"))
        return cls(rip, stack)


def _suffixes(hazards: list[Hazard]) -> tuple[list[bytes], int]:
    """The distinct windows the hazards touch, at the finest granularity that keeps them
    few; ([], 0) when they are spread over the whole address space (decode every word)."""
    for bits in (16, 24, 32, 40):
        spans = [(h.start >> bits, (h.end - 1) >> bits) for h in hazards]
        if sum(last - first + 1 for first, last in spans) > MAX_SUFFIXES * len(hazards):
            continue  # some range is too wide to enumerate at this granularity
        windows = {w for first, last in spans for w in range(first, last + 1)}
        if len(windows) <= MAX_SUFFIXES:
            skip = bits // 8
            # Bytes 6 and 7 of a user-space address are 0: searching for them too would make
            # bytes.find crawl through the many zeros of a stack.
            return [struct.pack("<Q", w << bits)[skip:6] for w in sorted(windows)], skip
    return [], 0


@dataclass(frozen=True)
class ThreadView:
    """One stopped thread as the safety check sees it: RIP and the used part of its stack."""

    tid: int
    rip: int
    stack: bytes

    @classmethod
    def capture(cls, tid: int, regs: Regs, memory: ProcessMemory, maps: MapIndex) -> ThreadView:
        """The view of stopped thread TID with REGS from its stop: its stack from RSP to the end
        of its mapping in MAPS (read before the threads stopped), at most MAX_STACK_SCAN
        bytes; no stack when RSP is in no mapping. Runs inside the stop window: one read."""
        mapping = maps.containing(regs.rsp)
        if mapping is None:
            return cls(tid, regs.rip, b"")
        size = min(mapping.end - regs.rsp, MAX_STACK_SCAN) & ~7
        return cls(tid, regs.rip, memory.read(regs.rsp, size))

    def hazard(self, rules: SafetyRules) -> str | None:
        """Why this thread makes RULES unsafe, or None. Runs inside the stop window; reads
        nothing from the process."""
        found = rules.rip.find(self.rip)
        if found is not None:
            return f"thread {self.tid} is {found.what}"
        stack, skip = self.stack, rules.suffix_at
        if not rules.suffixes:  # no few windows to search for: look at every aligned word
            for (word,) in struct.iter_unpack("<Q", stack[: len(stack) & ~7]):
                found = rules.stack.find(word)
                if found is not None:
                    return f"thread {self.tid} may be {found.what}"
            return None
        for suffix in rules.suffixes:
            match = suffix.search(stack)
            while match is not None:
                word_at = match.start() - skip
                if word_at % 8 == 0:
                    found = rules.stack.find(int.from_bytes(stack[word_at : word_at + 8], "little"))
                    if found is not None:
                        return f"thread {self.tid} may be {found.what}"
                match = suffix.search(stack, match.start() + 1)
        return None

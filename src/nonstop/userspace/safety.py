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

The scan runs at C speed: every hazard range lies inside a few 16 MiB
windows, and all words of one window share their upper five bytes, so
``bytes.find`` locates the candidate words and only those are decoded.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from nonstop.userspace.memory import ProcessMemory
from nonstop.userspace.procfs import Mapping
from nonstop.userspace.ptrace import Regs
from nonstop.userspace.sites import JMP_SIZE

MAX_STACK_SCAN = 8 << 20
WINDOW_BITS = 24  # words inside one 16 MiB window share their upper 5 bytes


@dataclass(frozen=True)
class Hazard:
    start: int
    end: int
    """Half-open range [start, end)."""
    what: str


@dataclass
class SafetyRules:
    rip: list[Hazard]
    stack: list[Hazard]

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

    def suffixes(self) -> set[bytes]:
        """The upper 5 bytes of every 16 MiB window a stack hazard touches."""
        found = set()
        for hazard in self.stack:
            for window in range(hazard.start >> WINDOW_BITS, ((hazard.end - 1) >> WINDOW_BITS) + 1):
                found.add(struct.pack("<Q", window << WINDOW_BITS)[3:])
        return found


@dataclass(frozen=True)
class ThreadView:
    """One stopped thread as the safety check sees it: RIP and the used part of its stack."""

    tid: int
    rip: int
    stack: bytes

    @classmethod
    def capture(
        cls, tid: int, regs: Regs, memory: ProcessMemory, maps: list[Mapping]
    ) -> ThreadView:
        mapping = next((m for m in maps if m.start <= regs.rsp < m.end), None)
        if mapping is None:
            return cls(tid, regs.rip, b"")
        size = min(mapping.end - regs.rsp, MAX_STACK_SCAN) & ~7
        return cls(tid, regs.rip, memory.read(regs.rsp, size))

    def hazard(self, rules: SafetyRules) -> str | None:
        """Why this thread makes RULES unsafe, or None."""
        for hazard in rules.rip:
            if hazard.start <= self.rip < hazard.end:
                return f"thread {self.tid} is {hazard.what}"
        for suffix in rules.suffixes():
            position = self.stack.find(suffix)
            while position >= 0:
                word_at = position - 3
                if word_at % 8 == 0:
                    (word,) = struct.unpack_from("<Q", self.stack, word_at)
                    for hazard in rules.stack:
                        if hazard.start <= word < hazard.end:
                            return f"thread {self.tid} may be {hazard.what}"
                position = self.stack.find(suffix, position + 1)
        return None

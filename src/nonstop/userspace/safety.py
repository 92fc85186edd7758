"""Is it safe to switch now? Checks every stopped thread's RIP and (conservatively) its stack.

Unsafe ranges come in two kinds. For RIP: inside bytes the jump overwrites
(after their first byte), or inside code about to be unmapped, or (strict)
inside any replaced function. For the stack, every 8-byte word from RSP to
the end of the stack mapping is treated as a possible return address: a
word pointing just after overwritten bytes, into code about to be unmapped,
or (strict) into a replaced function makes the switch unsafe. Integers that
happen to look like such addresses give false positives; the caller backs
off and retries within a bound, then reports ``busy``.
"""

from __future__ import annotations

from dataclasses import dataclass

from nonstop.userspace.memory import ProcessMemory
from nonstop.userspace.procfs import Mapping
from nonstop.userspace.ptrace import Regs
from nonstop.userspace.sites import JMP_SIZE

MAX_STACK_SCAN = 8 << 20


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
    ) -> SafetyRules:
        """OVERWRITTEN: jump addresses; UNMAPPED/REPLACED: (start, end, name) code ranges."""
        rip = [Hazard(a + 1, a + JMP_SIZE, f"inside the entry of {n}") for a, n in overwritten]
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


def check_thread(
    tid: int, regs: Regs, rules: SafetyRules, memory: ProcessMemory, maps: list[Mapping]
) -> str | None:
    """Why thread TID is unsafe to switch under, or None when it is safe."""
    for hazard in rules.rip:
        if hazard.start <= regs.rip < hazard.end:
            return f"thread {tid} is {hazard.what}"
    if not rules.stack:
        return None
    stack = next((m for m in maps if m.start <= regs.rsp < m.end), None)
    if stack is None:
        return None
    size = min(stack.end - regs.rsp, MAX_STACK_SCAN) & ~7
    words = memoryview(memory.read(regs.rsp, size)).cast("Q")
    low = min(h.start for h in rules.stack)
    high = max(h.end for h in rules.stack)
    for word in words:
        if low <= word < high:
            for hazard in rules.stack:
                if hazard.start <= word < hazard.end:
                    return f"thread {tid} may be {hazard.what}"
    return None

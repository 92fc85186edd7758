"""Original-code trampolines: the instructions an entry jump displaces, made to run elsewhere.

A level's dispatch stub falls back to a function's original code through a
trampoline in the patch memory: the whole instructions the 5-byte jump
overwrote (after ``endbr64``), relocated, then a jump back to the first byte
after them. The relocation is planned with capstone when the site is
validated (and cached as plain data), and encoded later without capstone:

- a RIP-relative memory operand keeps its target: its displacement is re-based;
- ``jmp``, ``jcc`` and ``call`` keep their targets, re-encoded with rel32;
- copying stops at the first ``ret`` or ``jmp``: nothing after it runs from
  the entry (a branch into the overwritten bytes is refused by site validation);
  a very short function whose jump also covers alignment padding is copied
  only up to its last real instruction, which must be such a ``ret``/``jmp``.

Refused with the reason: ``loop*``/``jrcxz`` (rel8 only), ``xbegin``, a branch
into the displaced instructions themselves, and anything capstone cannot decode.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cache
from typing import Any

from nonstop.userspace.errors import SiteError

ENDBR64 = b"\xf3\x0f\x1e\xfa"
JMP_SIZE = 5
_REL8_ONLY = ("loop", "loope", "loopne", "jrcxz", "jecxz", "jcxz")


@cache
def _detailed() -> Any:
    import capstone  # loaded only when a site is validated (cold runs use cached plans)

    disassembler = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    disassembler.detail = True
    return disassembler


def rel32(source_end: int, target: int, what: str) -> bytes:
    """The rel32 field of an instruction ending at SOURCE_END that reaches TARGET."""
    displacement = target - source_end
    if not -(1 << 31) <= displacement < 1 << 31:
        raise SiteError(f"{what}: {target:#x} is out of rel32 reach from {source_end:#x}")
    return struct.pack("<i", displacement)


@dataclass(frozen=True)
class Moved:
    """One displaced instruction and how to move it."""

    raw: bytes
    kind: str
    """copy (position independent), rip (RIP-relative operand), jmp, call or jcc."""
    field: int = 0
    """rip: offset of the displacement in RAW; jcc: the condition code (low opcode nibble)."""
    target: int = 0
    """rip and branches: the address reached, relative to the patch address."""

    @property
    def size(self) -> int:
        """Bytes it takes in the trampoline: branches are re-encoded in their rel32 form."""
        return {"jmp": 5, "call": 5, "jcc": 6}.get(self.kind, len(self.raw))


@dataclass(frozen=True)
class Displaced:
    """The instructions at a patch address that the entry jump overwrites, ready to move."""

    moved: tuple[Moved, ...]
    length: int
    """Bytes of original code they cover; execution continues at patch address + LENGTH."""
    returns: bool
    """The last one is a ret/jmp: no jump back is needed."""

    def size(self, cet: bool) -> int:
        """Bytes of the trampoline :meth:`encode` writes."""
        back = 0 if self.returns else JMP_SIZE
        return (len(ENDBR64) if cet else 0) + sum(m.size for m in self.moved) + back

    def targets(self, patch: int) -> list[int]:
        """Addresses the trampoline reaches with rel32 (placement keeps them in reach)."""
        found = [patch + m.target for m in self.moved if m.kind != "copy"]
        return found if self.returns else [*found, patch + self.length]

    def encode(self, at: int, patch: int, cet: bool) -> bytes:
        """The trampoline placed at AT for the original code at PATCH (endbr64 first if CET:
        it is reached through an indirect jump)."""
        out = bytearray(ENDBR64 if cet else b"")
        for moved in self.moved:
            here = at + len(out)
            target = patch + moved.target
            end = here + moved.size
            if moved.kind == "copy":
                out += moved.raw
            elif moved.kind == "rip":
                code = bytearray(moved.raw)
                code[moved.field : moved.field + 4] = rel32(end, target, "relocated operand")
                out += code
            elif moved.kind == "jcc":
                out += bytes([0x0F, 0x80 | moved.field]) + rel32(end, target, "relocated jcc")
            else:
                opcode = b"\xe9" if moved.kind == "jmp" else b"\xe8"
                out += opcode + rel32(end, target, f"relocated {moved.kind}")
        if not self.returns:
            here = at + len(out)
            out += b"\xe9" + rel32(here + JMP_SIZE, patch + self.length, "jump back")
        return bytes(out)

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON types, for the sites cache."""
        return {
            "length": self.length,
            "returns": self.returns,
            "moved": [[m.raw.hex(), m.kind, m.field, m.target] for m in self.moved],
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Displaced:
        """The plan a :meth:`to_json` document holds; its shape is trusted (the agent's own
        cache, kept only for files only root can change)."""
        moved = tuple(
            Moved(bytes.fromhex(raw), kind, field, target)
            for raw, kind, field, target in document["moved"]
        )
        return cls(moved, int(document["length"]), bool(document["returns"]))


def plan_displaced(function: str, code: bytes, patch: int) -> Displaced:
    """How to move the instructions at PATCH that a jump overwrites. CODE holds the bytes from
    PATCH to the end of the function (its alignment padding excluded)."""
    moved: list[Moved] = []
    covered = 0
    returns = False
    for insn in _detailed().disasm(code, patch):
        moved.append(_move(function, insn, patch))
        covered += insn.size
        last = insn.mnemonic.split()[-1]  # "bnd jmp", "notrack jmp": the prefix does not matter
        if last in ("ret", "jmp"):
            returns = True
            break
        if covered >= JMP_SIZE:
            break
    if not returns and covered < JMP_SIZE:
        raise SiteError(
            f"{function}: cannot relocate its first instructions (too short and not ending "
            "in ret/jmp, or not decodable)"
        )
    for item in moved:
        if item.kind in ("jmp", "call", "jcc") and 0 <= item.target < covered:
            raise SiteError(f"{function}: a displaced instruction branches into the displaced ones")
    return Displaced(tuple(moved), covered, returns)


def _move(function: str, insn: Any, patch: int) -> Moved:
    from capstone import CS_GRP_BRANCH_RELATIVE
    from capstone.x86 import X86_OP_MEM, X86_REG_RIP

    raw = bytes(insn.bytes)
    mnemonic = insn.mnemonic.split()[-1]
    if mnemonic in _REL8_ONLY or mnemonic == "xbegin":
        raise SiteError(
            f"{function}: {insn.mnemonic} at {insn.address:#x} cannot be relocated "
            "into a trampoline"
        )
    if insn.group(CS_GRP_BRANCH_RELATIVE):
        target = int(insn.operands[0].imm) - patch
        if mnemonic in ("jmp", "call"):
            return Moved(raw, mnemonic, 0, target)
        # jcc rel8 is 7x, jcc rel32 is 0f 8x: the condition is the low nibble either way.
        return Moved(raw, "jcc", raw[insn.imm_offset - 1] & 0xF, target)
    for operand in insn.operands:
        if operand.type == X86_OP_MEM and operand.mem.base == X86_REG_RIP:
            target = insn.address + insn.size + operand.mem.disp - patch
            return Moved(raw, "rip", insn.disp_offset, target)
    return Moved(raw, "copy")

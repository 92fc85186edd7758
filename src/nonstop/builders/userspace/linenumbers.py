"""Telling a line-number-only change apart from a real one.

A fix that adds lines above a function using ``assert`` (or ``__LINE__``)
changes that function's code: the line number is an immediate operand. Such a
function needs no patch. A function counts as line-number-only changed when,
instruction by instruction, the only differences are ``mov REG, IMM`` operands
where the old immediate is the number of a line (containing ``assert`` or
``__LINE__``) that the fix left unchanged and merely moved to the new immediate.
Anything else, however small, is a real change.
"""

from __future__ import annotations

from pathlib import Path

from capstone import CS_ARCH_X86, CS_MODE_64, Cs

from nonstop.builders.userspace.differ import Form
from nonstop.builders.userspace.sources import line_map, read_lines

_MARKERS = ("assert", "__LINE__")


class LineNumberCheck:
    """Decides, for one translation unit, whether two forms differ only in moved line numbers."""

    def __init__(self, old_source: Path, new_source: Path) -> None:
        self.old_lines = read_lines(old_source) or ()
        self.moved = line_map(old_source, new_source)
        self.disassembler = Cs(CS_ARCH_X86, CS_MODE_64)

    def __call__(self, old: Form, new: Form) -> bool:
        if old.size != new.size or old.relocations != new.relocations or not self.moved:
            return False
        before = list(self.disassembler.disasm(old.masked, 0))
        after = list(self.disassembler.disasm(new.masked, 0))
        if len(before) != len(after) or sum(i.size for i in before) != old.size:
            return False
        moved_any = False
        for a, b in zip(before, after, strict=True):
            if a.bytes == b.bytes:
                continue
            if not self._moved_line(a.mnemonic, a.op_str, b.mnemonic, b.op_str, a.size, b.size):
                return False
            moved_any = True
        return moved_any

    def _moved_line(self, m1: str, ops1: str, m2: str, ops2: str, n1: int, n2: int) -> bool:
        if m1 != "mov" or m2 != "mov" or n1 != n2:
            return False
        reg1, _, imm1 = ops1.partition(", ")
        reg2, _, imm2 = ops2.partition(", ")
        if reg1 != reg2 or "[" in reg1:
            return False
        try:
            old_line, new_line = int(imm1, 0), int(imm2, 0)
        except ValueError:
            return False
        if old_line == new_line or self.moved.get(old_line) != new_line:
            return False
        text = self.old_lines[old_line - 1] if 0 < old_line <= len(self.old_lines) else ""
        return any(marker in text for marker in _MARKERS)

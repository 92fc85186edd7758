"""Telling a function compiled with other alignment padding apart from another function.

The analysis checks that a function of the section build (``-ffunction-sections``)
is the target's function by its size. GCC aligns labels and loops inside a
function with padding whose length depends on where the function starts, and
a function alone in its section starts elsewhere than in the library's
``.text``: the same code can then differ by a few bytes of NOPs (wolfssl's
``CheckVersion``, 779 bytes built, 795 in the library). Two functions count as
the same code when, NOPs left out, they are the same instructions on the same
registers; immediates and memory displacements are not compared, since the
build's object is not relocated and jumps inside the function move with the
padding.
"""

from __future__ import annotations

from capstone import CS_ARCH_X86, CS_MODE_64, Cs, CsInsn
from capstone.x86_const import X86_INS_NOP, X86_OP_MEM, X86_OP_REG

_DISASSEMBLER = Cs(CS_ARCH_X86, CS_MODE_64)
_DISASSEMBLER.detail = True


def _shape(instruction: CsInsn) -> str:
    """An instruction without what relocation or padding changes: its mnemonic, registers,
    and the registers and scale of its memory operands."""
    operands = []
    for operand in instruction.operands:
        if operand.type == X86_OP_REG:
            operands.append(instruction.reg_name(operand.reg))
        elif operand.type == X86_OP_MEM:
            memory = operand.mem
            base = instruction.reg_name(memory.base) if memory.base else ""
            index = instruction.reg_name(memory.index) if memory.index else ""
            operands.append(f"[{base}+{index}*{memory.scale}]")
        else:
            operands.append("imm")
    return f"{instruction.mnemonic} {','.join(operands)}"


def _instructions(code: bytes) -> list[str] | None:
    """The shapes of CODE's instructions without NOPs, or None if it does not all decode."""
    shapes, decoded = [], 0
    for instruction in _DISASSEMBLER.disasm(code, 0):
        decoded += instruction.size
        is_nop = instruction.id == X86_INS_NOP or (
            instruction.mnemonic == "xchg" and instruction.op_str == "ax, ax"
        )
        if not is_nop:
            shapes.append(_shape(instruction))
    return shapes if decoded == len(code) else None


def same_but_padding(built: bytes, target: bytes) -> bool:
    """True when BUILT and TARGET are the same instructions but for NOP padding."""
    first = _instructions(built)
    return first is not None and first == _instructions(target)

"""Entry sites: where the 5-byte jump goes in each replaced function, validated with capstone.

A site is valid when the jump fits (inside the function, or in alignment
padding after a very short one), covers whole instructions, no branch in
the function targets the bytes it overwrites (a branch to the entry itself is
a tail call and stays correct), and the instructions it displaces can be
relocated into an original-code trampoline (``trampoline``). With ``endbr64``
at the entry the jump goes after it, so indirect calls still land on an
``endbr64`` under CET.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cache
from typing import Any

from nonstop.userspace.errors import SiteError
from nonstop.userspace.trampoline import ENDBR64 as ENDBR64
from nonstop.userspace.trampoline import JMP_SIZE as JMP_SIZE
from nonstop.userspace.trampoline import Displaced, plan_displaced, rel32

ALIGNMENT = 16
_PADDING = {"nop", "int3"}


@cache
def _disassembler() -> Any:
    import capstone  # only when a site is validated: cold runs with cached sites skip loading it

    return capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


@dataclass(frozen=True)
class Site:
    """A validated entry site; ENTRY (the function's start) and PATCH_ADDRESS (where the jump
    goes, after endbr64) are process addresses."""

    function: str
    entry: int
    patch_address: int
    original: bytes
    """The JMP_SIZE bytes the jump replaces, as in the library file."""
    cet: bool
    """The function starts with endbr64 (code reached indirectly for it must too)."""
    displaced: Displaced
    """The whole instructions the jump overwrites, for the original-code trampoline."""


def jump_bytes(source: int, target: int) -> bytes:
    """The 5-byte ``jmp rel32`` at SOURCE that reaches TARGET (SiteError when out of reach)."""
    return b"\xe9" + rel32(source + JMP_SIZE, target, "jump")


def jump_target(code: bytes, source: int) -> int | None:
    """Where the 5 bytes CODE at SOURCE jump to, if they are a rel32 jmp."""
    if len(code) < JMP_SIZE or code[0] != 0xE9:
        return None
    displacement: int = struct.unpack_from("<i", code, 1)[0]
    return source + JMP_SIZE + displacement


def plan_site(function: str, entry: int, size: int, code: bytes, other_starts: set[int]) -> Site:
    """Validate the entry of FUNCTION (SIZE bytes at ENTRY; CODE holds them and any padding)."""
    if size <= 0:
        raise SiteError(f"{function}: size unknown, cannot validate its entry")
    skip = len(ENDBR64) if code.startswith(ENDBR64) else 0
    patch = entry + skip
    room_end = entry + size
    if skip + JMP_SIZE > size:
        room_end = _padding_end(function, entry, size, code, other_starts)
    if patch + JMP_SIZE > room_end:
        raise SiteError(f"{function}: {size} bytes leave no room for a {JMP_SIZE}-byte jump")
    covered = 0
    for _, length, _, _ in _disassembler().disasm_lite(code[skip:], patch):
        covered += length
        if covered >= JMP_SIZE:
            break
    if covered < JMP_SIZE:
        raise SiteError(f"{function}: cannot decode the instructions at its entry")
    _check_branches(function, entry, size, code, patch)
    displaced = plan_displaced(function, code[skip:size], patch)
    return Site(function, entry, patch, code[skip : skip + JMP_SIZE], bool(skip), displaced)


def _padding_end(function: str, entry: int, size: int, code: bytes, starts: set[int]) -> int:
    """End of the alignment padding after a function too short for the jump."""
    end = entry + size
    boundary = (end + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT
    if any(end <= start < boundary for start in starts if start != entry):
        return end
    position = end
    for address, length, mnemonic, _ in _disassembler().disasm_lite(
        code[size : boundary - entry], end
    ):
        if mnemonic not in _PADDING or address + length > boundary:
            break
        position = address + length
    return position


def _check_branches(function: str, entry: int, size: int, code: bytes, patch: int) -> None:
    decoded = 0
    for address, length, mnemonic, operands in _disassembler().disasm_lite(code[:size], entry):
        decoded = address + length - entry
        if not (mnemonic.startswith(("j", "loop", "call", "xbegin"))):
            continue
        try:
            target = int(operands, 16)
        except ValueError:
            continue  # indirect: cannot tell, and compilers do not aim those mid-prologue
        if patch < target < patch + JMP_SIZE:
            raise SiteError(
                f"{function}: instruction at {address:#x} branches into the bytes the jump "
                "would overwrite"
            )
    if decoded < size:
        raise SiteError(f"{function}: cannot decode all of its {size} bytes")

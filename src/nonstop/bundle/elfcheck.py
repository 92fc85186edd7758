"""Bounds on untrusted ELF files, checked before anything reads their tables.

Every count, size and offset in an ELF file can lie: a sparse file can claim
4 GiB of program headers, a symbol table can claim billions of entries, a
name offset can point past its string table into a gigabyte without a NUL.
The root agent reads ELF files that any local user can map, so it checks the
headers against the real file size and the limits below before pyelftools
(or its own readers) touch them, and caps the bytes pyelftools may read from
one file. The limits are far above what a real shared library needs (libc:
2 MiB, ~3,000 dynamic symbols, ~0.5 MiB read to model it).
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

from elftools.common.exceptions import ELFError

if TYPE_CHECKING:  # pyelftools' parser is imported where a file is parsed, not by every command
    from elftools.elf.elffile import ELFFile

MAX_FILE_SIZE = 1 << 30
"""Largest ELF file read at all (the biggest Debian libraries are ~150 MiB)."""
MAX_PROGRAM_HEADERS = 256
MAX_NOTES = 64 << 10
"""Largest note segment or section (a build-id note is 36 bytes)."""
MAX_DYNAMIC = 1 << 20
MAX_VERSION_TABLE = 1 << 20
MAX_TABLE_ENTRIES = 2_000_000
"""Most entries in one symbol or relocation table."""
READ_BUDGET = 128 << 20
"""Most bytes pyelftools may read from one file (string reads past a table, looping
version chains and the like all end here)."""

ELF_HEADER = 64
PHDR_SIZE = 56
SHDR_SIZE = 64
SHN_LORESERVE = 0xFF00
SHT_SYMTAB, SHT_RELA, SHT_DYNAMIC, SHT_NOTE, SHT_NOBITS, SHT_REL, SHT_DYNSYM = 2, 4, 6, 7, 8, 9, 11
SHT_GNU_VERDEF, SHT_GNU_VERNEED, SHT_GNU_VERSYM = 0x6FFFFFFD, 0x6FFFFFFE, 0x6FFFFFFF
_ENTRY_SIZES = {SHT_SYMTAB: 24, SHT_DYNSYM: 24, SHT_RELA: 24, SHT_REL: 16, SHT_GNU_VERSYM: 2}


class ElfBoundsError(ELFError):
    """An ELF file whose headers claim more than the file holds or than a library needs."""


class ProgramHeader(NamedTuple):
    """The fields of one program header the readers use; OFFSET is in the file, VADDR
    link-time. Not checked against the file: the reader of a segment bounds its reads."""

    type: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int


@dataclass(frozen=True)
class ElfHeader:
    """An ELF header whose program and section header tables fit the file and the limits."""

    size: int
    """The real size of the file."""
    phoff: int
    phnum: int
    shoff: int
    shnum: int


def file_size(handle: BinaryIO) -> int:
    """The size of HANDLE's file, leaving its position at the end; ElfBoundsError above
    MAX_FILE_SIZE."""
    size = handle.seek(0, os.SEEK_END)
    if size > MAX_FILE_SIZE:
        raise ElfBoundsError(f"file of {size} bytes is larger than {MAX_FILE_SIZE} (not a library)")
    return size


def read_elf_header(handle: BinaryIO) -> ElfHeader | None:
    """The checked header of a little-endian 64-bit ELF file (None: not one).

    ElfBoundsError when its tables do not fit the file or the limits."""
    size = file_size(handle)
    handle.seek(0)
    raw = handle.read(ELF_HEADER)
    if len(raw) < ELF_HEADER or raw[:4] != b"\x7fELF" or raw[4] != 2 or raw[5] != 1:
        return None
    phoff, shoff = struct.unpack_from("<QQ", raw, 32)
    phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", raw, 54)
    if phnum and (phentsize != PHDR_SIZE or phnum > MAX_PROGRAM_HEADERS):
        raise ElfBoundsError(f"{phnum} program headers of {phentsize} bytes: not a sane table")
    if shoff and (shentsize != SHDR_SIZE or not 0 < shnum < SHN_LORESERVE or shstrndx >= shnum):
        raise ElfBoundsError(f"{shnum} section headers of {shentsize} bytes: not a sane table")
    if phoff + phnum * PHDR_SIZE > size or (shoff and shoff + shnum * SHDR_SIZE > size):
        raise ElfBoundsError("header tables extend past the end of the file")
    return ElfHeader(size, phoff, phnum, shoff, shnum if shoff else 0)


def read_program_headers(handle: BinaryIO) -> list[ProgramHeader] | None:
    """The program headers, with two bounded reads (None: not an ELF file)."""
    header = read_elf_header(handle)
    if header is None:
        return None
    handle.seek(header.phoff)
    table = handle.read(header.phnum * PHDR_SIZE)
    return [
        ProgramHeader(p_type, offset, vaddr, filesz, memsz)
        for p_type, _, offset, vaddr, _, filesz, memsz, _ in struct.iter_unpack("<IIQQQQQQ", table)
    ]


def check_sections(handle: BinaryIO, header: ElfHeader) -> None:
    """Every section lies inside the file; the tables pyelftools walks have sane sizes."""
    handle.seek(header.shoff)
    table = handle.read(header.shnum * SHDR_SIZE)
    for index in range(header.shnum):
        _, kind, _, _, offset, size, link, info, _, entsize = struct.unpack_from(
            "<IIQQQQIIQQ", table, index * SHDR_SIZE
        )
        if kind != SHT_NOBITS and offset + size > header.size:
            raise ElfBoundsError(f"section {index} extends past the end of the file")
        if link >= header.shnum:
            raise ElfBoundsError(f"section {index} links to section {link}, which does not exist")
        expected = _ENTRY_SIZES.get(kind)
        if expected is not None and (entsize != expected or size // expected > MAX_TABLE_ENTRIES):
            raise ElfBoundsError(f"section {index}: {size} bytes of {entsize}-byte entries")
        limit = {SHT_NOTE: MAX_NOTES, SHT_DYNAMIC: MAX_DYNAMIC}.get(kind)
        if kind in (SHT_GNU_VERDEF, SHT_GNU_VERNEED):
            limit = MAX_VERSION_TABLE
            if info > size // 16:  # every version entry takes 16 bytes or more
                raise ElfBoundsError(f"section {index} claims {info} versions in {size} bytes")
        if limit is not None and size > limit:
            raise ElfBoundsError(f"section {index} of {size} bytes is larger than {limit}")


class BudgetReader(io.RawIOBase):
    """A file that refuses to hand out more than its budget (READ_BUDGET) of bytes in all."""

    def __init__(self, handle: BinaryIO, budget: int = READ_BUDGET) -> None:
        super().__init__()
        self._handle = handle
        self._left = budget

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()

    def read(self, size: int | None = -1) -> bytes:
        """Up to SIZE bytes (all: up to the budget); ElfBoundsError once the reads together
        exceed the budget."""
        if size is None or size < 0:
            size = self._left + 1
        data = self._handle.read(min(size, self._left + 1))
        self._left -= len(data)
        if self._left < 0:
            raise ElfBoundsError(f"reading this file took more than {READ_BUDGET} bytes")
        return data


def open_elf(handle: BinaryIO) -> ELFFile:
    """pyelftools' view of HANDLE, once its headers passed the checks, reading within budget."""
    from elftools.elf.elffile import ELFFile

    header = read_elf_header(handle)
    if header is None:
        raise ElfBoundsError("not a little-endian 64-bit ELF file")
    check_sections(handle, header)
    handle.seek(0)
    return ELFFile(BudgetReader(handle))  # type: ignore[arg-type]

"""Writing a relocatable x86_64 ELF object (ET_REL) from sections, symbols and relocations.

Only what a patch object needs: PROGBITS/NOBITS contents, RELA relocations,
one symbol table with locals first. The output is deterministic: the same
input gives the same bytes, so bundles of the same fix compare equal.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_RELA = struct.Struct("<QQq")

SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_RELA, SHT_NOBITS = 1, 2, 3, 4, 8
SHF_INFO_LINK = 0x40
SHF_GROUP = 0x200
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION, STT_FILE, STT_TLS = 0, 1, 2, 3, 4, 6
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
STV_DEFAULT, STV_HIDDEN = 0, 2
SYMBOL_TYPES = {"notype": STT_NOTYPE, "object": STT_OBJECT, "func": STT_FUNC, "tls": STT_TLS}
SYMBOL_BINDS = {"local": STB_LOCAL, "global": STB_GLOBAL, "weak": STB_WEAK}


@dataclass
class OutSymbol:
    """A symbol to write; TYPE, BIND and VISIBILITY are ELF constants (STT_, STB_, STV_)."""

    name: str
    type: int
    bind: int
    section: OutSection | None
    """None: undefined."""
    value: int = 0
    size: int = 0
    visibility: int = STV_DEFAULT


@dataclass
class OutRelocation:
    """A RELA entry to write: OFFSET within its section, TYPE an R_X86_64_* number."""

    offset: int
    type: int
    symbol: OutSymbol
    addend: int


@dataclass
class OutSection:
    """A section to write; DATA is ignored for SHT_NOBITS, whose SIZE alone counts.

    Its SHF_GROUP flag is dropped on output: the patch object has no groups.
    """

    name: str
    type: int
    flags: int
    align: int
    data: bytes
    size: int
    entsize: int = 0
    relocations: list[OutRelocation] = field(default_factory=list)
    symbol: OutSymbol = field(init=False)
    """The section symbol, for relocations against the section itself."""

    def __post_init__(self) -> None:
        self.symbol = OutSymbol(name="", type=STT_SECTION, bind=STB_LOCAL, section=self)


class _StringTable:
    def __init__(self) -> None:
        self.data = bytearray(b"\0")
        self._offsets: dict[str, int] = {"": 0}

    def add(self, text: str) -> int:
        if text not in self._offsets:
            self._offsets[text] = len(self.data)
            self.data += text.encode() + b"\0"
        return self._offsets[text]


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def write_object(sections: list[OutSection], symbols: list[OutSymbol]) -> bytes:
    """The bytes of an ET_REL object with SECTIONS and SYMBOLS (section symbols are added)."""
    section_symbols = [section.symbol for section in sections]
    locals_ = section_symbols + [s for s in symbols if s.bind == STB_LOCAL]
    ordered = [OutSymbol("", STT_NOTYPE, STB_LOCAL, None), *locals_]
    ordered += [s for s in symbols if s.bind != STB_LOCAL]
    symbol_index = {id(s): i for i, s in enumerate(ordered)}

    # Section header order: null, contents, their RELAs, symtab, strtab, note, shstrtab.
    rela_sections = [s for s in sections if s.relocations]
    index_of = {id(s): i + 1 for i, s in enumerate(sections)}
    symtab_index = 1 + len(sections) + len(rela_sections)
    names = _StringTable()
    strings = _StringTable()

    symtab = bytearray(_SYM.pack(0, 0, 0, 0, 0, 0))
    for symbol in ordered[1:]:
        shndx = index_of[id(symbol.section)] if symbol.section is not None else 0
        symtab += _SYM.pack(
            strings.add(symbol.name),
            (symbol.bind << 4) | symbol.type,
            symbol.visibility,
            shndx,
            symbol.value,
            symbol.size,
        )

    headers: list[tuple[int, int, int, bytes | None, int, int, int, int, int]] = []
    # (name, type, flags, data or None for NOBITS, size, link, info, align, entsize)
    for section in sections:
        data = None if section.type == SHT_NOBITS else section.data
        headers.append(
            (
                names.add(section.name),
                section.type,
                section.flags & ~SHF_GROUP,
                data,
                section.size,
                0,
                0,
                section.align,
                section.entsize,
            )
        )
    for section in rela_sections:
        blob = b"".join(
            _RELA.pack(r.offset, (symbol_index[id(r.symbol)] << 32) | r.type, r.addend)
            for r in sorted(section.relocations, key=lambda r: r.offset)
        )
        headers.append(
            (
                names.add(".rela" + section.name),
                SHT_RELA,
                SHF_INFO_LINK,
                blob,
                len(blob),
                symtab_index,
                index_of[id(section)],
                8,
                _RELA.size,
            )
        )
    first_global = 1 + len(locals_)
    headers.append(
        (
            names.add(".symtab"),
            SHT_SYMTAB,
            0,
            bytes(symtab),
            len(symtab),
            symtab_index + 1,
            first_global,
            8,
            _SYM.size,
        )
    )
    headers.append(
        (names.add(".strtab"), SHT_STRTAB, 0, bytes(strings.data), len(strings.data), 0, 0, 1, 0)
    )
    # An empty .note.GNU-stack says the patch needs no executable stack.
    headers.append((names.add(".note.GNU-stack"), SHT_PROGBITS, 0, b"", 0, 0, 0, 1, 0))
    shstrtab_name = names.add(".shstrtab")
    headers.append((shstrtab_name, SHT_STRTAB, 0, bytes(names.data), len(names.data), 0, 0, 1, 0))

    body = bytearray(_EHDR.size)
    table = bytearray(_SHDR.pack(0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    for name, kind, flags, data, size, link, info, align, entsize in headers:
        offset = len(body)
        if data is not None:
            offset = _align(len(body), max(align, 1))
            body += bytes(offset - len(body)) + data
        table += _SHDR.pack(name, kind, flags, 0, offset, size, link, info, align, entsize)
    table_offset = _align(len(body), 8)
    body += bytes(table_offset - len(body)) + table
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little-endian, SysV
    body[: _EHDR.size] = _EHDR.pack(
        ident,
        1,  # ET_REL
        62,  # EM_X86_64
        1,
        0,
        0,
        table_offset,
        0,
        _EHDR.size,
        0,
        0,
        _SHDR.size,
        len(headers) + 1,
        len(headers),  # the section-name table is last
    )
    return bytes(body)

"""A relocatable x86_64 object file read into plain data: sections, symbols, relocations.

Only what the differ and the patch-object writer need is kept: the contents
and relocations of allocated sections (code and data), every symbol, and the
source file name. Debug information is read separately (``dwarf``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

from nonstop.builders.errors import BuilderError

SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR, SHF_MERGE, SHF_STRINGS = 0x1, 0x2, 0x4, 0x10, 0x20
SHF_INFO_LINK, SHF_GROUP, SHF_TLS = 0x40, 0x200, 0x400

# x86_64 relocation types: number -> (name, width in bytes, PC-relative).
RELOCATION_TYPES: dict[int, tuple[str, int, bool]] = {
    1: ("R_X86_64_64", 8, False),
    2: ("R_X86_64_PC32", 4, True),
    4: ("R_X86_64_PLT32", 4, True),
    9: ("R_X86_64_GOTPCREL", 4, True),
    10: ("R_X86_64_32", 4, False),
    11: ("R_X86_64_32S", 4, False),
    12: ("R_X86_64_16", 2, False),
    13: ("R_X86_64_PC16", 2, True),
    14: ("R_X86_64_8", 1, False),
    15: ("R_X86_64_PC8", 1, True),
    19: ("R_X86_64_TLSGD", 4, True),
    20: ("R_X86_64_TLSLD", 4, True),
    21: ("R_X86_64_DTPOFF32", 4, False),
    22: ("R_X86_64_GOTTPOFF", 4, True),
    23: ("R_X86_64_TPOFF32", 4, False),
    24: ("R_X86_64_PC64", 8, True),
    25: ("R_X86_64_GOTOFF64", 8, False),
    26: ("R_X86_64_GOTPC32", 4, True),
    32: ("R_X86_64_SIZE32", 4, False),
    33: ("R_X86_64_SIZE64", 8, False),
    34: ("R_X86_64_GOTPC32_TLSDESC", 4, True),
    35: ("R_X86_64_TLSDESC_CALL", 0, False),
    41: ("R_X86_64_GOTPCRELX", 4, True),
    42: ("R_X86_64_REX_GOTPCRELX", 4, True),
}
R_X86_64_PC32, R_X86_64_PLT32 = 2, 4

_KINDS = {
    "STT_NOTYPE": "notype",
    "STT_FUNC": "func",
    "STT_OBJECT": "object",
    "STT_SECTION": "section",
    "STT_FILE": "file",
    "STT_TLS": "tls",
    "STT_GNU_IFUNC": "ifunc",
    "STT_LOOS": "ifunc",  # pyelftools' name for STT_GNU_IFUNC
}
_BINDS = {"STB_LOCAL": "local", "STB_GLOBAL": "global", "STB_WEAK": "weak", "STB_LOOS": "global"}


@dataclass(frozen=True)
class Symbol:
    """One .symtab entry; INDEX is its position there, which relocations refer to."""

    index: int
    name: str
    value: int
    size: int
    kind: str
    """func, object, notype, section, file, tls, ifunc or common."""
    bind: str
    section: int | None
    """Index of the defining section; None when undefined, absolute or common."""
    visibility: str = "default"

    @property
    def defined(self) -> bool:
        """Defined in a section of this object: absolute and common symbols are not."""
        return self.section is not None

    @property
    def is_label(self) -> bool:
        """An assembler-local label gas kept (``.LC0``): a place, not a program symbol."""
        return self.kind == "notype" and self.bind == "local" and self.name.startswith(".L")


@dataclass(frozen=True)
class Relocation:
    """One RELA entry; TYPE is always in RELOCATION_TYPES (ObjectFile refuses others).

    OFFSET is within the section it applies to, SYMBOL an index into the symbols.
    """

    offset: int
    type: int
    symbol: int
    addend: int

    @property
    def type_name(self) -> str:
        return RELOCATION_TYPES[self.type][0]

    @property
    def width(self) -> int:
        """Bytes of the field the relocation writes (0 for the TLSDESC_CALL marker)."""
        return RELOCATION_TYPES[self.type][1]

    @property
    def pc_relative(self) -> bool:
        """The field holds a distance from itself (S + A - P), not an address."""
        return RELOCATION_TYPES[self.type][2]


@dataclass
class Section:
    """One section; contents and relocations are kept for allocated sections only."""

    index: int
    name: str
    type: str
    flags: int
    align: int
    entsize: int
    size: int
    data: bytes
    """Contents; empty for SHT_NOBITS (zero-filled when loaded)."""
    relocations: list[Relocation] = field(default_factory=list)

    @property
    def alloc(self) -> bool:
        return bool(self.flags & SHF_ALLOC)

    @property
    def executable(self) -> bool:
        return bool(self.flags & SHF_EXECINSTR)

    @property
    def writable(self) -> bool:
        return bool(self.flags & SHF_WRITE)

    @property
    def nobits(self) -> bool:
        return self.type == "SHT_NOBITS"

    @property
    def mergeable_strings(self) -> bool:
        """Strings the linker may merge and move: only their content identifies them."""
        return bool(self.flags & SHF_MERGE) and bool(self.flags & SHF_STRINGS)

    @property
    def mergeable_constants(self) -> bool:
        """ENTSIZE-byte constants the linker may merge and move: compared by content."""
        return bool(self.flags & SHF_MERGE) and not self.flags & SHF_STRINGS

    def content(self, start: int, end: int) -> bytes:
        """Bytes START to END of the section as loaded: zeros for NOBITS (.bss)."""
        if self.nobits:
            return bytes(max(0, end - start))
        return self.data[start:end]


class ObjectFile:
    """One relocatable object, loaded eagerly (objects of a build are small)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with path.open("rb") as handle:
                elf = ELFFile(handle)
                if elf["e_type"] != "ET_REL" or elf["e_machine"] != "EM_X86_64":
                    raise BuilderError(f"{path} is not a relocatable x86_64 object")
                self.sections = [
                    _read_section(index, s) for index, s in enumerate(elf.iter_sections())
                ]
                self.symbols = _read_symbols(elf)
                self._attach_relocations(elf)
        except (ELFError, OSError) as exc:
            raise BuilderError(f"cannot read object {path}: {exc}") from None
        files = [s.name for s in self.symbols if s.kind == "file" and s.name]
        self.source_name = files[0] if files else path.with_suffix(".c").name

    def _attach_relocations(self, elf: ELFFile) -> None:
        for section in elf.iter_sections():
            if not isinstance(section, RelocationSection) or not section.is_RELA():
                continue
            target = self.sections[section["sh_info"]]
            if not target.alloc:
                continue  # debug information: not part of the program
            for reloc in section.iter_relocations():
                kind = reloc["r_info_type"]
                if kind not in RELOCATION_TYPES:
                    raise BuilderError(
                        f"{self.path}: relocation type {kind} in {target.name} is not supported"
                    )
                target.relocations.append(
                    Relocation(reloc["r_offset"], kind, reloc["r_info_sym"], reloc["r_addend"])
                )
            target.relocations.sort(key=lambda r: r.offset)

    @cached_property
    def by_name(self) -> dict[str, Symbol]:
        """Named program symbols (functions, objects, TLS, IFUNCs), defined or not."""
        return {
            s.name: s
            for s in self.symbols
            if s.name and s.kind not in ("section", "file") and not s.is_label
        }

    @cached_property
    def _by_section(self) -> dict[int, list[Symbol]]:
        table: dict[int, list[Symbol]] = {}
        for s in self.symbols:
            program = s.kind in ("func", "object", "tls", "ifunc", "notype")
            if s.section is not None and program and not s.is_label and s.name:
                table.setdefault(s.section, []).append(s)
        return table

    def symbols_in(self, section: int) -> list[Symbol]:
        """Program symbols (not labels, not the section symbol) defined in SECTION."""
        return self._by_section.get(section, [])

    def covering(self, section: int, offset: int) -> Symbol | None:
        """The program symbol of SECTION whose extent holds OFFSET (or starts there)."""
        found = None
        for symbol in self.symbols_in(section):
            inside = symbol.value <= offset < symbol.value + max(symbol.size, 1)
            if inside and (found is None or symbol.size > found.size):
                found = symbol
        return found

    def relocations_of(self, symbol: Symbol) -> list[Relocation]:
        """Relocations applying inside SYMBOL's extent, offsets relative to the symbol."""
        assert symbol.section is not None
        section = self.sections[symbol.section]
        end = symbol.value + symbol.size
        return [
            Relocation(r.offset - symbol.value, r.type, r.symbol, r.addend)
            for r in section.relocations
            if symbol.value <= r.offset < end
        ]

    def bytes_of(self, symbol: Symbol) -> bytes:
        """The contents of the defined SYMBOL (zeros for one in .bss)."""
        assert symbol.section is not None
        return self.sections[symbol.section].content(symbol.value, symbol.value + symbol.size)


def _read_section(index: int, section: object) -> Section:
    header = section.header  # type: ignore[attr-defined]
    alloc = bool(header["sh_flags"] & SHF_ALLOC)
    nobits = header["sh_type"] == "SHT_NOBITS"
    data = section.data() if alloc and not nobits else b""  # type: ignore[attr-defined]
    return Section(
        index=index,
        name=section.name,  # type: ignore[attr-defined]
        type=str(header["sh_type"]),
        flags=int(header["sh_flags"]),
        align=max(1, int(header["sh_addralign"])),
        entsize=int(header["sh_entsize"]),
        size=int(header["sh_size"]),
        data=bytes(data),
    )


def _read_symbols(elf: ELFFile) -> list[Symbol]:
    table = elf.get_section_by_name(".symtab")
    if not isinstance(table, SymbolTableSection):
        return []
    symbols = []
    for index, sym in enumerate(table.iter_symbols()):
        shndx = sym["st_shndx"]
        kind = _KINDS.get(sym["st_info"]["type"], "notype")
        section: int | None = shndx if isinstance(shndx, int) else None
        if shndx == "SHN_COMMON":
            kind = "common"
        symbols.append(
            Symbol(
                index=index,
                name=sym.name,
                value=int(sym["st_value"]),
                size=int(sym["st_size"]),
                kind=kind,
                bind=_BINDS.get(sym["st_info"]["bind"], "local"),
                section=section if section else None,
                visibility=str(sym["st_other"]["visibility"]).removeprefix("STV_").lower(),
            )
        )
    return symbols

"""The patch-object linker: lay out a relocatable x86_64 object and relocate it for one process.

Linking happens in two steps so that every refusal comes before any process
is touched: :func:`prepare_link` lays the object out and resolves every
symbol (failing with :class:`LinkError` on anything unsupported), then
:meth:`PreparedLink.relocate` applies the relocations once the patch memory's
address is known.

Layout of the patch memory (one memfd, two protections)::

    [header][text + PLT stubs][rodata][GOT]  R-X   (page aligned)
    [data][bss]                              RW-

Never writable and executable at once; new variables live in the RW part.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import Section, SymbolTableSection

from nonstop.userspace.errors import LinkError
from nonstop.userspace.scope import Resolved

PAGE = 4096
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR, SHF_TLS = 0x1, 0x2, 0x4, 0x400
STUB_SIZE = 8  # jmp *[rip+slot] (6 bytes), padded

R_NONE, R_64, R_PC32, R_PLT32 = 0, 1, 2, 4
R_GOTPCREL, R_32, R_32S = 9, 10, 11
R_PC64, R_GOTOFF64, R_GOTPC32, R_GOTPC64 = 24, 25, 26, 29
R_GOTPCRELX, R_REX_GOTPCRELX = 41, 42
_GOT_RELOCS = {R_GOTPCREL, R_GOTPCRELX, R_REX_GOTPCRELX}
_TLS_RELOCS = {16, 17, 18, 19, 20, 21, 22, 23, 34, 35, 36}
_SUPPORTED = {
    R_NONE,
    R_64,
    R_PC32,
    R_PLT32,
    R_32,
    R_32S,
    R_PC64,
    R_GOTOFF64,
    R_GOTPC32,
    R_GOTPC64,
} | _GOT_RELOCS
_REFUSED_SECTIONS = (".init_array", ".fini_array", ".preinit_array", ".ctors", ".dtors")
_SKIPPED_SECTIONS = (".eh_frame", ".note", ".comment", ".group")


def _align(value: int, alignment: int) -> int:
    alignment = max(alignment, 1)
    return (value + alignment - 1) // alignment * alignment


@dataclass(frozen=True)
class PlacedSection:
    index: int
    name: str
    offset: int
    """From the start of the patch memory."""
    size: int
    data: bytes | None
    """None for bss."""


@dataclass
class PreparedLink:
    """A patch object laid out and resolved for one process, waiting for its address."""

    header_size: int
    rx_size: int
    rw_size: int
    sections: dict[int, PlacedSection]
    symbol_offsets: dict[str, int]
    """Defined (global and local) symbols of the object -> offset in the patch memory."""
    external: dict[str, Resolved]
    """Undefined symbols -> their address in the process."""
    got_slots: dict[str, int]
    stubs: dict[str, int]
    text_range: tuple[int, int]
    relocations: list[tuple[int, int, int, str, int]] = field(default_factory=list)
    """(section index, offset in section, type, symbol key, addend)."""
    section_symbols: dict[str, int] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.rx_size + self.rw_size

    def far_targets(self) -> list[int]:
        """Addresses the patch reaches with rel32 displacements: placement keeps them in reach."""
        return [
            self.external[key].address
            for _, _, rtype, key, _ in self.relocations
            if rtype == R_PC32 and key in self.external
        ]

    def address_of(self, base: int, key: str) -> int:
        if key in self.external:
            return self.external[key].address
        if key in self.section_symbols:
            return base + self.section_symbols[key]
        return base + self.symbol_offsets[key]

    def relocate(self, base: int) -> tuple[bytearray, bytearray]:
        """The R-X and RW bytes of the patch memory at BASE (header area left zero)."""
        image = bytearray(self.size)
        for placed in self.sections.values():
            if placed.data is not None:
                image[placed.offset : placed.offset + placed.size] = placed.data
        got_base = base + min(self.got_slots.values(), default=self.rx_size)
        for key, slot in self.got_slots.items():
            struct.pack_into("<Q", image, slot, self.address_of(base, key))
        for key, stub in self.stubs.items():
            slot = self.got_slots[key]
            image[stub : stub + 6] = b"\xff\x25" + struct.pack("<i", slot - (stub + 6))
            image[stub + 6 : stub + STUB_SIZE] = b"\xcc\xcc"
        for section_index, offset, rtype, key, addend in self.relocations:
            placed = self.sections[section_index]
            where = placed.offset + offset
            place = base + where
            symbol = self.address_of(base, key)
            value = self._value(rtype, key, symbol, addend, place, base, got_base)
            if rtype in (R_64, R_PC64, R_GOTOFF64, R_GOTPC64):
                struct.pack_into("<Q", image, where, value & (1 << 64) - 1)
            elif rtype == R_32:
                if not 0 <= value < 1 << 32:
                    raise LinkError(f"R_X86_64_32 to {key} does not fit at {place:#x}")
                struct.pack_into("<I", image, where, value)
            elif rtype != R_NONE:
                if not -(1 << 31) <= value < 1 << 31:
                    raise LinkError(f"relocation {rtype} to {key} out of rel32 reach")
                struct.pack_into("<i", image, where, value)
        return image[: self.rx_size], image[self.rx_size :]

    def _value(
        self, rtype: int, key: str, symbol: int, addend: int, place: int, base: int, got: int
    ) -> int:
        if rtype in (R_64, R_32, R_32S):
            return symbol + addend
        if rtype in (R_PC32, R_PC64):
            return symbol + addend - place
        if rtype == R_PLT32:
            direct = symbol + addend - place
            if key in self.stubs and not -(1 << 31) <= direct < 1 << 31:
                return base + self.stubs[key] + addend - place
            return direct
        if rtype in _GOT_RELOCS:
            return base + self.got_slots[key] + addend - place
        if rtype == R_GOTOFF64:
            return symbol + addend - got
        if rtype in (R_GOTPC32, R_GOTPC64):
            return got + addend - place
        return 0


def _classify(section: Section) -> str | None:
    """'text', 'rodata', 'data', 'bss' or None (not loaded); LinkError when unsupported."""
    flags = section["sh_flags"]
    name = section.name
    if not flags & SHF_ALLOC:
        return None
    if flags & SHF_TLS:
        raise LinkError(f"section {name}: new thread-local variables are not supported")
    if name.startswith(_REFUSED_SECTIONS):
        raise LinkError(f"section {name}: constructors and destructors are not supported")
    if name.startswith(_SKIPPED_SECTIONS) or section["sh_type"] == "SHT_NOTE":
        return None
    if flags & SHF_EXECINSTR:
        return "text"
    if flags & SHF_WRITE:
        return "bss" if section["sh_type"] == "SHT_NOBITS" else "data"
    return "rodata"


def prepare_link(
    object_bytes: bytes, header_size: int, resolve: Callable[[str], Resolved | None]
) -> PreparedLink:
    """Lay out the patch object after a header of HEADER_SIZE bytes and resolve its symbols."""
    try:
        elf = ELFFile(io.BytesIO(object_bytes))
        return _prepare(elf, header_size, resolve)
    except ELFError as exc:
        raise LinkError(f"patch object is not a valid ELF file: {exc}") from None


def _prepare(
    elf: ELFFile, header_size: int, resolve: Callable[[str], Resolved | None]
) -> PreparedLink:
    if elf["e_type"] != "ET_REL" or elf["e_machine"] != "EM_X86_64":
        raise LinkError("patch object must be a relocatable x86_64 ELF object (gcc -c)")
    kinds: dict[int, str] = {}
    for index, section in enumerate(elf.iter_sections()):
        kind = _classify(section)
        if kind is not None:
            kinds[index] = kind
    symtab = elf.get_section_by_name(".symtab")
    if not isinstance(symtab, SymbolTableSection):
        raise LinkError("patch object has no symbol table")
    commons = [s for s in symtab.iter_symbols() if s["st_shndx"] == "SHN_COMMON"]

    sections: dict[int, PlacedSection] = {}
    offset = header_size

    def place(index: int, size: int, alignment: int, data: bytes | None) -> None:
        nonlocal offset
        offset = _align(offset, alignment)
        section = elf.get_section(index)
        sections[index] = PlacedSection(index, section.name, offset, size, data)
        offset += size

    for wanted in ("text", "rodata"):
        for index, kind in kinds.items():
            if kind == wanted:
                section = elf.get_section(index)
                place(index, section["sh_size"], section["sh_addralign"], section.data())
        if wanted == "text":
            text_range = (header_size, offset)

    relocations: list[tuple[int, int, int, str, int]] = []
    names = [(s.name, s) for s in symtab.iter_symbols()]
    got_keys: set[str] = set()
    plt_keys: set[str] = set()
    for rel_section in elf.iter_sections():
        if not isinstance(rel_section, RelocationSection):
            continue
        target_index = rel_section["sh_info"]
        if target_index not in kinds:
            continue
        if not rel_section.is_RELA():
            raise LinkError(f"{rel_section.name}: REL relocations are not used on x86_64")
        for rel in rel_section.iter_relocations():
            rtype = rel["r_info_type"]
            if rtype in _TLS_RELOCS:
                raise LinkError("thread-local storage relocations are not supported")
            if rtype not in _SUPPORTED:
                raise LinkError(f"unsupported relocation type {rtype} in {rel_section.name}")
            name, sym = names[rel["r_info_sym"]]
            key = _symbol_key(name, sym, rel["r_info_sym"])
            if rtype in _GOT_RELOCS:
                got_keys.add(key)
            if rtype == R_PLT32 and sym["st_shndx"] == "SHN_UNDEF":
                plt_keys.add(key)
            relocations.append((target_index, rel["r_offset"], rtype, key, rel["r_addend"]))

    stubs: dict[str, int] = {}
    offset = _align(offset, 16)
    for key in sorted(plt_keys):
        stubs[key] = offset
        offset += STUB_SIZE
    got_keys |= plt_keys
    offset = _align(offset, 8)
    got_slots: dict[str, int] = {}
    for key in sorted(got_keys):
        got_slots[key] = offset
        offset += 8
    rx_size = _align(max(offset, header_size), PAGE)

    offset = rx_size
    for wanted in ("data", "bss"):
        for index, kind in kinds.items():
            if kind == wanted:
                section = elf.get_section(index)
                data = section.data() if wanted == "data" else None
                place(index, section["sh_size"], section["sh_addralign"], data)
    symbol_offsets: dict[str, int] = {}
    for sym in commons:
        offset = _align(offset, max(sym["st_value"], 1))
        symbol_offsets[sym.name] = offset
        offset += sym["st_size"]
    rw_size = _align(offset, PAGE) - rx_size

    external: dict[str, Resolved] = {}
    section_symbols: dict[str, int] = {}
    referenced = {r[3] for r in relocations}
    for number, (name, sym) in enumerate(names):
        shndx = sym["st_shndx"]
        key = _symbol_key(name, sym, number)
        if sym["st_info"]["type"] == "STT_FILE":
            continue
        if sym["st_info"]["type"] == "STT_SECTION":
            if isinstance(shndx, int) and shndx in sections:
                section_symbols[key] = sections[shndx].offset
            continue
        if shndx == "SHN_UNDEF":
            if not name or key not in referenced:
                continue
            if name == "_GLOBAL_OFFSET_TABLE_":
                section_symbols[key] = min(got_slots.values(), default=rx_size)
                continue
            found = resolve(name)
            if found is None:
                if sym["st_info"]["bind"] == "STB_WEAK":
                    found = Resolved(0, "undefined weak")
                else:
                    raise LinkError(f"undefined symbol {name}: not found in the process")
            external[key] = found
        elif shndx == "SHN_ABS" and key in referenced:
            raise LinkError(f"absolute symbol {name} is not supported")
        elif isinstance(shndx, int) and shndx in sections:
            symbol_offsets[key] = sections[shndx].offset + sym["st_value"]
    for _, _, _, key, _ in relocations:
        if key not in external and key not in symbol_offsets and key not in section_symbols:
            raise LinkError(f"relocation against {key} which is not in a loaded section")
    for key in [k for k in stubs if k not in external]:
        del stubs[key]  # calls to functions of the patch itself are always in reach
    return PreparedLink(
        header_size=header_size,
        rx_size=rx_size,
        rw_size=rw_size,
        sections=sections,
        symbol_offsets=symbol_offsets,
        external=external,
        got_slots=got_slots,
        stubs=stubs,
        text_range=text_range,
        relocations=relocations,
        section_symbols=section_symbols,
    )


def _symbol_key(name: str, sym: object, number: int) -> str:
    """Global symbols by name; local and section symbols by table index (names repeat)."""
    entry = sym  # pyelftools Symbol
    bind = entry["st_info"]["bind"]  # type: ignore[index]
    if bind == "STB_LOCAL" or not name:
        return f"{name}#{number}"
    return name

"""The patch-object linker: lay out a relocatable x86_64 object and relocate it for one process.

Linking happens in two steps so that every refusal comes before any process
is touched: :func:`prepare_link` lays the object out and resolves every
symbol (failing with :class:`LinkError` on anything unsupported), then
:meth:`PreparedLink.relocate` applies the relocations once the patch memory's
address is known (it refuses only a 32-bit relocation that address cannot hold,
before anything of the patch is written into the process).

Layout of the patch memory (one memfd, two protections)::

    [header][text][rodata][PLT stubs][GOT]  R-X   (page aligned)
    [data][bss, common symbols]             RW-

The first HEADER_SIZE bytes are the caller's (the engine puts its header and the
dispatch area there).

Never writable and executable at once; new variables live in the RW part.
"""

from __future__ import annotations

import functools
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
    """A loaded section of the patch object where the layout put it."""

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
        """Bytes of the whole patch memory (R-X part, header included, then RW), in pages."""
        return self.rx_size + self.rw_size

    def far_targets(self) -> list[int]:
        """Addresses the patch reaches with rel32 displacements: placement keeps them in reach."""
        return [
            self.external[key].address
            for _, _, rtype, key, _ in self.relocations
            if rtype == R_PC32 and key in self.external
        ]

    def address_of(self, base: int, key: str) -> int:
        """The address symbol KEY stands for with the patch memory at BASE (an external symbol
        keeps its address in the process)."""
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


@dataclass(frozen=True)
class ObjectSymbol:
    """A symbol of the patch object. KEY names it in relocations: a global one by its name,
    a local or section symbol by name#index (local names repeat)."""

    name: str
    key: str
    section: int | str
    """Section index, or SHN_UNDEF / SHN_ABS / SHN_COMMON."""
    type: str
    bind: str
    value: int
    size: int


@dataclass(frozen=True)
class ObjectSection:
    """A loaded section of the patch object; KIND is text, rodata, data or bss (DATA None)."""

    index: int
    name: str
    kind: str
    size: int
    alignment: int
    data: bytes | None


@dataclass(frozen=True)
class PatchObject:
    """Everything the linker needs from the patch object, read once (pyelftools is slow)."""

    sections: tuple[ObjectSection, ...]
    symbols: tuple[ObjectSymbol, ...]
    relocations: tuple[tuple[int, int, int, str, int], ...]
    got_keys: frozenset[str]
    plt_keys: frozenset[str]


@functools.lru_cache(maxsize=8)
def parse_patch_object(object_bytes: bytes) -> PatchObject:
    """Read and check the patch object (LinkError when it is unusable); cached per content."""
    try:
        return _parse(ELFFile(io.BytesIO(object_bytes)))
    except ELFError as exc:
        raise LinkError(f"patch object is not a valid ELF file: {exc}") from None


def _parse(elf: ELFFile) -> PatchObject:
    if elf["e_type"] != "ET_REL" or elf["e_machine"] != "EM_X86_64":
        raise LinkError("patch object must be a relocatable x86_64 ELF object (gcc -c)")
    sections = []
    for index, section in enumerate(elf.iter_sections()):
        kind = _classify(section)
        if kind is not None:
            data = None if kind == "bss" else section.data()
            sections.append(
                ObjectSection(
                    index, section.name, kind, section["sh_size"], section["sh_addralign"], data
                )
            )
    symtab = elf.get_section_by_name(".symtab")
    if not isinstance(symtab, SymbolTableSection):
        raise LinkError("patch object has no symbol table")
    symbols = tuple(
        ObjectSymbol(
            name=sym.name,
            key=_symbol_key(sym.name, sym["st_info"]["bind"], number),
            section=sym["st_shndx"],
            type=sym["st_info"]["type"],
            bind=sym["st_info"]["bind"],
            value=sym["st_value"],
            size=sym["st_size"],
        )
        for number, sym in enumerate(symtab.iter_symbols())
    )
    loaded = {section.index for section in sections}
    relocations = []
    got_keys: set[str] = set()
    plt_keys: set[str] = set()
    for rel_section in elf.iter_sections():
        if not isinstance(rel_section, RelocationSection):
            continue
        target_index = rel_section["sh_info"]
        if target_index not in loaded:
            continue
        if not rel_section.is_RELA():
            raise LinkError(f"{rel_section.name}: REL relocations are not used on x86_64")
        for rel in rel_section.iter_relocations():
            rtype = rel["r_info_type"]
            if rtype in _TLS_RELOCS:
                raise LinkError("thread-local storage relocations are not supported")
            if rtype not in _SUPPORTED:
                raise LinkError(f"unsupported relocation type {rtype} in {rel_section.name}")
            symbol = symbols[rel["r_info_sym"]]
            if rtype in _GOT_RELOCS:
                got_keys.add(symbol.key)
            if rtype == R_PLT32 and symbol.section == "SHN_UNDEF":
                plt_keys.add(symbol.key)
            relocations.append((target_index, rel["r_offset"], rtype, symbol.key, rel["r_addend"]))
    return PatchObject(
        tuple(sections), symbols, tuple(relocations), frozenset(got_keys), frozenset(plt_keys)
    )


def prepare_link(
    object_bytes: bytes, header_size: int, resolve: Callable[[str], Resolved | None]
) -> PreparedLink:
    """Lay out the patch object after a header of HEADER_SIZE bytes and resolve its symbols."""
    obj = parse_patch_object(object_bytes)
    placed: dict[int, PlacedSection] = {}
    offset = header_size

    def place(section: ObjectSection) -> None:
        nonlocal offset
        offset = _align(offset, section.alignment)
        placed[section.index] = PlacedSection(
            section.index, section.name, offset, section.size, section.data
        )
        offset += section.size

    for section in obj.sections:
        if section.kind == "text":
            place(section)
    text_range = (header_size, offset)
    for section in obj.sections:
        if section.kind == "rodata":
            place(section)
    stubs: dict[str, int] = {}
    offset = _align(offset, 16)
    for key in sorted(obj.plt_keys):
        stubs[key] = offset
        offset += STUB_SIZE
    offset = _align(offset, 8)
    got_slots: dict[str, int] = {}
    for key in sorted(obj.got_keys | obj.plt_keys):
        got_slots[key] = offset
        offset += 8
    rx_size = _align(max(offset, header_size), PAGE)

    offset = rx_size
    for wanted in ("data", "bss"):
        for section in obj.sections:
            if section.kind == wanted:
                place(section)
    symbol_offsets: dict[str, int] = {}
    for sym in obj.symbols:
        if sym.section == "SHN_COMMON":
            offset = _align(offset, max(sym.value, 1))
            symbol_offsets[sym.key] = offset
            offset += sym.size
    rw_size = _align(offset, PAGE) - rx_size

    external: dict[str, Resolved] = {}
    section_symbols: dict[str, int] = {}
    referenced = {r[3] for r in obj.relocations}
    for sym in obj.symbols:
        if sym.type == "STT_FILE":
            continue
        if sym.type == "STT_SECTION":
            if isinstance(sym.section, int) and sym.section in placed:
                section_symbols[sym.key] = placed[sym.section].offset
            continue
        if sym.section == "SHN_UNDEF":
            if not sym.name or sym.key not in referenced:
                continue
            if sym.name == "_GLOBAL_OFFSET_TABLE_":
                section_symbols[sym.key] = min(got_slots.values(), default=rx_size)
                continue
            found = resolve(sym.name)
            if found is None:
                if sym.bind != "STB_WEAK":
                    raise LinkError(f"undefined symbol {sym.name}: not found in the process")
                found = Resolved(0, "undefined weak")
            external[sym.key] = found
        elif sym.section == "SHN_ABS" and sym.key in referenced:
            raise LinkError(f"absolute symbol {sym.name} is not supported")
        elif isinstance(sym.section, int) and sym.section in placed:
            symbol_offsets[sym.key] = placed[sym.section].offset + sym.value
    for _, _, _, key, _ in obj.relocations:
        if key not in external and key not in symbol_offsets and key not in section_symbols:
            raise LinkError(f"relocation against {key} which is not in a loaded section")
    for key in [k for k in stubs if k not in external]:
        del stubs[key]  # calls to functions of the patch itself are always in reach
    return PreparedLink(
        header_size=header_size,
        rx_size=rx_size,
        rw_size=rw_size,
        sections=placed,
        symbol_offsets=symbol_offsets,
        external=external,
        got_slots=got_slots,
        stubs=stubs,
        text_range=text_range,
        relocations=list(obj.relocations),
        section_symbols=section_symbols,
    )


def _symbol_key(name: str, bind: str, number: int) -> str:
    """Global symbols by name; local and section symbols by table index (names repeat)."""
    if bind == "STB_LOCAL" or not name:
        return f"{name}#{number}"
    return name

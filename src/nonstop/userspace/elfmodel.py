"""What the engine needs to know about one ELF file, parsed once and cached per build-id.

Parsing libc with pyelftools costs far more than a whole patch, so the model
is kept in memory and as a small JSON file per build-id in a cache directory
(a build-id names exactly one build, so a cached model never goes stale).
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

from nonstop.bundle.identity import elf_build_id, elf_soname, parse_build_id_notes

MODEL_VERSION = 1
PAGE = 4096
# Relocation types (x86_64) through which a module imports a symbol into a GOT slot.
R_X86_64_64 = 1
R_X86_64_COPY = 5
R_X86_64_GLOB_DAT = 6
R_X86_64_JUMP_SLOT = 7
R_X86_64_IRELATIVE = 37
_IMPORT_TYPES = {R_X86_64_64, R_X86_64_GLOB_DAT, R_X86_64_JUMP_SLOT}
_SYMBOL_TYPES = {
    "STT_FUNC": "func",
    "STT_OBJECT": "object",
    "STT_TLS": "tls",
    "STT_GNU_IFUNC": "ifunc",
    "STT_LOOS": "ifunc",  # pyelftools reports STT_GNU_IFUNC as STT_LOOS
    "STT_NOTYPE": "notype",
}
VERSYM_HIDDEN = 0x8000


@dataclass(frozen=True)
class DynSymbol:
    name: str
    value: int
    size: int
    type: str
    bind: str
    version: str | None
    hidden: bool
    """A non-default version (memcpy@GLIBC_2.2.5 beside memcpy@@GLIBC_2.14)."""


@dataclass(frozen=True)
class Segment:
    vaddr: int
    memsz: int
    offset: int
    filesz: int
    flags: int

    @property
    def executable(self) -> bool:
        return bool(self.flags & 1)


@dataclass
class ElfModel:
    build_id: str
    soname: str | None
    segments: list[Segment]
    symbols: dict[str, list[DynSymbol]]
    imports: dict[str, list[int]]
    """Symbol name -> offsets of GOT slots the dynamic linker fills with its address."""
    irelative: dict[int, list[int]]
    """IFUNC resolver offset -> GOT slots holding the implementation chosen at load time."""
    copies: list[str]
    """Symbols this module (an executable) owns through COPY relocations."""
    plt_ranges: list[tuple[int, int]]
    dynamic: int | None
    """Offset of the dynamic section (where DT_DEBUG points to r_debug in an executable)."""
    functions: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Function name -> (offset, size) from .symtab when the file is not stripped."""

    def defined(self, name: str) -> list[DynSymbol]:
        return self.symbols.get(name, [])

    def file_offset(self, vaddr: int) -> int:
        for seg in self.segments:
            if seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
                return seg.offset + vaddr - seg.vaddr
        raise ValueError(f"address {vaddr:#x} is not backed by the file")

    def executable_at(self, vaddr: int) -> bool:
        return any(
            seg.executable and seg.vaddr <= vaddr < seg.vaddr + seg.memsz for seg in self.segments
        )

    def in_plt(self, vaddr: int) -> bool:
        return any(start <= vaddr < end for start, end in self.plt_ranges)

    def to_json(self) -> dict[str, Any]:
        return {
            "model_version": MODEL_VERSION,
            "build_id": self.build_id,
            "soname": self.soname,
            "segments": [vars(seg) for seg in self.segments],
            "symbols": {k: [vars(s) for s in v] for k, v in self.symbols.items()},
            "imports": self.imports,
            "irelative": {str(k): v for k, v in self.irelative.items()},
            "copies": self.copies,
            "plt_ranges": self.plt_ranges,
            "dynamic": self.dynamic,
            "functions": self.functions,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ElfModel:
        return cls(
            build_id=doc["build_id"],
            soname=doc["soname"],
            segments=[Segment(**seg) for seg in doc["segments"]],
            symbols={k: [DynSymbol(**s) for s in v] for k, v in doc["symbols"].items()},
            imports=doc["imports"],
            irelative={int(k): v for k, v in doc["irelative"].items()},
            copies=doc["copies"],
            plt_ranges=[(a, b) for a, b in doc["plt_ranges"]],
            dynamic=doc["dynamic"],
            functions={k: (a, b) for k, (a, b) in doc["functions"].items()},
        )


class ProgramHeader(NamedTuple):
    type: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int


PT_LOAD, PT_NOTE, PT_GNU_RELRO = 1, 4, 0x6474E552


def read_program_headers(handle: BinaryIO) -> list[ProgramHeader] | None:
    """The program headers of a 64-bit ELF file, with two plain reads (None: not one)."""
    handle.seek(0)
    header = handle.read(64)
    if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] != 2:
        return None
    (phoff,) = struct.unpack_from("<Q", header, 32)
    size, count = struct.unpack_from("<HH", header, 54)
    if size < 56:
        return None
    handle.seek(phoff)
    table = handle.read(size * count)
    headers = []
    for index in range(len(table) // size):
        p_type, _, offset, vaddr, _, filesz, memsz = struct.unpack_from(
            "<IIQQQQQ", table, index * size
        )
        headers.append(ProgramHeader(p_type, offset, vaddr, filesz, memsz))
    return headers


def read_build_id(handle: BinaryIO) -> str | None:
    """The GNU build-id from the program headers only: cheap enough to run on every mapping."""
    for segment in read_program_headers(handle) or []:
        if segment.type == PT_NOTE and 0 < segment.filesz <= 65536:
            handle.seek(segment.offset)
            found = parse_build_id_notes(handle.read(segment.filesz))
            if found:
                return found
    return None


def _versions(elf: ELFFile) -> tuple[list[int], dict[int, str]]:
    versym = elf.get_section_by_name(".gnu.version")
    raw = versym.data() if versym is not None else b""
    entries = list(struct.unpack(f"<{len(raw) // 2}H", raw))
    names: dict[int, str] = {}
    for name in (".gnu.version_d", ".gnu.version_r"):
        section = elf.get_section_by_name(name)
        if section is None:
            continue
        for version, auxiliaries in section.iter_versions():  # type: ignore[attr-defined]
            if name == ".gnu.version_d":
                names[version["vd_ndx"]] = next(iter(auxiliaries)).name
            else:
                for aux in auxiliaries:
                    names[aux["vna_other"]] = aux.name
    return entries, names


def parse_model(handle: BinaryIO) -> ElfModel:
    elf = ELFFile(handle)
    build_id = elf_build_id(elf) or ""
    segments = [
        Segment(
            vaddr=seg["p_vaddr"],
            memsz=seg["p_memsz"],
            offset=seg["p_offset"],
            filesz=seg["p_filesz"],
            flags=seg["p_flags"],
        )
        for seg in elf.iter_segments()
        if seg["p_type"] == "PT_LOAD"
    ]
    versym, version_names = _versions(elf)
    symbols: dict[str, list[DynSymbol]] = {}
    dynsym = elf.get_section_by_name(".dynsym")
    dyn_names: list[str] = []
    if isinstance(dynsym, SymbolTableSection):
        for index, sym in enumerate(dynsym.iter_symbols()):
            dyn_names.append(sym.name)
            kind = _SYMBOL_TYPES.get(sym["st_info"]["type"])
            if kind is None or not sym.name or sym["st_shndx"] == "SHN_UNDEF":
                continue
            bind = sym["st_info"]["bind"].removeprefix("STB_").lower()
            raw = versym[index] if index < len(versym) else 1
            symbols.setdefault(sym.name, []).append(
                DynSymbol(
                    name=sym.name,
                    value=sym["st_value"],
                    size=sym["st_size"],
                    type=kind,
                    bind=bind,
                    version=version_names.get(raw & 0x7FFF),
                    hidden=bool(raw & VERSYM_HIDDEN),
                )
            )
    imports: dict[str, list[int]] = {}
    irelative: dict[int, list[int]] = {}
    copies: list[str] = []
    for section in elf.iter_sections():
        if not isinstance(section, RelocationSection) or not section.is_RELA():
            continue
        if section["sh_link"] != elf.get_section_index(".dynsym"):
            continue
        for rel in section.iter_relocations():
            rtype = rel["r_info_type"]
            symbol_index = rel["r_info_sym"]
            if rtype == R_X86_64_IRELATIVE:
                irelative.setdefault(rel["r_addend"], []).append(rel["r_offset"])
            elif rtype == R_X86_64_COPY and symbol_index < len(dyn_names):
                copies.append(dyn_names[symbol_index])
            elif rtype in _IMPORT_TYPES and 0 < symbol_index < len(dyn_names):
                imports.setdefault(dyn_names[symbol_index], []).append(rel["r_offset"])
    plt_ranges = [
        (sec["sh_addr"], sec["sh_addr"] + sec["sh_size"])
        for sec in elf.iter_sections()
        if sec.name in (".plt", ".plt.sec", ".plt.got")
    ]
    dynamic = next(
        (sec["sh_addr"] for sec in elf.iter_sections() if isinstance(sec, DynamicSection)), None
    )
    functions: dict[str, tuple[int, int]] = {}
    symtab = elf.get_section_by_name(".symtab")
    if isinstance(symtab, SymbolTableSection):
        for sym in symtab.iter_symbols():
            if sym["st_info"]["type"] == "STT_FUNC" and sym["st_shndx"] != "SHN_UNDEF":
                functions.setdefault(sym.name, (sym["st_value"], sym["st_size"]))
    return ElfModel(
        build_id=build_id,
        soname=elf_soname(elf),
        segments=segments,
        symbols=symbols,
        imports=imports,
        irelative=irelative,
        copies=copies,
        plt_ranges=plt_ranges,
        dynamic=dynamic,
        functions=functions,
    )


class ModelCache:
    """ELF models by build-id: in memory, and on disk when a directory is given."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self._memory: dict[str, ElfModel] = {}

    def get(self, build_id: str, path: Path) -> ElfModel:
        """The model of the file at PATH, whose build-id the caller has read already."""
        model = self._memory.get(build_id) or self._load(build_id)
        if model is None:
            with open(path, "rb") as handle:
                model = parse_model(handle)
            if model.build_id != build_id:
                raise ValueError(f"{path} changed while it was read (build-id differs)")
            self._store(model)
        self._memory[build_id] = model
        return model

    def _file(self, build_id: str, kind: str = "model") -> Path | None:
        if self.directory is None or not build_id.isalnum():
            return None
        return self.directory / (
            f"{build_id}.json" if kind == "model" else f"{build_id}.{kind}.json"
        )

    def load_extra(self, build_id: str, kind: str) -> dict[str, Any]:
        """A small document derived from the file with BUILD_ID (e.g. validated sites)."""
        path = self._file(build_id, kind)
        try:
            document = json.loads(path.read_bytes()) if path else {}
        except (OSError, ValueError):
            return {}
        return document if isinstance(document, dict) else {}

    def store_extra(self, build_id: str, kind: str, document: dict[str, Any]) -> None:
        path = self._file(build_id, kind)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            temporary = path.with_suffix(f".tmp.{os.getpid()}")
            temporary.write_text(json.dumps(document, separators=(",", ":")))
            os.replace(temporary, path)
        except OSError:
            pass  # a cache that cannot be written only costs time

    def _load(self, build_id: str) -> ElfModel | None:
        path = self._file(build_id)
        if path is None:
            return None
        try:
            doc = json.loads(path.read_bytes())
            if doc.get("model_version") != MODEL_VERSION or doc.get("build_id") != build_id:
                return None
            return ElfModel.from_json(doc)
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent or damaged: parse the file again

    def _store(self, model: ElfModel) -> None:
        self.store_extra(model.build_id, "model", model.to_json())

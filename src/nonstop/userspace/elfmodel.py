"""What the engine needs to know about one ELF file, parsed once and cached per content.

Parsing libc with pyelftools costs far more than a whole patch, so the model
is kept in memory and as a small JSON file in a cache directory. The key is
the SHA-256 of the very file a process maps, never its build-id: a build-id
note is bytes anyone can copy into a file with other symbols (see
:class:`FileKey` for which files may share the on-disk cache).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

from nonstop.bundle.elfcheck import (
    MAX_FILE_SIZE,
    MAX_NOTES,
    ElfBoundsError,
    ProgramHeader,
    open_elf,
)
from nonstop.bundle.elfcheck import read_program_headers as _checked_program_headers
from nonstop.bundle.identity import elf_build_id, elf_soname, parse_build_id_notes
from nonstop.userspace.errors import RefusedError

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
    """One .dynsym definition. VALUE is a link-time address (for a shared library, the
    offset from its load base); TYPE is func, object, tls, ifunc or notype."""

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
    """One PT_LOAD program header; VADDR is link-time, OFFSET is in the file."""

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
    """The parts of one ELF file the engine uses. Every address in it is link-time (add the
    module's load base for a process address), and it describes only the file it was parsed
    from: :class:`ModelCache` keys it by that file's content."""

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
        """Every .dynsym definition of NAME, hidden versions included (pick with
        :func:`scope.default_definition`)."""
        return self.symbols.get(name, [])

    def file_offset(self, vaddr: int) -> int:
        """The file offset of link-time address VADDR; ValueError when the file holds no byte
        for it (bss, or outside every PT_LOAD segment)."""
        for seg in self.segments:
            if seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
                return seg.offset + vaddr - seg.vaddr
        raise ValueError(f"address {vaddr:#x} is not backed by the file")

    def in_plt(self, vaddr: int) -> bool:
        """VADDR (link-time) lies in .plt, .plt.sec or .plt.got: a GOT slot still pointing
        there has not been bound yet (lazy binding)."""
        return any(start <= vaddr < end for start, end in self.plt_ranges)

    def to_json(self) -> dict[str, Any]:
        """The cache document (JSON types only), tagged with MODEL_VERSION."""
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
        """The model a :meth:`to_json` document holds. Its shape is not validated (it comes from
        the agent's own cache directory): a damaged one raises, and the cache then parses the
        file again when that is a KeyError, TypeError or ValueError."""
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


PT_LOAD, PT_NOTE, PT_GNU_RELRO = 1, 4, 0x6474E552


def read_program_headers(handle: BinaryIO) -> list[ProgramHeader] | None:
    """The program headers (None: not an ELF file, or one whose header tables lie)."""
    try:
        return _checked_program_headers(handle)
    except ElfBoundsError:
        return None


def read_build_id(handle: BinaryIO) -> str | None:
    """The GNU build-id from the program headers only: cheap enough to run on every mapping.

    The file is hostile (any user can map one): every read is bounded by the file."""
    segments = read_program_headers(handle) or []
    size = handle.seek(0, os.SEEK_END)
    for segment in segments:
        if segment.type == PT_NOTE and 0 < segment.filesz <= MAX_NOTES:
            if segment.offset + segment.filesz > size:
                continue
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
        # Each entry takes 8 bytes or more: a longer walk follows a looping chain.
        left = section["sh_size"] // 8
        for version, auxiliaries in section.iter_versions():  # type: ignore[attr-defined]
            if name == ".gnu.version_d":
                names[version["vd_ndx"]] = next(iter(auxiliaries)).name
                left -= 2
            else:
                for aux in auxiliaries:
                    names[aux["vna_other"]] = aux.name
                    left -= 1
                    if left < 0:
                        break
            if left < 0:
                raise ElfBoundsError(f"{name} holds more versions than its size allows")
    return entries, names


def parse_model(handle: BinaryIO) -> ElfModel:
    """The model of the ELF file HANDLE (ElfBoundsError, or another ELFError, when malformed)."""
    elf = open_elf(handle)
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


@dataclass(frozen=True)
class FileKey:
    """Which bytes one mapped file holds, from an open handle on it (never from its build-id:
    a build-id note is bytes anyone can copy into a file of their own)."""

    sha256: str
    identity: tuple[int, int, int, int, int]
    """(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns) when it was hashed."""
    sealed: bool
    """Only root can change these bytes (root-owned, not group- or world-writable)."""

    @property
    def name(self) -> str:
        """The cache key: the hash alone when sealed (identical copies share it); otherwise
        bound to this inode, since its owner can rewrite it between hashing and parsing."""
        if self.sealed:
            return self.sha256
        return f"{self.sha256}-{'-'.join(str(part) for part in self.identity)}"


def root_sealed(stat: os.stat_result) -> bool:
    """Only root can change the file's bytes: root-owned, not group- or world-writable.

    What is learnt from any other file may be used for the process mapping it, but is never
    cached for others: its owner can rewrite it, or copy a build-id note into it."""
    return stat.st_uid == 0 and not stat.st_mode & 0o022


def _identity(stat: os.stat_result) -> tuple[int, int, int, int, int]:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


class ModelCache:
    """ELF models (and documents derived from a file, like validated sites) by file content.

    Kept in memory by :attr:`FileKey.name`, and on disk, when a directory is given, only for
    sealed files: a model parsed from a file its owner could rewrite meanwhile is never shared
    with a later run."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self._memory: dict[str, ElfModel] = {}
        self._hashes: dict[tuple[int, int, int, int, int], str] = {}

    def key(self, handle: BinaryIO) -> FileKey:
        """The content key of the open file HANDLE (hashed once per identity); RefusedError when
        it is larger than MAX_FILE_SIZE. Moves HANDLE's position."""
        stat = os.fstat(handle.fileno())
        identity = _identity(stat)
        digest = self._hashes.get(identity)
        if digest is None:
            if stat.st_size > MAX_FILE_SIZE:
                raise RefusedError(f"a mapped file of {stat.st_size} bytes is not a library")
            handle.seek(0)
            digest = hashlib.file_digest(handle, "sha256").hexdigest()  # type: ignore[arg-type]
            self._hashes[identity] = digest
        return FileKey(digest, identity, root_sealed(stat))

    def get(self, build_id: str, handle: BinaryIO, key: FileKey) -> ElfModel:
        """The model of the file open as HANDLE, whose KEY and build-id the caller has read.

        RefusedError when the file cannot be modelled or does not hold BUILD_ID (it changed
        since the caller read it, or the cached model says otherwise)."""
        model = self._memory.get(key.name) or self._load(key)
        if model is None:
            try:
                handle.seek(0)
                model = parse_model(handle)
            except (ELFError, ValueError, KeyError, IndexError, TypeError, struct.error) as exc:
                # pyelftools on a hostile file: any of these is a refusal of that file only.
                raise RefusedError(f"cannot model the ELF file {key.sha256[:16]}: {exc}") from None
            if model.build_id != build_id:
                raise RefusedError(f"a file with build-id {build_id} changed while it was read")
            if key.sealed:
                self.store_extra(key, "model", model.to_json())
        if model.build_id != build_id:
            raise RefusedError(f"the file read as build-id {build_id} holds {model.build_id}")
        self._memory[key.name] = model
        return model

    def _file(self, key: FileKey, kind: str) -> Path | None:
        if self.directory is None or not key.sealed:
            return None
        return self.directory / (
            f"{key.sha256}.json" if kind == "model" else f"{key.sha256}.{kind}.json"
        )

    def load_extra(self, key: FileKey, kind: str) -> dict[str, Any]:
        """A small document derived from the file with KEY (e.g. validated sites); {} when
        there is none, it cannot be read, or KEY is not sealed (nothing is kept for those)."""
        path = self._file(key, kind)
        try:
            document = json.loads(path.read_bytes()) if path else {}
        except (OSError, ValueError):
            return {}
        return document if isinstance(document, dict) else {}

    def store_extra(self, key: FileKey, kind: str, document: dict[str, Any]) -> None:
        """Keep DOCUMENT on disk for the file with KEY, only when a directory is set and KEY is
        sealed. Replaced atomically (temporary file and rename); failures are ignored."""
        path = self._file(key, kind)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            temporary = path.with_suffix(f".tmp.{os.getpid()}")
            temporary.write_text(json.dumps(document, separators=(",", ":")))
            os.replace(temporary, path)
        except OSError:
            pass  # a cache that cannot be written only costs time

    def _load(self, key: FileKey) -> ElfModel | None:
        doc = self.load_extra(key, "model")
        try:
            return ElfModel.from_json(doc) if doc.get("model_version") == MODEL_VERSION else None
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # damaged: parse the file again

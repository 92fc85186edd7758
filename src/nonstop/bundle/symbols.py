"""The symbol map payload: every symbol of the exact target build, locals included.

Production libraries are stripped: their static functions and variables have
no names left. A builder that reproduced the exact binary ships its symbol
table as a ``symbols`` payload, so the engine can link a patch's references to
those local symbols. ``links`` records the builder's own decisions: for a
patch-object symbol name, the symbol-map entry it must bind to (how two static
``helper`` functions of different source files are told apart).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from nonstop.bundle.elfcheck import open_elf
from nonstop.bundle.errors import SymbolMapError
from nonstop.bundle.identity import elf_build_id

SymbolType = Literal["func", "object", "tls", "ifunc"]
SymbolBind = Literal["local", "global", "weak"]
SYMBOL_MAP_VERSION = 1
MAX_SYMBOLS = 500_000

_TYPES: dict[str, SymbolType] = {
    "STT_FUNC": "func",
    "STT_OBJECT": "object",
    "STT_TLS": "tls",
    "STT_GNU_IFUNC": "ifunc",
    "STT_LOOS": "ifunc",  # pyelftools reports STT_GNU_IFUNC as STT_LOOS
}
_BINDS: dict[str, SymbolBind] = {"STB_LOCAL": "local", "STB_GLOBAL": "global", "STB_WEAK": "weak"}


@dataclass(frozen=True)
class MapSymbol:
    """One symbol of the target build, as its unstripped symbol table has it."""

    name: str
    value: int
    """Offset from the library's load base (st_value of a shared object)."""
    size: int
    type: SymbolType
    bind: SymbolBind
    file: str | None = None
    """Source file of a local symbol (from the STT_FILE entry before it)."""


@dataclass(frozen=True)
class SymbolMap:
    """The symbols payload of build BUILD_ID; symbol values are offsets from its load base."""

    build_id: str
    symbols: tuple[MapSymbol, ...]
    links: dict[str, int] = field(default_factory=dict)
    """Patch-object symbol name -> index into ``symbols``."""

    def unique_local(self, name: str) -> MapSymbol | None:
        """The one local symbol called NAME; None if there is none or several."""
        found = [sym for sym in self.symbols if sym.bind == "local" and sym.name == name]
        return found[0] if len(found) == 1 else None

    def linked(self, name: str) -> MapSymbol | None:
        """The entry the builder bound patch-object symbol NAME to, or None."""
        index = self.links.get(name)
        return self.symbols[index] if index is not None else None

    def to_json_bytes(self) -> bytes:
        """The payload bytes: JSON, sorted keys, no spaces, ASCII."""
        document = {
            "format_version": SYMBOL_MAP_VERSION,
            "build_id": self.build_id,
            "symbols": [
                {k: v for k, v in vars(sym).items() if v is not None} for sym in self.symbols
            ],
            "links": self.links,
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("ascii")

    @classmethod
    def from_json_bytes(cls, data: bytes) -> SymbolMap:
        """The map in payload DATA; SymbolMapError when it is malformed (names, values, types,
        bindings and link indexes are checked; sizes and files are not)."""
        try:
            document = json.loads(data)
            return cls._from_document(document)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise SymbolMapError(f"symbol map is invalid: {exc}") from None

    @classmethod
    def _from_document(cls, document: dict[str, Any]) -> SymbolMap:
        if document["format_version"] != SYMBOL_MAP_VERSION:
            raise ValueError(f"unknown format version {document['format_version']!r}")
        raw = document["symbols"]
        if not isinstance(raw, list) or len(raw) > MAX_SYMBOLS:
            raise ValueError(f"symbols must be a list of at most {MAX_SYMBOLS} entries")
        symbols = []
        for entry in raw:
            symbol = MapSymbol(**entry)
            if not isinstance(symbol.name, str) or not isinstance(symbol.value, int):
                raise ValueError(f"bad symbol entry {entry!r:.80}")
            if symbol.type not in _TYPES.values() or symbol.bind not in _BINDS.values():
                raise ValueError(f"bad symbol type or binding in {entry!r:.80}")
            symbols.append(symbol)
        links = document.get("links", {})
        if not all(isinstance(v, int) and 0 <= v < len(symbols) for v in links.values()):
            raise ValueError("links must name symbols by their index")
        return cls(build_id=str(document["build_id"]), symbols=tuple(symbols), links=dict(links))


def replacement_refusal(name: str, kind: str) -> str | None:
    """Why the target function NAME, of symbol type KIND, cannot be replaced (None: it can).

    The engine refuses with this reason when it applies a bundle; `nonstop bundle create` and
    the builder, which know the target, refuse with the same one up front."""
    if kind == "ifunc":
        return f"{name} is an IFUNC resolver: patch its implementation instead"
    return None


@dataclass(frozen=True)
class TargetFunction:
    """A function of the target file, found the way the engine finds it."""

    name: str
    type: SymbolType
    value: int
    size: int
    code_sha256: str | None
    """SHA-256 of its SIZE bytes in the file: what the engine expects to find in memory."""


def target_functions(
    path: Path, names: list[str], symbol_map: SymbolMap | None = None
) -> dict[str, TargetFunction]:
    """The functions NAMES of the ELF file PATH that can be found, in the engine's order: the
    default-version .dynsym definition, else the one function of that name in SYMBOL_MAP, else
    the first in the file's .symtab."""
    try:
        with path.open("rb") as handle:
            elf = open_elf(handle)
            found = _dynamic_definitions(elf, set(names))
            for name in set(names) - set(found):
                listed = [s for s in symbol_map.symbols if s.name == name] if symbol_map else []
                listed = [s for s in listed if s.type == "func"]
                if len(listed) == 1:
                    found[name] = (listed[0].type, listed[0].value, listed[0].size)
            table = elf.get_section_by_name(".symtab")
            if isinstance(table, SymbolTableSection) and set(names) - set(found):
                for symbol in table.iter_symbols():
                    kind = symbol["st_info"]["type"]
                    wanted = symbol.name in names and symbol.name not in found
                    if wanted and kind == "STT_FUNC" and symbol["st_shndx"] != "SHN_UNDEF":
                        found[symbol.name] = ("func", symbol["st_value"], symbol["st_size"])
            return {
                name: TargetFunction(name, kind, value, size, _code_sha256(elf, value, size))
                for name, (kind, value, size) in found.items()
            }
    except (ELFError, OSError) as exc:
        raise SymbolMapError(f"cannot read the functions of {path}: {exc}") from None


def _dynamic_definitions(elf: ELFFile, names: set[str]) -> dict[str, tuple[SymbolType, int, int]]:
    """The default (not hidden-version) global definition of each of NAMES in .dynsym."""
    dynsym = elf.get_section_by_name(".dynsym")
    if not isinstance(dynsym, SymbolTableSection):
        return {}
    versym = elf.get_section_by_name(".gnu.version")
    raw = versym.data() if versym is not None else b""
    found: dict[str, tuple[SymbolType, int, int]] = {}
    for index, symbol in enumerate(dynsym.iter_symbols()):
        kind = _TYPES.get(symbol["st_info"]["type"])
        hidden = 2 * index + 2 <= len(raw) and raw[2 * index + 1] & 0x80
        if symbol.name not in names or symbol.name in found or kind is None or hidden:
            continue
        if symbol["st_shndx"] != "SHN_UNDEF" and symbol["st_info"]["bind"] != "STB_LOCAL":
            found[symbol.name] = (kind, symbol["st_value"], symbol["st_size"])
    return found


def _code_sha256(elf: ELFFile, value: int, size: int) -> str | None:
    code = _loaded_bytes(elf, value, size)
    return hashlib.sha256(code).hexdigest() if code is not None else None


def _loaded_bytes(elf: ELFFile, value: int, size: int) -> bytes | None:
    """The SIZE bytes a loaded ELF file holds at address VALUE, if a PT_LOAD segment has them."""
    for segment in elf.iter_segments():
        start, filesz = segment["p_vaddr"], segment["p_filesz"]
        if segment["p_type"] == "PT_LOAD" and start <= value and value + size <= start + filesz:
            elf.stream.seek(segment["p_offset"] + value - start)
            return bytes(elf.stream.read(size))
    return None


def loaded_bytes(path: Path, value: int, size: int) -> bytes | None:
    """The SIZE bytes the ELF file PATH loads at address VALUE (a function's code), or None."""
    try:
        with path.open("rb") as handle:
            return _loaded_bytes(open_elf(handle), value, size)
    except (ELFError, OSError):
        return None


def symbol_map_of(path: Path) -> SymbolMap:
    """The symbol map of an unstripped ELF file (functions, objects, TLS, IFUNCs)."""
    try:
        with path.open("rb") as handle:
            elf = ELFFile(handle)
            build_id = elf_build_id(elf)
            table = elf.get_section_by_name(".symtab")
            if not isinstance(table, SymbolTableSection):
                raise SymbolMapError(f"{path} has no .symtab: it is stripped")
            symbols = []
            current_file: str | None = None
            for symbol in table.iter_symbols():
                kind = symbol["st_info"]["type"]
                if kind == "STT_FILE":
                    current_file = symbol.name
                    continue
                if kind not in _TYPES or not symbol.name or symbol["st_shndx"] == "SHN_UNDEF":
                    continue
                bind = _BINDS.get(symbol["st_info"]["bind"])
                if bind is None:
                    continue
                symbols.append(
                    MapSymbol(
                        name=symbol.name,
                        value=symbol["st_value"],
                        size=symbol["st_size"],
                        type=_TYPES[kind],
                        bind=bind,
                        file=current_file if bind == "local" else None,
                    )
                )
    except (ELFError, OSError) as exc:
        raise SymbolMapError(f"cannot read symbols of {path}: {exc}") from None
    if not build_id:
        raise SymbolMapError(f"{path} has no GNU build-id")
    return SymbolMap(build_id=build_id, symbols=tuple(symbols))

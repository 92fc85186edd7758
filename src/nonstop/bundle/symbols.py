"""The symbol map payload: every symbol of the exact target build, locals included.

Production libraries are stripped: their static functions and variables have
no names left. A builder that reproduced the exact binary ships its symbol
table as a ``symbols`` payload, so the engine can link a patch's references to
those local symbols. ``links`` records the builder's own decisions: for a
patch-object symbol name, the symbol-map entry it must bind to (how two static
``helper`` functions of different source files are told apart).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

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
    build_id: str
    symbols: tuple[MapSymbol, ...]
    links: dict[str, int] = field(default_factory=dict)
    """Patch-object symbol name -> index into ``symbols``."""

    def unique_local(self, name: str) -> MapSymbol | None:
        """The one local symbol called NAME; None if there is none or several."""
        found = [sym for sym in self.symbols if sym.bind == "local" and sym.name == name]
        return found[0] if len(found) == 1 else None

    def linked(self, name: str) -> MapSymbol | None:
        index = self.links.get(name)
        return self.symbols[index] if index is not None else None

    def to_json_bytes(self) -> bytes:
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

"""Finding a function or variable of the original build in the target's symbol map.

A static symbol is named by the source file that defines it (two files may
each have a static ``helper``); a hidden global was made local by the linker
and lost its file; an exported global is unique by name.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from nonstop.builders.userspace.padding import same_but_padding
from nonstop.bundle.symbols import MapSymbol, SymbolMap, loaded_bytes


@dataclass(frozen=True)
class Located:
    """A symbol of the target's map; INDEX into ``SymbolMap.symbols`` is what links name."""

    index: int
    symbol: MapSymbol


class TargetSymbols:
    """The target's symbol map, indexed by name and defining file; lookups never guess.

    LIBRARY, when given, is the target file itself: functions can then be compared by code
    (``same_function``), not only by size."""

    def __init__(self, symbol_map: SymbolMap, library: Path | None = None) -> None:
        self.map = symbol_map
        self.library = library
        self._locals: dict[tuple[str, str | None], list[int]] = defaultdict(list)
        self._local_names: dict[str, list[int]] = defaultdict(list)
        self._globals: dict[str, list[int]] = defaultdict(list)
        for index, symbol in enumerate(symbol_map.symbols):
            if symbol.bind == "local":
                self._locals[(symbol.name, symbol.file)].append(index)
                self._local_names[symbol.name].append(index)
            else:
                self._globals[symbol.name].append(index)

    def locate(self, name: str, source_file: str) -> Located | str:
        """The map entry for NAME as defined in SOURCE_FILE, or why there is none."""
        for candidates in (
            self._locals.get((name, source_file), []),
            [i for i in self._local_names.get(name, []) if not self.map.symbols[i].file],
            self._globals.get(name, []),
        ):
            if len(candidates) == 1:
                return Located(candidates[0], self.map.symbols[candidates[0]])
            if len(candidates) > 1:
                return f"{name} is defined {len(candidates)} times in the target ({source_file})"
        return f"{name} ({source_file}) is not in the target library"

    def hidden(self, name: str) -> Located | None:
        """The library-internal (hidden or version-script local) symbol NAME, if exactly one."""
        found = [i for i in self._local_names.get(name, []) if not self.map.symbols[i].file]
        return Located(found[0], self.map.symbols[found[0]]) if len(found) == 1 else None

    def same_function(self, located: Located, built: bytes) -> bool:
        """Whether the function LOCATED is BUILT, the section build's code of it: the same
        size, or the same instructions but for alignment padding (``padding``)."""
        symbol = located.symbol
        if symbol.size == len(built):
            return True
        if self.library is None or symbol.type != "func":
            return False
        target = loaded_bytes(self.library, symbol.value, symbol.size)
        return target is not None and same_but_padding(built, target)

    def is_ambiguous_by_name(self, name: str) -> bool:
        """True when a name alone does not identify one symbol of the target."""
        return len(self._local_names.get(name, [])) + len(self._globals.get(name, [])) > 1

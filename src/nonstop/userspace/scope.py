"""Symbol resolution inside one running process, the way ld.so resolved it.

A patch object's undefined symbol S binds, in the order docs/bundle-format.md
documents: the builder's explicit link for S in the symbol map, the unique
local symbol S of the map, then the process's global scope. Global lookups
prefer what the dynamic linker already decided (the target library's own GOT
slot for S), and otherwise search executable first (so COPY relocations win),
then libraries in link-map order, skipping hidden versions, and resolving
IFUNCs to the implementation this process chose at load time.
"""

from __future__ import annotations

from dataclasses import dataclass

from nonstop.bundle.symbols import MapSymbol, SymbolMap, replacement_refusal
from nonstop.userspace.elfmodel import DynSymbol
from nonstop.userspace.errors import LinkError
from nonstop.userspace.image import LoadedModule, ProcessImage
from nonstop.userspace.memory import ProcessMemory


@dataclass(frozen=True)
class Resolved:
    """A symbol's address in the process."""

    address: int
    how: str
    """Where the address came from, for error messages and `--json` output."""


@dataclass(frozen=True)
class TargetFunction:
    """A function of the target library: ADDRESS in the process, SIZE in bytes."""

    name: str
    address: int
    size: int


def default_definition(defs: list[DynSymbol]) -> DynSymbol | None:
    """The definition an unversioned reference binds to: never a hidden (non-default) version."""
    visible = [d for d in defs if not d.hidden and d.bind in ("global", "weak")]
    return visible[0] if visible else None


class Scope:
    """Symbol lookup for a patch of library TARGET in one process. It reads GOT slots from the
    process's memory; their values are only used as addresses the patch may reach."""

    def __init__(
        self,
        image: ProcessImage,
        memory: ProcessMemory,
        target: LoadedModule,
        symbol_map: SymbolMap | None,
    ) -> None:
        self.image = image
        self.memory = memory
        self.target = target
        self.symbol_map = symbol_map
        self._order: list[LoadedModule] | None = None

    @property
    def order(self) -> list[LoadedModule]:
        """The global search order, read from the process's link map on first use."""
        if self._order is None:
            self._order = self.image.search_order(self.memory)
        return self._order

    def resolve(self, name: str) -> Resolved | None:
        """Address of the patch object's undefined symbol NAME in this process, or None."""
        if self.symbol_map is not None:
            linked = self.symbol_map.linked(name)
            if linked is not None:
                return self._from_map(linked, "symbol map link")
            local = self.symbol_map.unique_local(name)
            if local is not None:
                return self._from_map(local, "symbol map local")
        return self.resolve_global(name)

    def _from_map(self, symbol: MapSymbol, how: str) -> Resolved:
        if symbol.type == "tls":
            raise LinkError(f"symbol {symbol.name} is thread-local: not supported")
        address = self.target.base + symbol.value
        if symbol.type == "ifunc":
            return Resolved(self._ifunc(self.target, symbol.name, symbol.value), how + " (ifunc)")
        return Resolved(address, how)

    def resolve_global(self, name: str) -> Resolved | None:
        """NAME as ld.so bound it for the target: its own GOT slot when bound, else the first
        default-version definition in search order (IFUNC: the implementation chosen). None
        when no module defines it; LinkError for TLS or an IFUNC whose choice is unknown."""
        bound = self._bound_by_target(name)
        if bound is not None:
            return bound
        for module in self.order:
            definition = default_definition(module.model.defined(name))
            if definition is None:
                continue
            if definition.type == "tls":
                raise LinkError(f"symbol {name} is thread-local: not supported")
            where = module.path.rsplit("/", 1)[-1]
            if definition.type == "ifunc":
                chosen = self._ifunc(module, name, definition.value)
                return Resolved(chosen, f"global scope: {where} (ifunc)")
            return Resolved(module.base + definition.value, f"global scope: {where}")
        return None

    def _bound_by_target(self, name: str) -> Resolved | None:
        """The value ld.so stored in the target library's GOT for NAME, once it is bound."""
        target = self.target
        for offset in target.model.imports.get(name, []):
            value = self.memory.read_u64(target.base + offset)
            # Lazy binding leaves the slot pointing into the target's own PLT: not bound yet.
            lazy = self.image.module_at(value) is target and target.model.in_plt(
                value - target.base
            )
            if value and not lazy:
                return Resolved(value, "target GOT")
        return None

    def _ifunc(self, module: LoadedModule, name: str, resolver: int) -> int:
        """The implementation the process uses for IFUNC NAME (resolver at RESOLVER)."""
        for slot in module.model.irelative.get(resolver, []):
            value = self.memory.read_u64(module.base + slot)
            if value:
                return value
        for other in self.order:
            for offset in other.model.imports.get(name, []):
                value = self.memory.read_u64(other.base + offset)
                owner = self.image.module_at(value)
                if value and owner is not None and not owner.model.in_plt(value - owner.base):
                    return value
        raise LinkError(
            f"cannot tell which implementation of IFUNC {name} this process uses "
            "(no GOT slot of any module holds it)"
        )

    def target_function(self, name: str) -> TargetFunction:
        """The function NAME of the target library that a patch replaces."""
        model = self.target.model
        definition = default_definition(model.defined(name))
        if definition is not None:
            refusal = replacement_refusal(name, definition.type)
            if refusal is not None:
                raise LinkError(refusal)
            if definition.type != "func":
                raise LinkError(f"{name} in {self.target.path} is not a function")
            self._check_against_map(name, definition.value, definition.size)
            return TargetFunction(name, self.target.base + definition.value, definition.size)
        if self.symbol_map is not None:
            found = [s for s in self.symbol_map.symbols if s.name == name and s.type == "func"]
            if len(found) == 1:
                return TargetFunction(name, self.target.base + found[0].value, found[0].size)
            if len(found) > 1:
                raise LinkError(f"{name} names {len(found)} functions in the symbol map")
        if name in model.functions:
            value, size = model.functions[name]
            return TargetFunction(name, self.target.base + value, size)
        raise LinkError(f"function {name} not found in {self.target.path}")

    def _check_against_map(self, name: str, value: int, size: int) -> None:
        """The mapped file's own symbol table must agree with the builder's symbol map: the
        file is whatever its owner wrote, behind a build-id anyone can copy."""
        if self.symbol_map is None:
            return
        known = [s for s in self.symbol_map.symbols if s.name == name and s.type == "func"]
        if known and not any((s.value, s.size) == (value, size) for s in known):
            raise LinkError(
                f"{name} in {self.target.path} is not where the bundle's symbol map puts it "
                f"({value:#x}, {size} bytes): the file is not the build the bundle is for"
            )

    def function_starts(self) -> set[int]:
        """Start addresses of every function of the target library that the engine knows of."""
        base = self.target.base
        starts = {base + value for value, _ in self.target.model.functions.values()}
        for defs in self.target.model.symbols.values():
            starts.update(base + d.value for d in defs if d.type == "func")
        if self.symbol_map is not None:
            starts.update(base + s.value for s in self.symbol_map.symbols if s.type == "func")
        return starts

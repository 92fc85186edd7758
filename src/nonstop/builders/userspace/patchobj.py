"""Assembling a level's patch object: the new code and data, linked to the target by name.

Every included symbol's section is copied from the patched build, and so is
every unnamed section its code reaches (string literals, constants, jump
tables). Each relocation is rewritten to point at one of three things:

- a copied section of the patch itself (new code calling new code, a jump
  table, a new static variable);
- an undefined symbol bound to the running library through the symbol map's
  ``links`` (an unchanged static or hidden function or variable of the target);
- an undefined symbol left to the engine's global lookup, like ld.so would
  (exported symbols of the library, libc).

Taking the address of a replaced function (anything but a call or jump to its
entry) points at the original, whose entry jumps to the replacement anyway, so
function pointers compare equal to those running code already holds.
Replacement functions are the patch's only defined global symbols: ``NAME.patched``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nonstop.builders.userspace.analysis import LevelAnalysis, Refusal, UnitPlan
from nonstop.builders.userspace.differ import Canonical
from nonstop.builders.userspace.elfobj import (
    R_X86_64_PC32,
    R_X86_64_PLT32,
    SHF_MERGE,
    SHF_STRINGS,
    Relocation,
    Symbol,
)
from nonstop.builders.userspace.elfwriter import (
    SHT_NOBITS,
    SHT_PROGBITS,
    STB_GLOBAL,
    STB_LOCAL,
    STB_WEAK,
    STT_NOTYPE,
    SYMBOL_TYPES,
    OutRelocation,
    OutSection,
    OutSymbol,
    write_object,
)
from nonstop.builders.userspace.targetsyms import Located, TargetSymbols
from nonstop.bundle import FunctionPatch

REPLACEMENT_SUFFIX = ".patched"


@dataclass
class PatchObject:
    """A level's patch object (DATA, the ET_REL bytes) and what the manifest says of it.

    FUNCTIONS are the target functions it replaces, sorted by name; LINKS maps
    its undefined symbols that stand for locals of the target to their index in
    the target's symbol map. TEXT_BYTES counts executable sections, DATA_BYTES
    the rest.
    """

    data: bytes
    functions: list[FunctionPatch]
    links: dict[str, int]
    new_data: list[str] = field(default_factory=list)
    text_bytes: int = 0
    data_bytes: int = 0


class _Assembler:
    def __init__(self, targets: TargetSymbols, refusals: list[Refusal]) -> None:
        self.targets = targets
        self.refusals = refusals
        self.sections: list[OutSection] = []
        self.symbols: list[OutSymbol] = []
        self.links: dict[str, int] = {}
        self.functions: list[FunctionPatch] = []
        self.new_data: list[str] = []
        self._undefined: dict[tuple[str, int | str], OutSymbol] = {}
        self._names: set[str] = set()
        self._linked: dict[str, OutSymbol] = {}

    def refuse(self, symbol: str, reason: str) -> None:
        refusal = Refusal(symbol, reason)
        if refusal not in self.refusals:
            self.refusals.append(refusal)

    def undefined(self, name: str, located: Located | None, weak: bool = False) -> OutSymbol:
        """The undefined symbol for NAME: linked to LOCATED when it is a local of the target."""
        key: tuple[str, int | str] = (name, located.index if located else "global")
        if key in self._undefined:
            return self._undefined[key]
        linked = located is not None and located.symbol.bind == "local"
        chosen = name
        if linked:
            serial = 1
            while chosen in self._names:
                chosen, serial = f"{name}.{serial}", serial + 1
            assert located is not None
            self.links[chosen] = located.index
        symbol = OutSymbol(chosen, STT_NOTYPE, STB_WEAK if weak else STB_GLOBAL, None)
        if linked:
            self._linked[chosen] = symbol
        self._names.add(chosen)
        self._undefined[key] = symbol
        self.symbols.append(symbol)
        return symbol

    def add_unit(self, plan: UnitPlan) -> None:
        _UnitAssembly(self, plan).run()

    def finish(self) -> None:
        """Rename linked symbols whose name an unlinked (global) reference needs verbatim."""
        verbatim = {s.name for (_, where), s in self._undefined.items() if where == "global"}
        for name in sorted(set(self.links) & verbatim):
            symbol = self._linked.pop(name)
            serial = 1
            while f"{name}.{serial}" in self._names:
                serial += 1
            symbol.name = f"{name}.{serial}"
            self._names.add(symbol.name)
            self._linked[symbol.name] = symbol
            self.links[symbol.name] = self.links.pop(name)


class _UnitAssembly:
    def __init__(self, parent: _Assembler, plan: UnitPlan) -> None:
        self.parent = parent
        self.plan = plan
        self.obj = plan.patched
        self.canonical = Canonical(self.obj, lambda name: name)
        self.copied: dict[int, OutSection] = {}
        self.defined: dict[str, OutSymbol] = {}
        self.pending: list[int] = []
        self.source_name = plan.diff.orig.source_name if plan.diff.orig else self.obj.source_name

    def run(self) -> None:
        for name in sorted(self.plan.included):
            self.include(name)
        while self.pending:
            self.relink(self.pending.pop(0))

    def include(self, name: str) -> None:
        if name in self.defined:
            return
        symbol = self.obj.by_name[name]
        if symbol.kind in ("tls", "common") or symbol.section is None:
            self.parent.refuse(name, f"new {symbol.kind} symbol cannot live in a patch")
            self.defined[name] = OutSymbol(name, STT_NOTYPE, STB_LOCAL, None)
            return
        self.plan.included.setdefault(name, "new" if symbol.kind == "func" else "data")
        if self.plan.included[name] == "data":
            self.parent.new_data.append(name)
        section = self.copy_section(symbol.section)
        redirected = self.plan.redirected.get(name)
        if redirected is not None:
            out_name, bind = redirected.symbol.name + REPLACEMENT_SUFFIX, STB_GLOBAL
            self.parent.functions.append(
                FunctionPatch(target=redirected.symbol.name, replacement=out_name)
            )
        else:
            out_name, bind = name, STB_LOCAL
        out = OutSymbol(
            out_name,
            SYMBOL_TYPES.get(symbol.kind, STT_NOTYPE),
            bind,
            section,
            value=symbol.value,
            size=symbol.size,
        )
        self.defined[name] = out
        self.parent.symbols.append(out)

    def copy_section(self, index: int) -> OutSection:
        if index in self.copied:
            return self.copied[index]
        section = self.obj.sections[index]
        for other in self.obj.symbols_in(index):
            if other.kind == "ifunc":
                continue  # refused on its own when its resolver changed
            if other.name in self.plan.diff.pairs and other.name not in self.plan.included:
                self.parent.refuse(
                    other.name, f"shares section {section.name} with changed code or data"
                )
        out = OutSection(
            name=section.name,
            type=SHT_NOBITS if section.nobits else SHT_PROGBITS,
            # Not mergeable any more: relocations address it by section offset.
            flags=section.flags & ~(SHF_MERGE | SHF_STRINGS),
            align=section.align,
            data=section.data,
            size=section.size,
            entsize=section.entsize,
        )
        self.copied[index] = out
        self.parent.sections.append(out)
        self.pending.append(index)
        return out

    def relink(self, index: int) -> None:
        out = self.copied[index]
        for reloc in self.obj.sections[index].relocations:
            target, addend = self.rewrite(index, reloc)
            out.relocations.append(OutRelocation(reloc.offset, reloc.type, target, addend))

    def is_branch(self, section: int, reloc: Relocation) -> bool:
        """Is RELOC the target of a call or jump (rather than an address being taken)?"""
        if reloc.type == R_X86_64_PLT32:
            return True
        if reloc.type != R_X86_64_PC32 or reloc.offset < 1:
            return False
        code = self.obj.sections[section].data
        opcode = code[reloc.offset - 1]
        return opcode in (0xE8, 0xE9) or (
            reloc.offset >= 2 and code[reloc.offset - 2] == 0x0F and 0x80 <= opcode <= 0x8F
        )

    def rewrite(self, section: int, reloc: Relocation) -> tuple[OutSymbol, int]:
        raw = self.obj.symbols[reloc.symbol]
        found, relative = self.canonical.target(reloc)
        if found is None:
            if raw.section is None:  # an external symbol (libc, another unit of the library)
                return self.external(raw), reloc.addend
            unnamed = self.obj.sections[raw.section]
            if unnamed.writable:
                self.parent.refuse(
                    unnamed.name, "patched code uses unnamed writable data, which has no identity"
                )
            return self.section_symbol(raw.section), raw.value + reloc.addend
        if found.section is None and found.kind != "common":
            return self.external(found), relative
        aimed = relative + (reloc.width if reloc.pc_relative else 0)
        name = found.name
        if name in self.plan.redirected and aimed == 0 and not self.is_branch(section, reloc):
            return self.existing(found), relative  # its address: keep the original's
        if name in self.plan.included or name not in self.plan.diff.pairs:
            self.include(name)
            assert found.section is not None
            return self.section_symbol(found.section), found.value + relative
        return self.existing(found), relative

    def section_symbol(self, index: int) -> OutSymbol:
        return self.copy_section(index).symbol

    def existing(self, symbol: Symbol) -> OutSymbol:
        """An unchanged function or variable of the target, by its original name."""
        original = self.plan.diff.pairs[symbol.name]
        found = self.parent.targets.locate(original, self.source_name)
        if isinstance(found, str):
            self.parent.refuse(original, f"the patch needs it, but {found}")
            return self.parent.undefined(original, None)
        before = self.plan.diff.orig.by_name.get(original) if self.plan.diff.orig else None
        built = self.plan.diff.orig.bytes_of(before) if self.plan.diff.orig and before else b""
        if (
            before is not None
            and found.symbol.bind == "local"
            and not self.parent.targets.same_function(found, built)
        ):
            # Same name, other size: binding to it would read or run the wrong thing.
            self.parent.refuse(
                original,
                f"the target's {original} is {found.symbol.size} bytes, the build's "
                f"{before.size}: the builds are not comparable",
            )
        return self.parent.undefined(original, found)

    def external(self, symbol: Symbol) -> OutSymbol:
        hidden = self.parent.targets.hidden(symbol.name)
        return self.parent.undefined(symbol.name, hidden, weak=symbol.bind == "weak")


def assemble(analysis: LevelAnalysis, targets: TargetSymbols) -> PatchObject:
    """The patch object for ANALYSIS; new refusals are added to ``analysis.refusals``."""
    assembler = _Assembler(targets, analysis.refusals)
    for plan in analysis.units:
        assembler.add_unit(plan)
    assembler.finish()
    analysis.new_data = sorted(assembler.new_data)
    data = write_object(assembler.sections, assembler.symbols)
    text = sum(s.size for s in assembler.sections if s.flags & 0x4)
    return PatchObject(
        data=data,
        functions=sorted(assembler.functions, key=lambda f: f.target),
        links=dict(sorted(assembler.links.items())),
        new_data=analysis.new_data,
        text_bytes=text,
        data_bytes=sum(s.size for s in assembler.sections) - text,
    )

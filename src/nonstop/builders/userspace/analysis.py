"""What one level's patch must contain, and every reason it would be unsafe to apply live.

For each translation unit whose object changed: the differ's classification is
widened to what must travel together (callers of a changed compiler-made copy
such as ``f.constprop.0`` or ``f.cold``, code that jumps into the middle of a
changed function), then checked. Refused, each naming the symbol and why:
changed initial value or size of existing data; changed layout of a struct or
union a patched function uses; changed constructors, destructors or IFUNC
resolvers; functions too short for the 5-byte jump; a function compiled
differently from the target. New functions and new static variables are fine:
they live in the patch.
"""

from __future__ import annotations

import filecmp
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from nonstop.builders.userspace.differ import (
    Canonical,
    UnitDiff,
    diff_unit,
    owners,
    program_symbols,
)
from nonstop.builders.userspace.driver import BuiltTree
from nonstop.builders.userspace.dwarf import DebugInfo, Layout
from nonstop.builders.userspace.elfobj import ObjectFile, Relocation, Symbol
from nonstop.builders.userspace.linenumbers import LineNumberCheck
from nonstop.builders.userspace.sources import function_text
from nonstop.builders.userspace.targetsyms import Located, TargetSymbols

JUMP_SIZE = 5
ENDBR64 = bytes.fromhex("f30f1efa")
_CONSTRUCTOR_SECTIONS = (".init_array", ".fini_array", ".preinit_array", ".ctors", ".dtors")


@dataclass(frozen=True)
class Refusal:
    """One reason a level cannot be applied live.

    SYMBOL names the function, data, type or library concerned, by its original
    name where it has one.
    """

    symbol: str
    reason: str

    def __str__(self) -> str:
        return f"{self.symbol}: {self.reason}"


@dataclass
class UnitPlan:
    """One translation unit's share of the patch."""

    diff: UnitDiff
    included: dict[str, str] = field(default_factory=dict)
    """Patched symbol name -> role: changed, new, internal, dependent, data, rodata, carried."""
    redirected: dict[str, Located] = field(default_factory=dict)
    """Patched function name -> the target function its entry jump replaces."""

    @property
    def patched(self) -> ObjectFile:
        """The unit's object in the patched build: the names in INCLUDED are its symbols."""
        return self.diff.patched


@dataclass
class LevelAnalysis:
    """What one level's comparison found; the level may be built only if REFUSALS is empty.

    The name lists are for the report, in the original build's names. NEW_DATA
    is filled in later, by ``patchobj.assemble``, which may add refusals too.
    LINE_ONLY functions differ only by line numbers and are not patched.
    """

    units: list[UnitPlan] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    inlined: list[tuple[str, list[str]]] = field(default_factory=list)
    """(function, the changed functions inlined into it that made it change)."""
    dependent: list[str] = field(default_factory=list)
    line_only: list[str] = field(default_factory=list)
    new_data: list[str] = field(default_factory=list)
    replaced_rodata: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def is_internal(symbol: Symbol) -> bool:
    """A compiler-made local function (``f.cold``, ``f.part.0``): reached only from its unit."""
    return symbol.kind == "func" and symbol.bind == "local" and "." in symbol.name


def references(obj: ObjectFile, symbol: Symbol) -> Iterator[tuple[Relocation, Symbol | None, int]]:
    """Each relocation of SYMBOL with the program symbol it reaches and the offset aimed at."""
    canonical = Canonical(obj, lambda name: name)
    section = obj.sections[symbol.section] if symbol.section is not None else None
    if section is None:
        return
    for reloc in section.relocations:
        if not symbol.value <= reloc.offset < symbol.value + symbol.size:
            continue
        found, addend = canonical.target(reloc)
        aimed = addend + (reloc.width if reloc.pc_relative else 0)
        yield reloc, found, aimed


def analyze_level(original: BuiltTree, patched: BuiltTree, targets: TargetSymbols) -> LevelAnalysis:
    """Compare each translation unit of PATCHED with ORIGINAL and plan the level's patch.

    Units whose objects are byte-identical are skipped. Unsafe changes are
    collected as refusals, not raised, so one run reports every reason; an
    unreadable object or one without DWARF raises BuilderError.
    """
    result = LevelAnalysis()
    for unit, new_path in sorted(patched.objects.items()):
        old_path = original.objects.get(unit)
        if old_path is not None and filecmp.cmp(old_path, new_path, shallow=False):
            continue
        _UnitAnalysis(unit, old_path, new_path, original, patched, targets, result).run()
    for unit in sorted(set(original.objects) - set(patched.objects)):
        result.removed.append(f"translation unit {unit}")
    return result


class _UnitAnalysis:
    def __init__(
        self,
        unit: str,
        old_path: Path | None,
        new_path: Path,
        original: BuiltTree,
        patched: BuiltTree,
        targets: TargetSymbols,
        result: LevelAnalysis,
    ) -> None:
        self.unit = unit
        self.old = ObjectFile(old_path) if old_path is not None else None
        self.new = ObjectFile(new_path)
        self.old_debug = DebugInfo(old_path) if old_path is not None else None
        self.new_debug = DebugInfo(new_path)
        self.original, self.patched = original, patched
        self.targets = targets
        self.result = result
        self.symbols = program_symbols(self.new)

    def refuse(self, symbol: str, reason: str) -> None:
        refusal = Refusal(symbol, reason)
        if refusal not in self.result.refusals:
            self.result.refusals.append(refusal)

    def run(self) -> None:
        try:
            check = None
            if self.old_debug is not None:
                check = LineNumberCheck(
                    self.original.source_path(self.old_debug.primary_source),
                    self.patched.source_path(self.new_debug.primary_source),
                )
            diff = diff_unit(self.unit, self.old, self.new, line_only=check)
            plan = UnitPlan(diff=diff)
            self.result.line_only += [diff.pairs.get(n, n) for n in diff.line_only]
            self.result.removed += diff.removed_functions
            if not (diff.changed_functions or diff.new_functions or diff.changed_data):
                return
            self._include(plan)
            self._check_data(plan)
            self._check_constructors_and_ifuncs(plan)
            self._check_layouts(plan)
            self._redirect(plan)
            self._describe(plan)
            self.result.units.append(plan)
        finally:
            self.new_debug.close()
            if self.old_debug is not None:
                self.old_debug.close()

    def _include(self, plan: UnitPlan) -> None:
        diff = plan.diff
        for name in diff.changed_functions:
            plan.included[name] = "internal" if is_internal(self.symbols[name]) else "changed"
        for name in diff.new_functions:
            plan.included[name] = "new"
        # Whatever calls a changed compiler-made copy, or jumps into the middle of a
        # changed function (a cold part jumping back), must move with it.
        grew = True
        while grew:
            grew = False
            for name, symbol in self.symbols.items():
                if symbol.kind != "func" or name in plan.included:
                    continue
                for _, found, aimed in references(self.new, symbol):
                    if found is None or found.name not in plan.included:
                        continue
                    if is_internal(found) or aimed != 0:
                        plan.included[name] = "internal" if is_internal(symbol) else "dependent"
                        grew = True
                        break

    def _check_data(self, plan: UnitPlan) -> None:
        users = owners(self.new)
        functions = set(plan.included)
        for name, what in plan.diff.changed_data:
            symbol = self.symbols[name]
            section = self.new.sections[symbol.section] if symbol.section is not None else None
            used_by = users.get(name, frozenset())
            private_constant = (
                symbol.bind == "local"
                and symbol.kind == "object"
                and section is not None
                and (not section.writable or section.name.startswith(".data.rel.ro"))
                and used_by
                and used_by <= functions
            )
            if private_constant:
                # Read-only and used only by patched code: the patch carries the new copy.
                plan.included[name] = "rodata"
                continue
            scope = "global" if symbol.bind != "local" else "static"
            self.refuse(
                plan.diff.pairs.get(name, name),
                f"{what}; existing {scope} data keeps its old value in running processes",
            )
        for name, symbol in self.symbols.items():
            if symbol.kind == "func" or name in plan.included or name not in plan.diff.pairs:
                continue
            for _, found, _ in references(self.new, symbol):
                if found is not None and plan.included.get(found.name) == "internal":
                    self.refuse(name, f"existing data points into {found.name}, which changed")

    def _constructors(self, obj: ObjectFile, rename: dict[str, str]) -> set[str]:
        canonical = Canonical(obj, lambda name: rename.get(name, name))
        names = set()
        for section in obj.sections:
            if section.name.startswith(_CONSTRUCTOR_SECTIONS):
                for reloc in section.relocations:
                    found, _ = canonical.target(reloc)
                    if found is not None:
                        names.add(rename.get(found.name, found.name))
        return names

    def _check_constructors_and_ifuncs(self, plan: UnitPlan) -> None:
        pairs = plan.diff.pairs
        new_ctors = self._constructors(self.new, pairs)
        old_ctors = self._constructors(self.old, {}) if self.old is not None else set()
        for name in plan.included:
            if pairs.get(name, name) in new_ctors:
                self.refuse(
                    pairs.get(name, name),
                    "constructor or destructor changed; constructors already ran in every "
                    "process and destructors hold the old code",
                )
        for name in sorted(new_ctors ^ old_ctors):
            self.refuse(name, "the set of constructors and destructors changed")
        for name, symbol in self.symbols.items():
            if symbol.kind != "ifunc":
                continue
            if name not in pairs:
                self.refuse(name, "new IFUNC: its resolver never ran in running processes")
                continue
            assert symbol.section is not None
            resolver = self.new.covering(symbol.section, symbol.value)
            for candidate in self.new.symbols_in(symbol.section):
                if candidate.kind == "func" and candidate.value == symbol.value:
                    resolver = candidate
            if resolver is not None and resolver.name in plan.included:
                self.refuse(name, f"IFUNC resolver {resolver.name} changed; it already ran")

    def _check_layouts(self, plan: UnitPlan) -> None:
        if self.old_debug is None:
            return
        old_layouts = self.old_debug.all_layouts()
        changed: dict[str, tuple[str, list[str]]] = {}
        for name in plan.included:
            symbol = self.symbols[name]
            if symbol.kind != "func":
                continue
            variables = {
                found.name
                for _, found, _ in references(self.new, symbol)
                if found is not None and found.kind in ("object", "tls")
            }
            used: dict[str, Layout] = self.new_debug.layouts_used(name, variables)
            for key, layout in used.items():
                before = old_layouts.get(key)
                difference = before.difference(layout) if before is not None else None
                if difference is not None:
                    changed.setdefault(key, (difference, []))[1].append(
                        plan.diff.pairs.get(name, name)
                    )
        for key, (difference, users) in sorted(changed.items()):
            self.refuse(
                key,
                f"layout changed ({difference}); used by {', '.join(sorted(set(users)))}, "
                "while running code and live data keep the old layout",
            )

    def _redirect(self, plan: UnitPlan) -> None:
        if self.old is None:
            return  # a new translation unit: nothing in the target to redirect
        for name, role in sorted(plan.included.items()):
            if role not in ("changed", "dependent"):
                continue
            original_name = plan.diff.pairs[name]
            original = self.old.by_name[original_name]
            found = self.targets.locate(original_name, self.old.source_name)
            if isinstance(found, str):
                if "not in the target" in found:
                    plan.included[name] = "carried"  # nothing in the target calls it
                else:
                    self.refuse(original_name, found)
                continue
            if self.targets.is_ambiguous_by_name(original_name):
                self.refuse(
                    original_name,
                    "several functions of the target share this name; a bundle names the "
                    "functions it replaces by name only",
                )
                continue
            if not self.targets.same_function(found, self.old.bytes_of(original)):
                self.refuse(
                    original_name,
                    f"the function-sections build compiled it to {original.size} bytes, the "
                    f"target has {found.symbol.size}: the builds are not comparable",
                )
                continue
            room = original.size - (4 if self.old.bytes_of(original)[:4] == ENDBR64 else 0)
            if room < JUMP_SIZE:
                after = " after endbr64" if room != original.size else ""
                self.refuse(
                    original_name,
                    f"{room} bytes{after}: too short to hold the {JUMP_SIZE}-byte jump",
                )
                continue
            plan.redirected[name] = found

    def _describe(self, plan: UnitPlan) -> None:
        diff, result = plan.diff, self.result
        changed_sources = self._source_changed_functions()
        for name, role in sorted(plan.included.items()):
            original = diff.pairs.get(name, name)
            if role == "changed" or role == "carried":
                inlined = sorted(self.new_debug.inlined_into(name) & changed_sources)
                if inlined and original.split(".")[0] not in changed_sources:
                    result.inlined.append((original, inlined))
                else:
                    result.changed.append(original)
            elif role == "dependent":
                result.dependent.append(original)
            elif role == "new":
                result.added.append(name)
            elif role == "rodata":
                result.replaced_rodata.append(original)
            elif role == "internal":
                (result.changed if name in diff.pairs else result.added).append(original)

    def _source_changed_functions(self) -> set[str]:
        """Functions whose own source text the fixes changed (or added)."""
        changed = set()
        for name in self.new_debug.declarations:
            new_site = self.new_debug.decl_site(name)
            old_site = self.old_debug.decl_site(name) if self.old_debug is not None else None
            if new_site is None:
                continue
            new_text = function_text(self.patched.source_path(new_site.path), new_site.line)
            if new_text is None:
                continue
            old_text = (
                function_text(self.original.source_path(old_site.path), old_site.line)
                if old_site is not None
                else None
            )
            if old_text != new_text:
                changed.add(name)
        return changed

"""Comparing one translation unit's original and patched objects, function by function.

Both objects are built with ``-ffunction-sections -fdata-sections``, so each
function and variable sits in its own section. A symbol is compared in a
canonical form: its bytes with relocated fields zeroed, plus its relocations,
each rewritten to what it points at rather than how the assembler spelled it.
That makes the comparison blind to what legitimately differs between two
builds: section names (``.rodata.f.str1.1``), local label names (``.LC3``),
the numbering of compiler-made symbols (``buf.1``, ``foo.constprop.0``) and the
offset of a string inside its string section.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from nonstop.builders.userspace.elfobj import ObjectFile, Relocation, Symbol

_NUMBERED = re.compile(r"^(.+)\.(\d+)$")
PROGRAM_KINDS = ("func", "object", "tls", "ifunc", "common")


@dataclass(frozen=True)
class Ref:
    """Where a relocation points, independent of section and label names.

    ``sym``: a named symbol (by its original name); ``str``: a string literal
    (by content); ``const``: a merged constant (by content); ``anon``: an
    unnamed section such as a jump table (by a digest of its canonical form).
    """

    kind: str
    key: str
    addend: int


@dataclass(frozen=True)
class Form:
    """The canonical form of one symbol's contents."""

    size: int
    masked: bytes
    relocations: tuple[tuple[int, int, Ref], ...]


class Canonical:
    """Canonical forms of the symbols of one object, naming symbols through RENAME."""

    def __init__(self, obj: ObjectFile, rename: Callable[[str], str]) -> None:
        self.obj = obj
        self.rename = rename
        self._anon: dict[int, str] = {}

    def target(self, reloc: Relocation) -> tuple[Symbol | None, int]:
        """The program symbol a relocation points into, and the addend relative to it."""
        symbol = self.obj.symbols[reloc.symbol]
        if symbol.kind != "section" and not symbol.is_label:
            return symbol, reloc.addend
        assert symbol.section is not None
        effective = symbol.value + reloc.addend
        aimed = effective + (reloc.width if reloc.pc_relative else 0)
        found = self.obj.covering(symbol.section, aimed)
        if found is None:
            candidates = self.obj.symbols_in(symbol.section)
            found = candidates[0] if len(candidates) == 1 else None
        if found is None:
            return None, effective
        return found, effective - found.value

    def ref(self, reloc: Relocation) -> Ref:
        """Where RELOC points, in terms that survive a rebuild (see Ref)."""
        found, addend = self.target(reloc)
        if found is not None:
            return Ref("sym", self.rename(found.name), addend)
        symbol = self.obj.symbols[reloc.symbol]
        assert symbol.section is not None
        section = self.obj.sections[symbol.section]
        effective = symbol.value + reloc.addend
        aimed = effective + (reloc.width if reloc.pc_relative else 0)
        if section.mergeable_strings:
            end = section.data.find(b"\0", aimed)
            text = section.data[aimed : end if end >= 0 else len(section.data)]
            return Ref("str", text.hex(), effective - aimed)
        if section.mergeable_constants and section.entsize:
            start = aimed - aimed % section.entsize
            chunk = section.data[start : start + section.entsize]
            return Ref("const", chunk.hex(), effective - start)
        return Ref("anon", self._anon_digest(symbol.section), effective)

    def _anon_digest(self, index: int) -> str:
        """Digest of an unnamed section's canonical contents (a jump table, a literal)."""
        if index in self._anon:
            return self._anon[index]
        section = self.obj.sections[index]
        self._anon[index] = f"cycle:{section.name}"  # a self-referencing table ends here
        form = self._form(section.index, 0, section.size)
        self._anon[index] = hashlib.sha256(repr(form).encode()).hexdigest()[:24]
        return self._anon[index]

    def _form(self, section_index: int, start: int, size: int) -> Form:
        section = self.obj.sections[section_index]
        masked = bytearray(section.content(start, start + size))
        relocations = []
        for reloc in section.relocations:
            if not start <= reloc.offset < start + size:
                continue
            offset = reloc.offset - start
            masked[offset : offset + reloc.width] = bytes(reloc.width)
            relocations.append((offset, reloc.type, self.ref(reloc)))
        return Form(size=size, masked=bytes(masked), relocations=tuple(relocations))

    def form(self, symbol: Symbol) -> Form:
        """The canonical form of the defined or common SYMBOL: equal unless its contents changed."""
        if symbol.section is None:  # a common symbol: only its size
            return Form(size=symbol.size, masked=b"", relocations=())
        return self._form(symbol.section, symbol.value, symbol.size)


def program_symbols(obj: ObjectFile) -> dict[str, Symbol]:
    """Defined functions and data of OBJ by name, common symbols included."""
    return {
        s.name: s
        for s in obj.symbols
        if s.name and s.kind in PROGRAM_KINDS and (s.defined or s.kind == "common")
    }


def owners(obj: ObjectFile) -> dict[str, frozenset[str]]:
    """For each symbol name, the names of the functions and data whose relocations use it."""
    canonical = Canonical(obj, lambda name: name)
    users: dict[str, set[str]] = defaultdict(set)
    for user in program_symbols(obj).values():
        if user.section is None:
            continue
        for reloc in obj.relocations_of(user):
            found, _ = canonical.target(reloc)
            if found is not None and found.name != user.name:
                users[found.name].add(user.name)
    return {name: frozenset(names) for name, names in users.items()}


def correlate(orig: ObjectFile, patched: ObjectFile) -> dict[str, str]:
    """Pair defined symbols of PATCHED with those of ORIG: patched name -> original name.

    Plain names pair by name. Compiler-numbered names (``x.3``, ``f.constprop.0``)
    are renumbered by unrelated edits, so they pair by their base name when it
    is unique on both sides, otherwise by which symbols use them; anything
    ambiguous stays unpaired (it is then new, never wrongly matched).
    """
    old, new = program_symbols(orig), program_symbols(patched)
    pairs = {name: name for name in new if name in old and not _NUMBERED.match(name)}
    old_groups: dict[str, list[str]] = defaultdict(list)
    new_groups: dict[str, list[str]] = defaultdict(list)
    for names, groups in ((old, old_groups), (new, new_groups)):
        for name in names:
            match = _NUMBERED.match(name)
            if match:
                groups[match.group(1)].append(name)
    for base, new_names in new_groups.items():
        old_names = old_groups.get(base, [])
        if len(new_names) == 1 and len(old_names) == 1:
            pairs[new_names[0]] = old_names[0]
    # Users may be numbered themselves (f.part.0 using buf.3): repeat until nothing pairs.
    old_users, new_users = owners(orig), owners(patched)
    grew = True
    while grew:
        grew = False
        taken = set(pairs.values())
        for base, new_names in new_groups.items():
            old_names = [o for o in old_groups.get(base, []) if o not in taken]
            for name in new_names:
                if name in pairs:
                    continue
                users = {pairs.get(user, user) for user in new_users.get(name, frozenset())}
                same = [o for o in old_names if users and old_users.get(o, frozenset()) == users]
                if len(same) > 1:  # one user with several (an inlined function's statics)
                    same = [o for o in same if _raw(orig, old[o]) == _raw(patched, new[name])]
                if len(same) > 1:
                    same = [o for o in same if o == name]
                if len(same) == 1:
                    pairs[name] = same[0]
                    taken.add(same[0])
                    old_names.remove(same[0])
                    grew = True
    return pairs


def _raw(obj: ObjectFile, symbol: Symbol) -> bytes:
    return obj.bytes_of(symbol) if symbol.section is not None else b""


@dataclass
class UnitDiff:
    """What differs between the original and patched object of one translation unit."""

    unit: str
    """The object's path relative to the build tree."""
    orig: ObjectFile | None
    patched: ObjectFile
    pairs: dict[str, str]
    changed_functions: list[str] = field(default_factory=list)
    new_functions: list[str] = field(default_factory=list)
    removed_functions: list[str] = field(default_factory=list)
    changed_data: list[tuple[str, str]] = field(default_factory=list)
    """(patched name, what changed)."""
    new_data: list[str] = field(default_factory=list)
    line_only: list[str] = field(default_factory=list)

    def canonical_patched(self) -> Canonical:
        """Canonical forms of the patched object, symbols named as rename_patched says."""
        return Canonical(self.patched, self.rename_patched)

    def rename_patched(self, name: str) -> str:
        """The name a patched symbol is compared under, so unchanged code compares equal.

        A paired symbol takes its original's name; an unpaired defined one a
        ``new:`` name no original has; an undefined (external) one keeps its own.
        """
        if name in self.pairs:
            return self.pairs[name]
        symbol = self.patched.by_name.get(name)
        if symbol is not None and symbol.defined:
            return f"new:{name}"  # never equal to an original symbol
        return name


LineOnlyCheck = Callable[[Form, Form], bool]


def diff_unit(
    unit: str,
    orig: ObjectFile | None,
    patched: ObjectFile,
    line_only: LineOnlyCheck | None = None,
) -> UnitDiff:
    """Classify every function and data symbol of one translation unit."""
    if orig is None:
        result = UnitDiff(unit=unit, orig=None, patched=patched, pairs={})
        for name, symbol in program_symbols(patched).items():
            (result.new_functions if symbol.kind == "func" else result.new_data).append(name)
        return result
    result = UnitDiff(unit=unit, orig=orig, patched=patched, pairs=correlate(orig, patched))
    old_forms = Canonical(orig, lambda name: name)
    new_forms = result.canonical_patched()
    old_symbols = program_symbols(orig)
    for name, symbol in sorted(program_symbols(patched).items()):
        if symbol.kind == "ifunc":
            continue  # an IFUNC names its resolver's code: judged by the safety analysis
        is_function = symbol.kind == "func"
        original = result.pairs.get(name)
        if original is None:
            (result.new_functions if is_function else result.new_data).append(name)
            continue
        before = old_symbols[original]
        old_form, new_form = old_forms.form(before), new_forms.form(symbol)
        if old_form == new_form:
            continue
        if is_function:
            if line_only is not None and line_only(old_form, new_form):
                result.line_only.append(name)
            else:
                result.changed_functions.append(name)
        elif old_form.size != new_form.size:
            result.changed_data.append((name, f"size changed {old_form.size} -> {new_form.size}"))
        else:
            result.changed_data.append((name, "initial value changed"))
    paired = set(result.pairs.values())
    result.removed_functions = sorted(
        name for name, s in old_symbols.items() if s.kind == "func" and name not in paired
    )
    return result

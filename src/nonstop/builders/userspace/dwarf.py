"""What the debug information of one object says: struct layouts, types a function uses, inlining.

Read with pyelftools from objects built with ``-g``. Functions are found by
their source name: a compiler-made copy (``f.constprop.0``, ``f.cold``) is
described by the DWARF of ``f``. pyelftools applies the relocations of an
object's DWARF sections but knows none for the offsets of thread-local
variables (``R_X86_64_DTPOFF32/64``, in the location of a ``__thread``
variable: wolfssl's ``ecc.c``); they are added here, computed like
``R_X86_64_32/64`` (symbol plus addend: the variable's offset in its block).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from elftools.common.exceptions import DWARFError, ELFError
from elftools.dwarf.die import DIE
from elftools.elf.elffile import ELFFile
from elftools.elf.enums import ENUM_RELOC_TYPE_x64
from elftools.elf.relocation import RelocationHandler

from nonstop.builders.errors import BuilderError

_RECORDS = {"DW_TAG_structure_type": "struct", "DW_TAG_union_type": "union"}
_TRANSPARENT = {
    "DW_TAG_typedef",
    "DW_TAG_const_type",
    "DW_TAG_volatile_type",
    "DW_TAG_restrict_type",
    "DW_TAG_atomic_type",
    "DW_TAG_pointer_type",
    "DW_TAG_reference_type",
    "DW_TAG_array_type",
    "DW_TAG_subroutine_type",
}


def _add_tls_offset_relocations() -> None:
    """The x86-64 TLS offset relocations pyelftools lacks (module docstring), once."""
    recipes = cast(dict[int, Any], RelocationHandler._RELOCATION_RECIPES_X64)
    for tls, like in (("R_X86_64_DTPOFF32", "R_X86_64_32"), ("R_X86_64_DTPOFF64", "R_X86_64_64")):
        recipes.setdefault(ENUM_RELOC_TYPE_x64[tls], recipes[ENUM_RELOC_TYPE_x64[like]])


_add_tls_offset_relocations()


def source_name(symbol: str) -> str:
    """The C name behind a symbol: ``f.constprop.0`` and ``f.cold`` come from ``f``."""
    return symbol.split(".", 1)[0]


@dataclass(frozen=True)
class Member:
    """A struct or union member; OFFSET and SIZE in bytes (OFFSET -1: a location not decoded)."""

    name: str
    offset: int
    size: int
    bits: tuple[int, int] | None
    """(bit offset, bit size) of a bit-field."""


@dataclass(frozen=True)
class Layout:
    """A complete struct or union as compiled; the two builds' layouts are paired by KEY."""

    key: str
    """``struct foo``, ``union bar``, or the typedef or member path naming an anonymous one."""
    size: int
    members: tuple[Member, ...]

    def difference(self, other: Layout) -> str | None:
        """How OTHER (the patched layout) differs from this one, in words; None if equal."""
        if self.size != other.size:
            return f"size {self.size} -> {other.size}"
        old = {m.name: m for m in self.members}
        new = {m.name: m for m in other.members}
        for name, member in old.items():
            if name not in new:
                return f"member {name} removed"
            if new[name].offset != member.offset:
                return f"member {name} offset {member.offset} -> {new[name].offset}"
            if new[name].size != member.size or new[name].bits != member.bits:
                return f"member {name} size {member.size} -> {new[name].size}"
        added = sorted(set(new) - set(old))
        return f"member {added[0]} added" if added else None


@dataclass(frozen=True)
class DeclSite:
    """A function's declaration site as the DWARF records it; LINE is 1-based."""

    path: str
    """Path of the declaring file as compiled (absolute, or relative to the build directory)."""
    line: int


def _name(die: DIE) -> str | None:
    attr = die.attributes.get("DW_AT_name")
    return attr.value.decode(errors="replace") if attr is not None else None


def _ref(die: DIE, attribute: str) -> DIE | None:
    if attribute not in die.attributes:
        return None
    try:
        return die.get_DIE_from_attribute(attribute)
    except (DWARFError, KeyError, ValueError):
        return None


def _origin(die: DIE) -> DIE | None:
    return _ref(die, "DW_AT_abstract_origin") or _ref(die, "DW_AT_specification")


def _resolved_name(die: DIE) -> str | None:
    seen = 0
    current: DIE | None = die
    while current is not None and seen < 8:
        name = _name(current)
        if name:
            return name
        current = _origin(current)
        seen += 1
    return None


def _type_of(die: DIE) -> DIE | None:
    found = _ref(die, "DW_AT_type")
    if found is None:
        origin = _origin(die)
        if origin is not None:
            found = _ref(origin, "DW_AT_type")
    return found


def _member_offset(die: DIE) -> int:
    attr = die.attributes.get("DW_AT_data_member_location")
    if attr is None:
        return 0
    value = attr.value
    if isinstance(value, int):
        return value
    if isinstance(value, list) and len(value) == 2 and value[0] == 0x23:  # DW_OP_plus_uconst
        return int(value[1])
    return -1


class DebugInfo:
    """The DWARF of one object file, indexed for the questions the builder asks."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.functions: dict[str, list[DIE]] = {}
        """Source function name -> its concrete (code-carrying) subprogram DIEs."""
        self.declarations: dict[str, DIE] = {}
        """Source function name -> the DIE carrying its declaration site."""
        self.variables: dict[str, DIE] = {}
        self.comp_dir = ""
        self.primary_source = ""
        """The compiled file as the compiler saw it (absolute, or relative to its directory)."""
        self._files: list[tuple[str, str]] = []
        try:
            self._handle = path.open("rb")
            elf = ELFFile(self._handle)
            if not elf.has_dwarf_info():
                raise BuilderError(
                    f"{path} has no debug information; the safety analysis needs DWARF (-g)"
                )
            self._index(elf)
        except (ELFError, DWARFError, OSError) as exc:
            raise BuilderError(f"cannot read debug information of {path}: {exc}") from None

    def close(self) -> None:
        """Close the object file; DIEs are read lazily from it, so nothing may be asked after."""
        self._handle.close()

    def _index(self, elf: ELFFile) -> None:
        dwarf = elf.get_dwarf_info()
        for cu in dwarf.iter_CUs():
            top = cu.get_top_DIE()
            comp_dir = top.attributes.get("DW_AT_comp_dir")
            if comp_dir is not None and not self.comp_dir:
                self.comp_dir = comp_dir.value.decode(errors="replace")
            name = top.attributes.get("DW_AT_name")
            if name is not None and not self.primary_source:
                self.primary_source = self._absolute("", name.value.decode(errors="replace"))
            program = dwarf.line_program_for_CU(cu)
            if program is not None and not self._files:
                self._files = _file_table(program.header)
            for die in top.iter_children():
                self._index_top(die)

    def _index_top(self, die: DIE) -> None:
        if die.tag == "DW_TAG_subprogram":
            name = _resolved_name(die)
            if name is None:
                return
            if "DW_AT_low_pc" in die.attributes or "DW_AT_ranges" in die.attributes:
                self.functions.setdefault(name, []).append(die)
            if "DW_AT_decl_line" in die.attributes and name not in self.declarations:
                self.declarations[name] = die
        elif die.tag == "DW_TAG_variable":
            name = _resolved_name(die)
            if name is not None:
                self.variables.setdefault(name, die)

    def decl_site(self, function: str) -> DeclSite | None:
        """Where FUNCTION (or the source function of a compiler-made copy) is declared.

        None when the DWARF does not say, or names a file outside its line table.
        """
        die = self.declarations.get(source_name(function))
        if die is None:
            return None
        index = die.attributes.get("DW_AT_decl_file")
        line = die.attributes["DW_AT_decl_line"].value
        if index is None or not 0 <= index.value < len(self._files):
            return None
        directory, name = self._files[index.value]
        return DeclSite(path=self._absolute(directory, name), line=int(line))

    def _absolute(self, directory: str, name: str) -> str:
        if not name.startswith("/"):
            name = f"{directory}/{name}" if directory else name
            if not name.startswith("/") and self.comp_dir:
                name = f"{self.comp_dir}/{name}"
        return name

    def inlined_into(self, function: str) -> set[str]:
        """Names of the functions whose bodies the compiler inlined into FUNCTION."""
        names: set[str] = set()
        for die in self.functions.get(source_name(function), []):
            for child in _walk(die):
                if child.tag == "DW_TAG_inlined_subroutine":
                    name = _resolved_name(child)
                    if name:
                        names.add(name)
        return names

    def layouts_used(self, function: str, globals_used: set[str]) -> dict[str, Layout]:
        """Every struct and union FUNCTION (and the globals it uses) can reach through types."""
        found: dict[str, Layout] = {}
        seen: set[int] = set()
        roots = list(self.functions.get(source_name(function), []))
        roots += [self.variables[name] for name in globals_used if name in self.variables]
        for root in roots:
            for die in _walk(root):
                self._collect_type(_type_of(die), None, found, seen)
        return found

    def all_layouts(self) -> dict[str, Layout]:
        """Every complete struct and union reachable from the unit's functions and variables."""
        found: dict[str, Layout] = {}
        seen: set[int] = set()
        for dies in self.functions.values():
            for root in dies:
                for die in _walk(root):
                    self._collect_type(_type_of(die), None, found, seen)
        for variable in self.variables.values():
            self._collect_type(_type_of(variable), None, found, seen)
        return found

    def _collect_type(
        self, die: DIE | None, alias: str | None, found: dict[str, Layout], seen: set[int]
    ) -> None:
        hops = 0
        while die is not None and die.tag in _TRANSPARENT and hops < 32:
            if die.tag == "DW_TAG_typedef":
                alias = _name(die) or alias
            if die.tag == "DW_TAG_subroutine_type":
                for param in die.iter_children():
                    self._collect_type(_type_of(param), None, found, seen)
            die = _type_of(die)
            hops += 1
        if die is None or die.tag not in _RECORDS or die.offset in seen:
            return
        seen.add(die.offset)
        name = _name(die)
        key = f"{_RECORDS[die.tag]} {name}" if name else (alias or f"<anonymous@{die.offset}>")
        if "DW_AT_declaration" in die.attributes:
            return  # an incomplete type: its layout is not known here
        members = []
        for member in die.iter_children():
            if member.tag != "DW_TAG_member":
                continue
            member_name = _name(member) or f"<anonymous@{_member_offset(member)}>"
            members.append(
                Member(
                    name=member_name,
                    offset=_member_offset(member),
                    size=_type_size(_type_of(member)),
                    bits=_bit_field(member),
                )
            )
            self._collect_type(_type_of(member), f"{key}.{member_name}", found, seen)
        size_attr = die.attributes.get("DW_AT_byte_size")
        found[key] = Layout(
            key=key, size=size_attr.value if size_attr else 0, members=tuple(members)
        )


def _bit_field(die: DIE) -> tuple[int, int] | None:
    size = die.attributes.get("DW_AT_bit_size")
    if size is None:
        return None
    offset = die.attributes.get("DW_AT_data_bit_offset") or die.attributes.get("DW_AT_bit_offset")
    return (offset.value if offset else 0, size.value)


def _type_size(die: DIE | None, depth: int = 0) -> int:
    if die is None or depth > 32:
        return 0
    size = die.attributes.get("DW_AT_byte_size")
    if size is not None:
        return int(size.value)
    if die.tag in ("DW_TAG_pointer_type", "DW_TAG_reference_type"):
        return 8
    if die.tag == "DW_TAG_array_type":
        count = 1
        for dim in die.iter_children():
            if dim.tag == "DW_TAG_subrange_type":
                upper = dim.attributes.get("DW_AT_upper_bound")
                length = dim.attributes.get("DW_AT_count")
                if length is not None and isinstance(length.value, int):
                    count *= length.value
                elif upper is not None and isinstance(upper.value, int):
                    count *= upper.value + 1
                else:
                    count = 0
        return count * _type_size(_type_of(die), depth + 1)
    return _type_size(_type_of(die), depth + 1)


def _walk(root: DIE) -> Iterator[DIE]:
    """ROOT and everything below it, following inlined bodies into their abstract origins."""
    stack = [root]
    seen: set[int] = set()
    while stack:
        die = stack.pop()
        if die.offset in seen:
            continue
        seen.add(die.offset)
        yield die
        stack.extend(die.iter_children())
        if die.tag in ("DW_TAG_subprogram", "DW_TAG_inlined_subroutine"):
            origin = _origin(die)
            if origin is not None:
                stack.append(origin)


def _file_table(header: Any) -> list[tuple[str, str]]:
    directories = [d.decode(errors="replace") for d in header["include_directory"]]
    files = []
    version = header["version"]
    for entry in header["file_entry"]:
        index = entry.dir_index
        if version < 5:
            directory = directories[index - 1] if index > 0 else ""
        else:
            directory = directories[index] if index < len(directories) else ""
        files.append((directory, entry.name.decode(errors="replace")))
    if version < 5:
        files.insert(0, ("", ""))  # DWARF 2-4 number files from 1
    return files

"""The kernel patch recipe: a TOML file naming one cumulative level of livepatch sources.

See docs/kernel-patching.md for the format. Paths in a recipe are relative to
the recipe file. Every text that ends up stamped into the module must be
printable ASCII, because it becomes a C string in ``.modinfo``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nonstop.builders.errors import RecipeError
from nonstop.bundle.manifest import Fix, FunctionPatch
from nonstop.files import load_toml

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_SYMBOL = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_OBJECT = re.compile(r"^[A-Za-z0-9_-]{1,55}$")
_CVE = re.compile(r"^CVE-[0-9]{4}-[0-9]{4,}$")
_SOURCE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*\.c$")
_HEADER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*\.h$")
_TOP_KEYS = {
    "name",
    "level",
    "effective_version",
    "description",
    "kernel",
    "module",
    "function",
    "fix",
}


@dataclass(frozen=True)
class KernelRecipe:
    """A validated recipe for one cumulative level.

    SOURCES and HEADERS are absolute paths with distinct plain file names (that
    the files exist is checked when building); every text stamped into the
    module is printable ASCII. RELEASE and VERSION are None when the recipe
    leaves the kernel to the command line.
    """

    path: Path
    name: str
    level: int
    sources: tuple[Path, ...]
    headers: tuple[Path, ...]
    """Local headers the sources include (copied beside them for the build)."""
    functions: tuple[FunctionPatch, ...]
    fixes: tuple[Fix, ...]
    release: str | None
    version: str | None
    effective_version: str | None
    description: str | None

    @property
    def module_name(self) -> str:
        """Level in the name: level N+1 must load while level N is still in place."""
        return f"nonstop_{self.name}_l{self.level}"


def _printable(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or not value.isascii() or not value.isprintable():
        raise RecipeError(f"{where} must be a non-empty printable ASCII string")
    return value


def _table(document: dict[str, Any], key: str, allowed: set[str], where: Path) -> dict[str, Any]:
    table = document.get(key, {})
    if not isinstance(table, dict):
        raise RecipeError(f"{where}: [{key}] must be a table")
    unknown = set(table) - allowed
    if unknown:
        raise RecipeError(f"{where}: unknown key {sorted(unknown)[0]!r} in [{key}]")
    return table


def _file(recipe: Path, name: object, pattern: re.Pattern[str], suffix: str) -> Path:
    if not isinstance(name, str) or not pattern.match(Path(name).name):
        raise RecipeError(f"{recipe}: {name!r} must be a {suffix} file with a plain name")
    return (recipe.parent / name).resolve()


def _functions(document: dict[str, Any], where: Path) -> tuple[FunctionPatch, ...]:
    items = document.get("function")
    if not isinstance(items, list) or not items:
        raise RecipeError(f"{where}: at least one [[function]] is required")
    functions = []
    for item in items:
        if not isinstance(item, dict) or set(item) - {"name", "object"}:
            raise RecipeError(f"{where}: [[function]] takes only 'name' and 'object'")
        name = item.get("name")
        obj = item.get("object", "vmlinux")
        if not isinstance(name, str) or not _SYMBOL.match(name):
            raise RecipeError(f"{where}: function name {name!r} is not a symbol name")
        if not isinstance(obj, str) or not _OBJECT.match(obj):
            raise RecipeError(f"{where}: function object {obj!r} is not vmlinux or a module name")
        functions.append(FunctionPatch(target=name, object=obj))
    return tuple(functions)


def _fixes(document: dict[str, Any], where: Path) -> tuple[Fix, ...]:
    items = document.get("fix", [])
    if not isinstance(items, list):
        raise RecipeError(f"{where}: fixes are [[fix]] tables")
    fixes = []
    for item in items:
        if not isinstance(item, dict) or set(item) - {"title", "cves", "references"}:
            raise RecipeError(f"{where}: [[fix]] takes 'title', 'cves' and 'references'")
        title = _printable(item.get("title"), f"{where}: fix title")
        cves = item.get("cves", [])
        references = item.get("references", [])
        if not isinstance(cves, list) or not all(
            isinstance(c, str) and _CVE.match(c) for c in cves
        ):
            raise RecipeError(f"{where}: fix {title!r}: cves must be CVE-YYYY-NNNN identifiers")
        if not isinstance(references, list):
            raise RecipeError(f"{where}: fix {title!r}: references must be a list")
        refs = tuple(_printable(ref, f"{where}: reference") for ref in references)
        fixes.append(Fix(title=title, cves=tuple(cves), references=refs))
    return tuple(fixes)


def parse_recipe(document: dict[str, Any], path: Path) -> KernelRecipe:
    """Validate DOCUMENT, the parsed TOML of the recipe file PATH (its paths are relative to it).

    Unknown keys are refused; the RecipeError names the first problem.
    """
    unknown = set(document) - _TOP_KEYS
    if unknown:
        raise RecipeError(f"{path}: unknown key {sorted(unknown)[0]!r}")
    name = document.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise RecipeError(f"{path}: name must match [a-z][a-z0-9_]{{0,31}}, got {name!r}")
    level = document.get("level")
    if not isinstance(level, int) or isinstance(level, bool) or not 1 <= level <= 1_000_000:
        raise RecipeError(f"{path}: level must be an integer from 1 to 1000000")
    kernel = _table(document, "kernel", {"release", "version"}, path)
    module = _table(document, "module", {"sources", "headers"}, path)
    sources = module.get("sources")
    if not isinstance(sources, list) or not sources:
        raise RecipeError(f"{path}: [module] sources must list the livepatch .c files")
    headers = module.get("headers", [])
    if not isinstance(headers, list):
        raise RecipeError(f"{path}: [module] headers must be a list of .h files")
    resolved = [_file(path, source, _SOURCE, ".c") for source in sources]
    resolved_headers = [_file(path, header, _HEADER, ".h") for header in headers]
    reserved = {f"nonstop_{name}_l{level}.c", "nonstop_stamp.c"}
    if any(source.name in reserved for source in resolved):
        raise RecipeError(f"{path}: a source name is reserved for the module itself")
    all_files = resolved + resolved_headers
    if len({file.name for file in all_files}) != len(all_files):
        raise RecipeError(f"{path}: two module files share one file name")
    optional = {
        key: _printable(document[key], f"{path}: {key}") if key in document else None
        for key in ("effective_version", "description")
    }
    return KernelRecipe(
        path=path,
        name=name,
        level=level,
        sources=tuple(resolved),
        headers=tuple(resolved_headers),
        functions=_functions(document, path),
        fixes=_fixes(document, path),
        release=_printable(kernel["release"], f"{path}: kernel release")
        if "release" in kernel
        else None,
        version=_printable(kernel["version"], f"{path}: kernel version")
        if "version" in kernel
        else None,
        effective_version=optional["effective_version"],
        description=optional["description"],
    )


def load_recipe(path: Path) -> KernelRecipe:
    """Read and validate the recipe file PATH; any problem is a one-line RecipeError."""
    return parse_recipe(load_toml(path, "recipe file", RecipeError), path)

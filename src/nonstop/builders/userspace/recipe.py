"""The userspace build recipe: a TOML file naming a library, its source, how to build it, fixes.

The recipe is documented in ``docs/recipes.md``. Paths in it are relative to the
recipe file. Every mistake (a missing key, a wrong type, an unknown key, a file
that does not exist) is reported as one :class:`RecipeError` line naming the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nonstop.builders.errors import RecipeError
from nonstop.files import load_toml

_CVE = re.compile(r"^CVE-\d{4}-\d{4,}$")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}$")
TREE_PLACEHOLDER = "{tree}"
"""Replaced by the build tree's path in ``cflags`` and ``env`` (for -ffile-prefix-map)."""


@dataclass(frozen=True)
class SourceSpec:
    """Exactly one of DIRECTORY (copied) and TARBALL (extracted, dropping STRIP_COMPONENTS)."""

    directory: Path | None
    tarball: Path | None
    strip_components: int


@dataclass(frozen=True)
class BuildSpec:
    """COMMAND runs with /bin/sh -c in the tree, for at most TIMEOUT seconds, with ENV added."""

    command: str
    library: str
    """Where the built library lands, relative to the tree."""
    directory: Path | None
    """Build every tree at this path (its contents are replaced); None: inside the work dir."""
    timeout: int
    env: dict[str, str]


@dataclass(frozen=True)
class CompilerSpec:
    """CC is the real compiler (name on PATH or path) the wrapper runs."""

    cc: str
    cflags: str | None
    """Exported as CFLAGS when set; None leaves the flags to the build system."""


@dataclass(frozen=True)
class TargetSpec:
    """Exactly one: BINARY, the library the bundles are for; or BUILD_IS_TARGET.

    BUILD_IS_TARGET means the recipe's own build of the unmodified source is
    what gets deployed, so there is nothing to reproduce.
    """

    binary: Path | None
    build_is_target: bool


@dataclass(frozen=True)
class FixSpec:
    """One ``[[fix]]``; NUMBER counts from 1 in recipe order, and level N applies fixes 1..N.

    PATCH is applied with ``patch -pSTRIP``.
    """

    number: int
    title: str
    cves: tuple[str, ...]
    patch: Path
    strip: int
    references: tuple[str, ...]


@dataclass(frozen=True)
class Recipe:
    """A checked recipe: input paths resolved and existing, no unknown key, at least one fix."""

    path: Path
    name: str
    effective_version: str | None
    source: SourceSpec
    build: BuildSpec
    compiler: CompilerSpec
    target: TargetSpec
    fixes: tuple[FixSpec, ...]


class _Table:
    """One TOML table being read: typed getters that name the key in every error."""

    def __init__(self, recipe: Path, where: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise RecipeError(f"recipe {recipe}: {where} must be a table")
        self.recipe, self.where, self.data = recipe, where, data
        self.used: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def error(self, key: str, message: str) -> RecipeError:
        return RecipeError(f"recipe {self.recipe}: {self._key(key)} {message}")

    def get(self, key: str, kind: type, default: Any = None, required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                raise self.error(key, "is required")
            return default
        value = self.data[key]
        if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            raise self.error(key, f"must be a {kind.__name__}, not {type(value).__name__}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        values = self.get(key, list, default=[])
        if not all(isinstance(item, str) for item in values):
            raise self.error(key, "must be a list of strings")
        return tuple(values)

    def path(self, key: str, required: bool = False) -> Path | None:
        value: str | None = self.get(key, str, required=required)
        if value is None:
            return None
        path = (self.recipe.parent / value).resolve()
        if not path.exists():
            raise self.error(key, f"names {path}, which does not exist")
        return path

    def table(self, key: str, required: bool = True) -> _Table:
        self.used.add(key)
        if key not in self.data:
            if required:
                raise RecipeError(f"recipe {self.recipe}: table [{self._key(key)}] is required")
            return _Table(self.recipe, self._key(key), {})
        return _Table(self.recipe, self._key(key), self.data[key])

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.error(unknown[0], "is not a recipe key (misspelt?)")


def load_recipe(path: Path) -> Recipe:
    """Read and check the recipe at PATH."""
    path = path.resolve()
    document = load_toml(path, "recipe file", RecipeError)
    top = _Table(path, "", document)
    name = top.get("name", str, required=True)
    if not _NAME.match(name):
        raise top.error("name", "must be a plain name (letters, digits, _ . + -)")
    recipe = Recipe(
        path=path,
        name=name,
        effective_version=top.get("effective_version", str),
        source=_source(top.table("source")),
        build=_build(top.table("build")),
        compiler=_compiler(top.table("compiler", required=False)),
        target=_target(top.table("target")),
        fixes=_fixes(path, top.get("fix", list, required=True)),
    )
    top.used.add("fix")
    top.finish()
    return recipe


def _source(table: _Table) -> SourceSpec:
    directory = table.path("dir")
    tarball = table.path("tarball")
    if (directory is None) == (tarball is None):
        raise RecipeError(f"recipe {table.recipe}: [source] needs exactly one of dir, tarball")
    if directory is not None and not directory.is_dir():
        raise table.error("dir", f"names {directory}, which is not a directory")
    strip = table.get("strip_components", int, default=0)
    if strip < 0:
        raise table.error("strip_components", "must not be negative")
    table.finish()
    return SourceSpec(directory=directory, tarball=tarball, strip_components=strip)


def _build(table: _Table) -> BuildSpec:
    command = table.get("command", str, required=True)
    library = table.get("library", str, required=True)
    if Path(library).is_absolute() or ".." in Path(library).parts:
        raise table.error("library", "must be a path inside the build tree")
    directory = table.get("directory", str)
    if directory is not None and not Path(directory).is_absolute():
        raise table.error("directory", "must be an absolute path")
    timeout = table.get("timeout", int, default=3600)
    if timeout <= 0:
        raise table.error("timeout", "must be positive (seconds)")
    env = table.get("env", dict, default={})
    if not all(isinstance(v, str) for v in env.values()):
        raise table.error("env", "values must be strings")
    table.finish()
    return BuildSpec(
        command=command,
        library=library,
        directory=Path(directory) if directory else None,
        timeout=timeout,
        env=dict(env),
    )


def _compiler(table: _Table) -> CompilerSpec:
    spec = CompilerSpec(cc=table.get("cc", str, default="gcc"), cflags=table.get("cflags", str))
    table.finish()
    return spec


def _target(table: _Table) -> TargetSpec:
    binary = table.path("binary")
    build_is_target = table.get("build_is_target", bool, default=False)
    if (binary is None) == (not build_is_target):
        raise RecipeError(
            f"recipe {table.recipe}: [target] needs either binary = PATH "
            "or build_is_target = true (and not both)"
        )
    table.finish()
    return TargetSpec(binary=binary, build_is_target=build_is_target)


def _fixes(recipe: Path, entries: list[Any]) -> tuple[FixSpec, ...]:
    if not entries:
        raise RecipeError(f"recipe {recipe}: at least one [[fix]] is required")
    fixes = []
    for number, entry in enumerate(entries, start=1):
        table = _Table(recipe, f"fix[{number}]", entry)
        cves = table.strings("cves")
        for cve in cves:
            if not _CVE.match(cve):
                raise table.error("cves", f"has {cve!r}, which is not a CVE id (CVE-YYYY-NNNN)")
        patch = table.path("patch", required=True)
        assert patch is not None
        strip = table.get("strip", int, default=1)
        if strip < 0:
            raise table.error("strip", "must not be negative")
        fixes.append(
            FixSpec(
                number=number,
                title=table.get("title", str, required=True),
                cves=cves,
                patch=patch,
                strip=strip,
                references=table.strings("references"),
            )
        )
        table.finish()
    return tuple(fixes)

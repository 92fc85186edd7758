"""Running a recipe's build: one source tree per stage, every compiler call wrapped and logged.

Each stage (the reproduction of the target, the original tree with function
sections, each patched level) lays out a fresh copy of the source, applies the
fixes it needs, runs the recipe's build command with the compiler wrapper
(``ccwrap``) first on PATH, and moves the finished tree into the work directory.
All stages build at the same path, so paths compiled into objects (``__FILE__``,
debug info) never differ between them.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nonstop.builders.errors import BuilderError
from nonstop.builders.userspace import ccwrap
from nonstop.builders.userspace.compilelog import (
    Invocation,
    last_link,
    link_inputs,
    prefix_maps,
    read_log,
)
from nonstop.builders.userspace.recipe import TREE_PLACEHOLDER, FixSpec, Recipe

SECTION_FLAGS = ("-ffunction-sections", "-fdata-sections")
_MARKER = ".nonstop-build-tree"
_ARCHIVES = ".nonstop-archives"
LOG_TAIL = 15
OUTER_MAKE = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "MAKE_TERMOUT", "MAKE_TERMERR"}


@dataclass(frozen=True)
class BuiltTree:
    """A finished build: its tree (moved into the work dir), library and the library's objects."""

    stage: str
    root: Path
    library: Path
    objects: dict[str, Path]
    """Object files linked into the library, by path relative to the tree."""
    seconds: float
    built_at: Path
    """Where the tree was while it was built (the path compiled into its objects)."""

    prefix_maps: tuple[tuple[str, str], ...] = ()
    """``-ffile-prefix-map=OLD=NEW`` (and -fdebug-prefix-map) pairs the compilations used."""
    unchanged_sources: Path | None = None
    """Where files missing under ROOT are read from: a tree whose files outside ROOT are the
    same in this stage (the Debian builder's ROOT holds only the files a level touched)."""

    def source_path(self, compiled: str) -> Path:
        """Where a source path recorded at build time (debug info) is now."""
        candidates = []
        for old, new in self.prefix_maps:
            if compiled == new or compiled.startswith(new.rstrip("/") + "/"):
                candidates.append(old + compiled[len(new) :])
        candidates.append(compiled)
        found = []
        for candidate in candidates:
            path = Path(os.path.normpath(candidate))
            if not path.is_absolute():
                path = self.root / path
            elif path.is_relative_to(self.built_at):
                path = self.root / path.relative_to(self.built_at)
            if path.is_file():
                return path
            if self.unchanged_sources is not None and path.is_relative_to(self.root):
                shared = self.unchanged_sources / path.relative_to(self.root)
                if shared.is_file():
                    return shared
            found.append(path)
        return found[0]


class BuildDriver:
    """Builds the stages of one recipe inside WORK."""

    def __init__(self, recipe: Recipe, work: Path) -> None:
        self.recipe = recipe
        self.work = work = work.resolve()
        self.tree = (recipe.build.directory or work / "tree").resolve()
        self.logs = work / "logs"
        self.trees = work / "trees"
        self.bin = work / "bin"
        for directory in (self.logs, self.trees, self.bin):
            directory.mkdir(parents=True, exist_ok=True)
        self.real_cc = self._real_compiler()
        self._install_wrappers()

    def _real_compiler(self) -> str:
        found = shutil.which(self.recipe.compiler.cc)
        if not found:
            raise BuilderError(f"compiler {self.recipe.compiler.cc!r} not found on PATH")
        return os.path.realpath(found)

    def _install_wrappers(self) -> None:
        script = self.bin / "ccwrap"
        script.write_text(
            f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -S "
            f'{shlex.quote(str(Path(ccwrap.__file__).resolve()))} "$@"\n'
        )
        script.chmod(0o755)
        names = {"cc", "gcc", "x86_64-linux-gnu-gcc", Path(self.recipe.compiler.cc).name}
        names.add(Path(self.real_cc).name)
        for name in names:
            link = self.bin / name
            if not link.exists():
                link.symlink_to("ccwrap")

    def build(self, stage: str, fixes: Sequence[FixSpec], function_sections: bool) -> BuiltTree:
        """Build the source with FIXES applied; with FUNCTION_SECTIONS, keep objects for diffing."""
        started = time.monotonic()
        self._lay_out_source()
        for fix in fixes:
            self._apply(fix)
        cc_log = self.logs / f"{stage}.cc.jsonl"
        cc_log.unlink(missing_ok=True)
        self._run(stage, cc_log, function_sections)
        library = self.tree / self.recipe.build.library
        if not library.is_file():
            raise BuilderError(
                f"{stage} build finished but {self.recipe.build.library} is not in the tree "
                f"(see [build] library in the recipe; log {self.logs / (stage + '.log')})"
            )
        calls = read_log(cc_log)
        objects = self._library_objects(calls, library) if function_sections else {}
        destination = self.trees / stage
        if destination.exists():
            shutil.rmtree(destination)
        shutil.move(self.tree, destination)
        return BuiltTree(
            stage=stage,
            root=destination,
            library=destination / self.recipe.build.library,
            objects={
                key: destination / path.relative_to(self.tree) for key, path in objects.items()
            },
            seconds=time.monotonic() - started,
            built_at=self.tree,
            prefix_maps=prefix_maps(calls),
        )

    def _lay_out_source(self) -> None:
        if self.tree.exists():
            if not (self.tree / _MARKER).exists():
                raise BuilderError(
                    f"build directory {self.tree} exists and was not made by nonstop; "
                    "remove it or choose another [build] directory"
                )
            shutil.rmtree(self.tree)
        source = self.recipe.source
        if source.directory is not None:
            shutil.copytree(source.directory, self.tree, symlinks=True)
        else:
            assert source.tarball is not None
            self.tree.mkdir(parents=True)
            _extract(source.tarball, self.tree, source.strip_components)
        (self.tree / _MARKER).write_text("a nonstop build tree: removed by the next build\n")

    def _apply(self, fix: FixSpec) -> None:
        done = subprocess.run(
            ["patch", f"-p{fix.strip}", "--batch", "--forward", "--no-backup-if-mismatch"],
            cwd=self.tree,
            stdin=fix.patch.open("rb"),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            lines = (done.stdout + done.stderr).strip().splitlines()
            detail = next((line for line in lines if "FAILED" in line or "can't" in line), "")
            raise BuilderError(
                f"fix {fix.number} ({fix.title}): {fix.patch.name} does not apply: "
                f"{detail or (lines[-1] if lines else 'patch failed')}"
            )

    def _environment(self, cc_log: Path, function_sections: bool) -> dict[str, str]:
        tree = str(self.tree)
        # A package's build is its own top-level make: flags, level and jobserver of a make
        # that runs nonstop (make test, a packaging Makefile) must not leak into it.
        env = {k: v for k, v in os.environ.items() if k not in OUTER_MAKE}
        env.update({k: v.replace(TREE_PLACEHOLDER, tree) for k, v in self.recipe.build.env.items()})
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
        env["CC"] = str(self.bin / "cc")
        if self.recipe.compiler.cflags is not None:
            env["CFLAGS"] = self.recipe.compiler.cflags.replace(TREE_PLACEHOLDER, tree)
        env["NONSTOP_CC_REAL"] = self.real_cc
        env["NONSTOP_CC_LOG"] = str(cc_log)
        env["NONSTOP_CC_EXTRA"] = " ".join(SECTION_FLAGS) if function_sections else ""
        env["NONSTOP_CC_DEBUG"] = "1" if function_sections else "0"
        return env

    def _run(self, stage: str, cc_log: Path, function_sections: bool) -> None:
        log_path = self.logs / f"{stage}.log"
        with log_path.open("w") as log:
            try:
                done = subprocess.run(
                    ["/bin/sh", "-c", self.recipe.build.command],
                    cwd=self.tree,
                    env=self._environment(cc_log, function_sections),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=self.recipe.build.timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise BuilderError(
                    f"{stage} build timed out after {self.recipe.build.timeout} s (log {log_path})"
                ) from None
        if done.returncode != 0:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-LOG_TAIL:]
            last = tail[-1] if tail else ""
            raise BuilderError(
                f"{stage} build failed with status {done.returncode}: {last} (log {log_path})"
            )

    def _library_objects(self, calls: list[Invocation], library: Path) -> dict[str, Path]:
        """The object files of the last link that produced LIBRARY, relative to the tree."""
        link = last_link(calls, library)
        objects: dict[str, Path] = {}
        tree = self.tree.resolve()
        for path in link_inputs(link, tree, library.name):
            if path.suffix == ".a":
                objects.update(self._archive_members(path.relative_to(tree)))
            else:
                objects[str(path.relative_to(tree))] = path
        return objects

    def _archive_members(self, archive: Path) -> dict[str, Path]:
        """Objects of a (libtool convenience) archive, extracted into the tree."""
        listing = subprocess.run(
            ["ar", "t", str(self.tree / archive)], capture_output=True, text=True, check=False
        )
        members = listing.stdout.split()
        if listing.returncode != 0 or len(members) != len(set(members)):
            raise BuilderError(f"cannot list archive {archive} or it holds duplicate member names")
        into = self.tree / _ARCHIVES / str(archive).replace("/", "_")
        into.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ar", "x", str(self.tree / archive)], cwd=into, check=True)
        return {
            f"{archive}({member})": into / member for member in members if member.endswith(".o")
        }


def _extract(tarball: Path, into: Path, strip: int) -> None:
    try:
        with tarfile.open(tarball) as archive:
            members = []
            for member in archive.getmembers():
                parts = Path(member.name).parts[strip:]
                if not parts:
                    continue
                member.name = str(Path(*parts))
                if member.islnk():
                    member.linkname = str(Path(*Path(member.linkname).parts[strip:]))
                members.append(member)
            archive.extractall(into, members=members, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise BuilderError(f"cannot extract {tarball}: {exc}") from None

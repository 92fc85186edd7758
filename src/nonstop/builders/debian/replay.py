"""Compiling single objects again, as the original build compiled them, instead of the package.

A level needs the objects of the files its patches touch, compiled with
function sections and debug information, before and after the patches: the
original build's own compiler call for that object, replayed in the same
tree at the same path, with ``-o`` pointing elsewhere, make's dependency
flags dropped, and ``-ffunction-sections -fdata-sections`` (and ``-g`` when
missing) added. Which objects a change reaches is read from the compiler
itself (``-M``: every file the object's compilation includes). Replays run in
parallel, one per CPU.

A library linked from a convenience archive (libtool's ``--whole-archive
lib*.a``, as expat's is) takes every member of it: each member is matched,
byte for byte, to the object a logged compilation wrote, so the replay knows
how it was made. An archive linked without ``--whole-archive`` gives only the
members the link needed, which the log does not say: it is refused.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from nonstop.builders.errors import BuilderError
from nonstop.builders.userspace.ccwrap import has_debug_flag
from nonstop.builders.userspace.compilelog import Invocation, link_inputs
from nonstop.builders.userspace.driver import SECTION_FLAGS

_DEPENDENCY_FLAGS = {"-MD", "-MMD", "-MP", "-MG"}
_DEPENDENCY_ARGS = {"-MF", "-MT", "-MQ"}
_ERROR_LINES = 3
_AR_MAGIC = b"!<arch>\n"
_IMPLICIT = re.compile(r"implicit declaration of function '([A-Za-z_][A-Za-z0-9_]*)'")
_AR_HEADER = 60


@dataclass(frozen=True)
class ObjectSource:
    """One object of a library: its key (path relative to the tree) and the call that made it."""

    key: str
    call: Invocation

    @property
    def file_name(self) -> str:
        """A flat, unique file name for replayed copies of this object."""
        digest = hashlib.sha256(self.key.encode()).hexdigest()[:8]
        return f"{Path(self.key).stem}-{digest}.o"


def library_objects(link: Invocation, calls: list[Invocation], tree: Path) -> list[ObjectSource]:
    """The objects LINK takes, each with the compilation that made it (the last one)."""
    made: dict[Path, Invocation] = {}
    for call in calls:
        output = call.output()
        if call.compiles and output is not None:
            made[output.resolve()] = call
    objects = []
    library = link.link_output()
    name = library.name if library else "the library"
    whole = _whole_archives(link)
    paths = []
    for path in link_inputs(link, tree, name):
        if path.suffix != ".a":
            paths.append(path)
        elif path in whole:
            paths += _archive_objects(path, made, tree)
        else:
            raise BuilderError(
                f"{name} is linked from the archive {path.relative_to(tree)} without "
                "--whole-archive: which of its members the link took is not known"
            )
    for path in paths:
        made_by = made.get(path)
        if made_by is None or len(made_by.sources()) != 1:
            raise BuilderError(
                f"{path.relative_to(tree)} in the link of {name} was not compiled from one C "
                "source by the compiler driver (C++ or assembly is not supported)"
            )
        objects.append(ObjectSource(str(path.relative_to(tree)), made_by))
    return objects


def _whole_archives(link: Invocation) -> set[Path]:
    """The archives LINK names between ``--whole-archive`` and ``--no-whole-archive``."""
    whole, found = False, set()
    for arg in link.argv:
        flags = arg.split(",")[1:] if arg.startswith("-Wl,") else [arg]
        if "--whole-archive" in flags:
            whole = True
        elif "--no-whole-archive" in flags:
            whole = False
        elif whole and arg.endswith(".a") and not arg.startswith("-"):
            found.add((link.cwd / arg).resolve())
    return found


def _archive_objects(archive: Path, made: dict[Path, Invocation], tree: Path) -> list[Path]:
    """The compiled objects the members of ARCHIVE are copies of (same name, same bytes)."""
    found = []
    for member, digest in archive_members(archive):
        same = [
            path
            for path in made
            if path.name == member and path.is_file() and _sha256(path.read_bytes()) == digest
        ]
        if not same:
            raise BuilderError(
                f"member {member} of {archive.relative_to(tree)} is no object a logged "
                "compilation wrote"
            )
        found.append(min(same, key=lambda path: (path.parent != archive.parent, str(path))))
    return found


def archive_members(archive: Path) -> list[tuple[str, str]]:
    """(name, SHA-256) of each member of the ``ar`` archive at ARCHIVE, symbol tables left out.

    GNU format: 60-byte headers, names ending in ``/``, long names in the ``//`` member.
    """
    data = archive.read_bytes()
    if not data.startswith(_AR_MAGIC):
        raise BuilderError(f"{archive.name} is not an ar archive")
    members, long_names, offset = [], b"", len(_AR_MAGIC)
    while offset + _AR_HEADER <= len(data):
        header = data[offset : offset + _AR_HEADER]
        size_field = header[48:58].strip()
        if header[58:60] != b"`\n" or not size_field.isdigit():
            raise BuilderError(f"{archive.name}: a member header at byte {offset} is malformed")
        start = offset + _AR_HEADER
        body = data[start : start + int(size_field)]
        name = header[:16].decode("latin-1").rstrip()
        if name == "//":
            long_names = body
        elif name.startswith("/") and name[1:].isdigit():
            entry = long_names[int(name[1:]) :].split(b"\n", 1)[0]
            members.append((entry.decode("latin-1").rstrip("/"), _sha256(body)))
        elif name not in ("/", "/SYM64/"):
            members.append((name.rstrip("/"), _sha256(body)))
        offset = start + int(size_field) + int(size_field) % 2
    return members


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def replay_argv(call: Invocation, output: Path) -> list[str]:
    """CALL's arguments writing OUTPUT, without dependency files, with sections and -g."""
    argv: list[str] = []
    skip = False
    for arg in call.argv:
        if skip:
            skip = False
            continue
        if arg == "-o" or arg in _DEPENDENCY_ARGS:
            skip = True
            continue
        if arg.startswith("-o") or arg in _DEPENDENCY_FLAGS or arg.startswith("-Wp,-M"):
            continue
        if any(arg.startswith(flag) and len(arg) > 3 for flag in _DEPENDENCY_ARGS):
            continue
        argv.append(arg)
    argv += ["-o", str(output), *SECTION_FLAGS]
    if not has_debug_flag(argv):
        argv.append("-g")
    return argv


class Replayer:
    """Replays compilations of one tree with COMPILER, JOBS at a time."""

    def __init__(self, compiler: str, tree: Path, jobs: int | None = None) -> None:
        self.compiler, self.tree = compiler, tree.resolve()
        self.jobs = jobs or os.cpu_count() or 1
        self.implicit: dict[Path, set[str]] = {}
        """Per object compiled: the functions the compiler saw called without a declaration."""

    def dependencies(self, objects: list[ObjectSource], scratch: Path) -> dict[str, set[str]]:
        """For each object key: the tree's files its compilation reads (relative paths)."""
        scratch.mkdir(parents=True, exist_ok=True)

        def one(item: ObjectSource) -> set[str]:
            rule = scratch / (item.file_name + ".d")
            argv = [a for a in replay_argv(item.call, rule) if a != "-c"]
            argv = [*argv[: argv.index("-o")], "-M", "-MF", str(rule)]
            self._run(item, argv)
            return self._rule_files(item.call.cwd, rule.read_text())

        with ThreadPoolExecutor(self.jobs) as pool:
            found = list(pool.map(one, objects))
        return {item.key: files for item, files in zip(objects, found, strict=True)}

    def compile(self, objects: Iterable[ObjectSource], into: Path) -> dict[str, Path]:
        """Each object compiled into INTO with sections and debug info: key -> object file."""
        into.mkdir(parents=True, exist_ok=True)
        items = list(objects)

        def one(item: ObjectSource) -> Path:
            output = into / item.file_name
            output.unlink(missing_ok=True)
            warnings = self._run(item, replay_argv(item.call, output))
            self.implicit[output] = set(_IMPLICIT.findall(warnings))
            return output

        with ThreadPoolExecutor(self.jobs) as pool:
            outputs = list(pool.map(one, items))
        return {item.key: output for item, output in zip(items, outputs, strict=True)}

    def _run(self, item: ObjectSource, argv: list[str]) -> str:
        """Run the compiler on ARGV for ITEM; its diagnostics (in the C locale)."""
        done = subprocess.run(
            [self.compiler, *argv],
            cwd=item.call.cwd,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if "error" in line]
            detail = "; ".join((errors or done.stderr.strip().splitlines())[:_ERROR_LINES])
            raise BuilderError(f"compiling {item.key} failed: {detail or 'no message'}")
        return done.stderr

    def _rule_files(self, cwd: Path, rule: str) -> set[str]:
        words = rule.replace("\\\n", " ").split(":", 1)[-1].split()
        files = set()
        for word in words:
            path = Path(os.path.normpath(cwd / word))
            if path.is_relative_to(self.tree):
                files.add(str(path.relative_to(self.tree)))
        return files

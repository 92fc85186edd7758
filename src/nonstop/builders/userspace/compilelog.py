"""Reading the compiler wrapper's log: which compilations and links a package build ran.

``ccwrap`` writes one JSON line per compiler call (working directory and
arguments, without the compiler's own name). Both builders read it: the
recipe driver to find the objects of the library it built, the Debian
builder also to replay single compilations later, with other flags, instead
of rebuilding the package.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from nonstop.builders.errors import BuilderError

C_SUFFIXES = (".c",)


@dataclass(frozen=True)
class Invocation:
    """One compiler call: its working directory and arguments (the compiler not included)."""

    cwd: Path
    argv: tuple[str, ...]

    @property
    def compiles(self) -> bool:
        """A compilation to an object (``-c``), not a link, preprocessing or assembly only."""
        return "-c" in self.argv and not any(flag in self.argv for flag in ("-S", "-E"))

    def output(self) -> Path | None:
        """The file this call writes (absolute), or None for a call that writes none we know."""
        argv = self.argv
        for index, arg in enumerate(argv):
            if arg == "-o" and index + 1 < len(argv):
                return self.cwd / argv[index + 1]
            if arg.startswith("-o") and len(arg) > 2:
                return self.cwd / arg[2:]
        if self.compiles:
            sources = self.sources()
            if len(sources) == 1:
                return self.cwd / (Path(sources[0]).stem + ".o")
        return None

    def sources(self) -> list[str]:
        """The C source files this call names (as written)."""
        return [arg for arg in self.argv if not arg.startswith("-") and arg.endswith(C_SUFFIXES)]

    def link_output(self) -> Path | None:
        """What this call links, or None if it is not a link."""
        if self.compiles or any(flag in self.argv for flag in ("-S", "-E", "-M", "-MM")):
            return None
        return self.output()


def read_log(path: Path) -> list[Invocation]:
    """The calls in the wrapper's log at PATH, in order (none if there is no log)."""
    calls = []
    if path.exists():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            calls.append(Invocation(cwd=Path(entry["cwd"]), argv=tuple(entry["argv"])))
    return calls


def prefix_maps(calls: list[Invocation]) -> tuple[tuple[str, str], ...]:
    """``-ffile-prefix-map=OLD=NEW`` (and -fdebug-prefix-map) pairs the calls used, in order."""
    maps: dict[tuple[str, str], None] = {}
    for call in calls:
        for arg in call.argv:
            for flag in ("-ffile-prefix-map=", "-fdebug-prefix-map="):
                if arg.startswith(flag) and "=" in arg[len(flag) :]:
                    old, _, new = arg[len(flag) :].partition("=")
                    maps[(old, new)] = None
    return tuple(maps)


def last_link(calls: list[Invocation], library: Path) -> Invocation:
    """The last call that linked LIBRARY; a BuilderError if the compiler driver never did."""
    wanted = library.resolve()
    link = None
    for call in calls:
        output = call.link_output()
        if output is not None and output.resolve() == wanted:
            link = call
    if link is None:
        raise BuilderError(
            f"no compiler-driven link of {library.name} was seen; the library must be "
            "linked by the compiler driver (cc -shared), not by ld directly"
        )
    return link


def link_inputs(link: Invocation, tree: Path, library: str) -> list[Path]:
    """The object files and archives LINK takes, resolved; each must be inside TREE."""
    inputs = []
    tree = tree.resolve()
    for arg in link.argv:
        if arg.startswith("@"):
            raise BuilderError(f"the link of {library} uses a response file ({arg})")
        if arg.startswith("-") or not arg.endswith((".o", ".a")):
            continue
        path = (link.cwd / arg).resolve()
        if not path.is_relative_to(tree):
            raise BuilderError(f"the link of {library} takes {path}, outside the tree")
        inputs.append(path)
    if not inputs:
        raise BuilderError(f"the link of {library} names no object files")
    return inputs

"""The ``--from`` version built once, as Debian built it, and kept for every later level.

The tree is the ``.dsc`` unpacked with its patches applied (``dpkg-source
-x``), built with ``dpkg-buildpackage -b`` (``DEB_BUILD_OPTIONS=nocheck``)
at ``/build/reproducible-path/<source>-<upstream version>``, the path
Debian's build daemons use: packages that embed their compile flags (OpenSSL)
reproduce only there. Every compiler call goes through the wrapper
(``ccwrap``), so the log says how each object of each library was compiled.
Each shipped library (``binaries``) must come out of the build with its exact
build-id, or the build stops: a patch made from objects that are not the
running code is never shipped.

The finished tree is kept in the cache (``<cache>/<source>_<version>/original/``)
and moved back to the build path while levels use it (``checked_out``), so a
second run, for a newer update of the same version, builds nothing again. A
tree a run left at the build path (killed) goes back to the cache, or is
thrown away if levels had changed it (``DIRTY``).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path

from debian.changelog import Changelog
from debian.debian_support import Version

from nonstop.builders import cache
from nonstop.builders.debian.binaries import ShippedLibrary
from nonstop.builders.debian.sources import Progress, SourcePackage
from nonstop.builders.errors import BuilderError
from nonstop.builders.userspace import ccwrap
from nonstop.builders.userspace.compilelog import Invocation, last_link, read_log
from nonstop.builders.userspace.driver import LOG_TAIL, OUTER_MAKE
from nonstop.bundle.identity import IdentityError, userspace_target_of

BUILD_ROOT = Path("/build/reproducible-path")
STAMP = "original.json"
CC_LOG = "cc.jsonl"
_CHANGELOG_HEAD = 1 << 16
"""Bytes of a changelog read for its newest entry."""
HOME_MARK = ".nonstop-original"
"""In a checked-out tree: the cache dir it belongs to."""
DIRTY = ".nonstop-dirty"
"""In a checked-out tree: levels are changing its files; never cache it again."""


@dataclass(frozen=True)
class BuiltLibrary:
    """A shipped library as the original build made it: the unstripped file and its link."""

    shipped: ShippedLibrary
    unstripped: str
    """Path of the unstripped library, relative to the tree."""
    link: Invocation


@dataclass(frozen=True)
class OriginalBuild:
    """The ``--from`` build: where it lives, its compiler calls, and the libraries it made."""

    source: SourcePackage
    home: Path
    build_path: Path
    calls: list[Invocation]
    libraries: list[BuiltLibrary]
    seconds: float
    """How long the build took when it was made (maybe in an earlier run)."""
    reused: bool
    """True when this run found the build in the cache."""

    @property
    def cached_tree(self) -> Path:
        return self.home / "tree"

    @contextmanager
    def checked_out(self) -> Iterator[Path]:
        """The tree at its build path for the block (one user at a time), then back home."""
        with cache.locked(BUILD_ROOT):
            _reclaim(self.build_path)
            self.cached_tree.rename(self.build_path)
            (self.build_path / HOME_MARK).write_text(str(self.home))
            try:
                yield self.build_path
            finally:
                _reclaim(self.build_path)


def build_path(source: SourcePackage) -> Path:
    """Where Debian's build daemons unpack SOURCE: ``<root>/<name>-<upstream version>``."""
    return BUILD_ROOT / f"{source.package}-{Version(source.version).upstream_version}"


def original_build(
    source: SourcePackage,
    libraries: list[ShippedLibrary],
    *,
    offline: bool = False,
    progress: Progress | None = None,
) -> OriginalBuild:
    """SOURCE built as Debian built it (module docstring), from the cache or built now."""
    say = progress or (lambda _line: None)
    home = source.root / "original"
    path = build_path(source)
    with cache.locked(BUILD_ROOT):
        _reclaim(path)
        found = _read_stamp(source, home, path, libraries)
        if found is not None:
            return found
        shutil.rmtree(home, ignore_errors=True)
        _install_build_dependencies(source, offline, say)
        say(f"{source.package} {source.version}: building the original at {path}")
        started = time.monotonic()
        before = set(BUILD_ROOT.iterdir())
        log = home / CC_LOG
        home.mkdir(parents=True)
        try:
            _unpack(source, path)
            _build(source, path, home, log)
            calls = read_log(log)
            built = _find_libraries(source, path, calls, libraries)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            shutil.rmtree(home, ignore_errors=True)
            raise
        finally:
            _remove_products(before)
        seconds = round(time.monotonic() - started, 1)
        say(
            f"{source.package} {source.version}: original built in {seconds:.0f} s; "
            + ", ".join(
                f"{b.shipped.soname} reproduced (build-id {b.shipped.build_id})" for b in built
            )
        )
        path.rename(home / "tree")
        (home / STAMP).write_text(
            json.dumps(
                {
                    "seconds": seconds,
                    "libraries": {b.shipped.build_id: b.unstripped for b in built},
                }
            )
        )
        return OriginalBuild(source, home, path, calls, built, seconds, reused=False)


def _reclaim(path: Path) -> None:
    """Put a tree left at PATH back in its cache dir (or remove it if levels changed it)."""
    if not path.exists():
        return
    mark = path / HOME_MARK
    if not mark.is_file():
        raise BuilderError(
            f"{path} exists and was not made by nonstop; remove it (the build path must be free)"
        )
    home = Path(mark.read_text())
    mark.unlink()
    dirty = (path / DIRTY).exists()
    if dirty or (home / "tree").exists() or not home.is_dir():
        shutil.rmtree(path)
        if dirty:
            (home / STAMP).unlink(missing_ok=True)
        return
    path.rename(home / "tree")


def _read_stamp(
    source: SourcePackage, home: Path, path: Path, libraries: list[ShippedLibrary]
) -> OriginalBuild | None:
    try:
        stamp = json.loads((home / STAMP).read_text())
        unstripped = dict(stamp["libraries"])
        seconds = float(stamp["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (home / "tree").is_dir() or set(unstripped) != {lib.build_id for lib in libraries}:
        return None
    calls = read_log(home / CC_LOG)
    built = []
    for library in libraries:
        relative = unstripped[library.build_id]
        built.append(BuiltLibrary(library, relative, last_link(calls, path / relative)))
    return OriginalBuild(source, home, path, calls, built, seconds, reused=True)


def _install_build_dependencies(source: SourcePackage, offline: bool, say: Progress) -> None:
    tree = source.tree
    check = subprocess.run(
        ["dpkg-checkbuilddeps", "-B"], cwd=tree, capture_output=True, text=True, check=False
    )
    if check.returncode == 0:
        return
    if offline:
        missing = check.stderr.strip().splitlines()[-1:] or ["unmet build dependencies"]
        raise BuilderError(f"{missing[0]} (--offline: install them, or run without --offline)")
    say(f"{source.package} {source.version}: installing build dependencies (apt-get build-dep)")
    cache.run_tool(
        ["apt-get", "build-dep", "-y", "-q", f"{source.package}={source.version}"],
        hint="installing build dependencies needs root",
    )


def _unpack(source: SourcePackage, path: Path) -> None:
    dsc = next(source.root.glob("*.dsc"))
    cache.run_tool(["dpkg-source", "-x", str(dsc), str(path)])


def _build(source: SourcePackage, path: Path, home: Path, log: Path) -> None:
    wrappers = home / "bin"
    wrappers.mkdir()
    script = wrappers / "ccwrap"
    script.write_text(
        f'#!/bin/sh\nexec {sys.executable} -S {Path(ccwrap.__file__).resolve()} "$@"\n'
    )
    script.chmod(0o755)
    for name in ("cc", "gcc", "x86_64-linux-gnu-gcc"):
        (wrappers / name).symlink_to("ccwrap")
    env = {k: v for k, v in os.environ.items() if k not in OUTER_MAKE}
    env.update(
        PATH=f"{wrappers}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        DEB_BUILD_OPTIONS=f"nocheck parallel={os.cpu_count() or 1}",
        NONSTOP_CC_REAL=real_compiler(),
        NONSTOP_CC_LOG=str(log),
        NONSTOP_CC_EXTRA="",
        NONSTOP_CC_DEBUG="0",
    )
    build_log = home / "build.log"
    with build_log.open("w") as output:
        done = subprocess.run(
            ["dpkg-buildpackage", "-b", "-uc", "-us"],
            cwd=path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode != 0:
        tail = build_log.read_text(errors="replace").strip().splitlines()[-LOG_TAIL:]
        raise BuilderError(
            f"dpkg-buildpackage of {source.package} {source.version} failed with status "
            f"{done.returncode}: {tail[-1] if tail else ''} (log {build_log})"
        )


def _toolchain_hint(source: SourcePackage) -> str:
    """Why a build-id may not reproduce: a compiler package newer than the upload (every object
    carries its compiler's identification, ``.comment``, and the build-id covers it)."""
    generic = "another compiler, flags or build path than Debian's?"
    try:
        owner = cache.run_tool(["dpkg-query", "-S", real_compiler()]).split(":", 1)[0]
        with gzip.open(Path("/usr/share/doc") / owner / "changelog.Debian.gz", "rt") as text:
            compiler = next(iter(Changelog(text.read(_CHANGELOG_HEAD), max_blocks=1)))
        with (source.tree / "debian" / "changelog").open() as text:
            upload = next(iter(Changelog(text.read(_CHANGELOG_HEAD), max_blocks=1)))
        compiled = parsedate_to_datetime(compiler.date or "")
        uploaded = parsedate_to_datetime(upload.date or "")
    except (BuilderError, OSError, StopIteration, TypeError, ValueError):
        return generic
    if compiled <= uploaded:
        return generic
    return (
        f"the compiler here, {owner} {compiler.version}, dates from {compiled:%Y-%m-%d}, after "
        f"{source.package} {source.version} was uploaded ({uploaded:%Y-%m-%d}): it was likely "
        "built with an older compiler, whose identification every object carries; else another "
        "compiler, flags or build path than Debian's"
    )


def real_compiler() -> str:
    """The C compiler Debian's packages build with here (``gcc`` on PATH, resolved)."""
    found = shutil.which("gcc")
    if not found:
        raise BuilderError("gcc is not installed (apt-get install build-essential)")
    return os.path.realpath(found)


def _remove_products(before: set[Path]) -> None:
    """The files the build wrote next to its tree (the .debs of every binary package, .changes,
    .buildinfo): the build root holds only trees. BEFORE: what it held before the build."""
    for product in BUILD_ROOT.iterdir():
        if product not in before and not product.is_dir():
            product.unlink()


def _find_libraries(
    source: SourcePackage, tree: Path, calls: list[Invocation], libraries: list[ShippedLibrary]
) -> list[BuiltLibrary]:
    """Each shipped library's unstripped twin: the output of a link with the same build-id."""
    outputs: dict[str, tuple[Path, Invocation]] = {}
    for call in calls:
        output = call.link_output()
        if output is None or not output.is_file():
            continue
        try:
            build_id = userspace_target_of(output, with_package=False).build_id
        except IdentityError:
            continue
        outputs[build_id] = (output, call)
    built = []
    for library in libraries:
        if library.build_id not in outputs:
            raise BuilderError(
                f"the original build does not reproduce {library.soname} of {library.package} "
                f"{library.version} (build-id {library.build_id}): no library the build linked "
                f"has that build-id ({_toolchain_hint(source)})"
            )
        output, link = outputs[library.build_id]
        built.append(BuiltLibrary(library, str(output.resolve().relative_to(tree)), link))
    return built

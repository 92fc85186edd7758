"""New processes: when a freshly exec'd process may be patched, and following it until then.

A process started after a library was patched maps the unpatched file. Right
after exec only the executable and the dynamic loader are mapped; ld.so then
maps every library, relocates them (dependencies first, the executable last)
and only then runs constructors and ``main``. Patching earlier is unsafe: the
engine links the patch against the process's GOTs, IFUNC choices and link map,
which ld.so is still filling in.

The signal used is one every hardened distro binary gives for free: after
relocating an object, ld.so makes its RELRO range (PT_GNU_RELRO: GOT,
.dynamic, .init_array) read-only. So a process is *ready* for a target when
the target's RELRO range shows read-only in /proc/PID/maps and the
executable's does too (the executable is relocated last, so startup
relocation is over). A process whose executable has no observable RELRO
range is ready once the target's is read-only. A target without one gives
no signal: the exec path then leaves the process to the daemon's periodic
rescan, which only touches processes older than :data:`RESCAN_MIN_AGE`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nonstop.userspace.elfmodel import PT_GNU_RELRO, PT_LOAD, read_program_headers
from nonstop.userspace.image import BuildIdCache, build_id_of, open_regular
from nonstop.userspace.procfs import Mapping, list_pids, map_file_path, read_maps, start_time

PAGE = 4096
FIRST_DELAY = 0.002
MAX_DELAY = 0.05
WATCH_SECONDS = 2.0
"""How long after exec a process is followed for its libraries (later dlopens: the rescan)."""
RESCAN_MIN_AGE = 1.0


@dataclass(frozen=True)
class Relro:
    """An ELF file's RELRO page range in its own virtual addresses (``start < end`` always)."""

    first_load: int
    """p_vaddr of the first PT_LOAD, page-aligned (the load bias is mapping start minus this)."""
    start: int
    end: int
    """The page range ld.so protects, as virtual addresses of the file (never empty)."""


def read_relro(path: Path) -> Relro | None:
    """The RELRO page range of the ELF file at PATH (None: no RELRO or not an ELF file)."""
    try:
        with open_regular(path) as handle:
            segments = read_program_headers(handle)
    except Exception:  # a hostile file (a huge offset, ...) has no RELRO that can be watched
        return None
    loads = [s.vaddr & ~(PAGE - 1) for s in segments or [] if s.type == PT_LOAD]
    relros = [s for s in segments or [] if s.type == PT_GNU_RELRO]
    if not loads or not relros:
        return None
    start = relros[0].vaddr & ~(PAGE - 1)
    end = (relros[0].vaddr + relros[0].memsz) & ~(PAGE - 1)
    return Relro(loads[0], start, end) if start < end else None


class RelroCache:
    """RELRO ranges per mapped file (one read of the program headers per file, ever).

    Keyed by the file's identity, not by its build-id: any user can map a copy with the same
    build-id whose RELRO range says "relocated" from the start."""

    def __init__(self) -> None:
        self._ranges: dict[tuple[str, int, int, int, int, int], Relro | None] = {}

    def get(self, build_id: str, opener: Path) -> Relro | None:
        """OPENER's RELRO range; None when it cannot be watched or the file is gone."""
        try:
            stat = os.stat(opener)
        except OSError:
            return None
        key = (build_id, stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        if key not in self._ranges:
            self._ranges[key] = read_relro(opener)
        return self._ranges[key]


@dataclass
class MappedFile:
    """One ELF file a process maps: all its mappings, and a path that opens that very file."""

    build_id: str
    mappings: list[Mapping]
    opener: Path


def mapped_files(pid: int, maps: list[Mapping], build_ids: BuildIdCache) -> list[MappedFile]:
    """The ELF files PID maps, each with all its mappings (grouped by device and inode)."""
    grouped: dict[tuple[str, int], list[Mapping]] = {}
    for mapping in maps:
        is_file = mapping.inode and mapping.path.startswith("/")
        if is_file and not mapping.path.startswith("/memfd:"):
            grouped.setdefault((mapping.dev, mapping.inode), []).append(mapping)
    files = []
    for group in grouped.values():
        first = min(group, key=lambda m: m.start)
        if first.offset != 0:
            continue
        build_id = build_id_of(build_ids, pid, first)
        if build_id is not None:
            files.append(MappedFile(build_id, group, map_file_path(pid, first)))
    return files


def relocated(file: MappedFile, relro: Relro | None) -> bool | None:
    """True once ld.so has protected FILE's RELRO range; None when that cannot be observed."""
    if relro is None:
        return None
    base = min(m.start for m in file.mappings) - relro.first_load
    start, end = base + relro.start, base + relro.end
    covering = [m for m in file.mappings if m.start < end and m.end > start]
    if not covering or min(m.start for m in covering) > start or max(m.end for m in covering) < end:
        return False  # not all mapped yet
    return all("w" not in m.perms for m in covering)


def executable_path(pid: int) -> str:
    """PID's executable path (may end in " (deleted)"; its owner chose it); "" if unreadable."""
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


@dataclass
class Followed:
    """A process followed since its exec."""

    pid: int
    start: int
    """Its start time: with the pid, a name that survives pid reuse."""
    seen_at: float
    next_check: float
    delay: float = FIRST_DELAY


class NewProcessQueue:
    """Processes seen exec'ing, each checked again with a growing delay until it is decided."""

    def __init__(self) -> None:
        self._followed: dict[int, Followed] = {}

    def add(self, pid: int, now: float) -> None:
        """Follow PID from NOW (its start time kept against pid reuse); a gone PID is ignored."""
        try:
            start = start_time(pid)
        except (OSError, IndexError, ValueError):
            return  # already gone
        self._followed[pid] = Followed(pid, start, now, now)

    def due(self, now: float) -> list[Followed]:
        """The processes whose next check has come; the caller ``later``s or ``drop``s each."""
        return [f for f in self._followed.values() if f.next_check <= now]

    def later(self, followed: Followed, now: float) -> None:
        """Check FOLLOWED again after a growing delay, or drop it once its window is over."""
        if now - followed.seen_at > WATCH_SECONDS:
            self.drop(followed)
            return
        followed.next_check = now + followed.delay
        followed.delay = min(MAX_DELAY, followed.delay * 2)

    def drop(self, followed: Followed) -> None:
        self._followed.pop(followed.pid, None)

    def next_deadline(self) -> float | None:
        """The monotonic time of the next check due; None when nothing is followed."""
        return min((f.next_check for f in self._followed.values()), default=None)

    def __len__(self) -> int:
        return len(self._followed)


def process_age(pid: int) -> float:
    """Seconds since PID started (0 when it is gone)."""
    try:
        started = start_time(pid) / os.sysconf("SC_CLK_TCK")
        with open("/proc/uptime") as handle:
            return float(handle.read().split()[0]) - started
    except (OSError, IndexError, ValueError):
        return 0.0


def still_starting(pid: int, build_id: str, build_ids: BuildIdCache, relro: RelroCache) -> bool:
    """True while ld.so may still be relocating PID's copy of BUILD_ID (or its program).

    Without an observable RELRO range, a process younger than RESCAN_MIN_AGE
    counts as starting."""
    maps = readable_maps(pid)
    if maps is None:
        return False  # gone: the engine reports it
    files = mapped_files(pid, maps, build_ids)
    program = executable_path(pid).removesuffix(" (deleted)")
    states = [
        relocated(f, relro.get(f.build_id, f.opener))
        for f in files
        if f.build_id == build_id or f.mappings[0].path.removesuffix(" (deleted)") == program
    ]
    if False in states:
        return True
    return None in states and process_age(pid) < RESCAN_MIN_AGE


def readable_maps(pid: int) -> list[Mapping] | None:
    """PID's memory map, or None when it cannot be read or parsed."""
    try:
        return read_maps(pid)
    except (OSError, ValueError):
        return None  # exited meanwhile, or a kernel thread


def all_process_maps(skip: set[int]) -> Iterator[tuple[int, list[Mapping]]]:
    """Every process but SKIP (and this one) with its memory map, one pass over /proc."""
    skip = skip | {os.getpid()}
    for pid in list_pids():
        if pid not in skip:
            maps = readable_maps(pid)
            if maps:
                yield pid, maps

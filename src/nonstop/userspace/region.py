"""Patch memory in the target: a memfd named after target and level, with a header inside.

``/proc/PID/maps`` itself shows what is applied::

    7f3a1c000000-7f3a1c002000 r-xp 00000000 00:01 1234  /memfd:nonstop:<build-id>:L2 (deleted)

and the first bytes of the mapping hold the header, so the state is read from
the process, never only from files of the agent::

    0   magic  b"NSTPHDR2"
    8   state  u64 (PREPARED, ACTIVE, RETIRED): how far the move that brought it got
    16  commit u64: the flag every dispatch stub of this level tests (dispatch.py); one
                aligned write of it switches all functions of the level at once
    24  length u32 of the JSON document that follows
    28  reserved
    32  JSON: level, build-id, soname and path of the target, bundle facts (info),
        code range, sites (entry, patch address, size, original bytes, replacement,
        offsets of new code, stub, trampoline and slot); checked by header.py

The header is R-X like the code after it: only the patcher writes it, through
/proc/PID/mem.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from enum import IntEnum
from functools import cached_property
from typing import Any

from nonstop.userspace.errors import EngineError, ProcessGoneError, RefusedError
from nonstop.userspace.header import MAX_JSON, well_formed
from nonstop.userspace.inject import (
    DATA,
    SYS_CLOSE,
    SYS_MEMFD_CREATE,
    SYS_MMAP,
    SYS_MPROTECT,
    SYS_MUNMAP,
    Injector,
)
from nonstop.userspace.memfd import check_fresh_memfd, take_fd, write_all
from nonstop.userspace.memory import ProcessMemory
from nonstop.userspace.procfs import Mapping, read_maps
from nonstop.userspace.sites import jump_bytes

MAGIC = b"NSTPHDR2"
MAGIC_FAMILY = b"NSTPHDR"
STATE_OFFSET, COMMIT_OFFSET, JSON_OFFSET = 8, 16, 32
NAME_PREFIX = "nonstop:"
MAPS_PREFIX = "/memfd:" + NAME_PREFIX
PAGE = 4096
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
MAP_PRIVATE, MAP_FIXED_NOREPLACE = 0x02, 0x100000
MFD_CLOEXEC = 1
EEXIST = 17
MAX_LEAKED = 64
SWAPPED = (
    "the patch memory fd was replaced by another file inside the target before it was "
    "mapped: nothing of the patch was left there"
)
MAX_REGIONS = 64
"""Patch memories read per process: a few levels of a few libraries in practice."""


class State(IntEnum):
    """The header's state field: how far the move that brought the region got."""

    PREPARED = 1
    """Mapped and filled; its move has not finished (the commit flag says if it committed)."""
    ACTIVE = 2
    """Its move finished; it runs while its commit flag is 1 (0: a revert committed)."""
    RETIRED = 3
    """Nothing refers to it any more; waiting to be unmapped."""


def memfd_name(build_id: str, level: int) -> str:
    """The memfd name of LEVEL for BUILD_ID (maps shows "/memfd:NAME (deleted)")."""
    return f"{NAME_PREFIX}{build_id}:L{level}"


@dataclass(frozen=True)
class SiteRecord:
    """One entry site of a level; offsets are from the start of the region."""

    function: str
    entry: int
    patch_address: int
    size: int
    """Of the function."""
    original: bytes
    replacement: str | None
    """None: a function an earlier level replaced and this one does not (a pass-through: its
    stub leads to the original code, and after the commit its entry gets its bytes back)."""
    new: int
    stub: int
    trampoline: int
    slot: int

    @property
    def passthrough(self) -> bool:
        return self.replacement is None


@dataclass
class Region:
    """One level of patch memory in one process, as read back from the process: DOCUMENT
    passed :func:`header.well_formed` for END - START bytes; STATE and COMMITTED are as read,
    or as this patcher last wrote them."""

    start: int
    end: int
    state: State
    committed: bool
    document: dict[str, Any]

    @property
    def level(self) -> int:
        return int(self.document["level"])

    @property
    def build_id(self) -> str:
        return str(self.document["build_id"])

    @property
    def code_range(self) -> tuple[int, int]:
        """Process addresses [low, high) of the level's code: the R-X part after the header
        (dispatch stubs, trampolines, slots, patch code and its constants)."""
        low, high = self.document["code"]
        return self.start + int(low), self.start + int(high)

    @property
    def flag_address(self) -> int:
        """Process address of the commit flag (an aligned u64 in the header)."""
        return self.start + COMMIT_OFFSET

    @cached_property
    def sites(self) -> list[SiteRecord]:
        """The header's sites; their offsets stay relative to START."""
        return [
            SiteRecord(
                function=item["function"],
                entry=item["entry"],
                patch_address=item["patch_address"],
                size=item["size"],
                original=bytes.fromhex(item["original"]),
                replacement=item["replacement"],
                new=item["new"],
                stub=item["stub"],
                trampoline=item["trampoline"],
                slot=item["slot"],
            )
            for item in self.document["sites"]
        ]

    @property
    def functions(self) -> list[str]:
        """The functions this level replaces."""
        return [site.function for site in self.sites if not site.passthrough]

    def jump_for(self, site: SiteRecord) -> bytes:
        """The entry jump of SITE into this level (to its dispatch stub)."""
        return jump_bytes(site.patch_address, self.start + site.stub)

    def contains(self, address: int) -> bool:
        return self.start <= address < self.end


def running(regions: list[Region]) -> Region | None:
    """The region whose code runs, as the commit flags say (None: the original code).

    A committed PREPARED region is a move cut short after its commit: it is newer than a
    committed ACTIVE one (whose state becomes RETIRED only after that commit)."""
    live = [r for r in regions if r.committed and r.state != State.RETIRED]
    return max(live, key=lambda r: (r.state == State.PREPARED, r.level), default=None)


def encode_header(document: dict[str, Any]) -> bytes:
    """A PREPARED, uncommitted header for DOCUMENT."""
    body = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return MAGIC + struct.pack("<QQII", State.PREPARED, 0, len(body), 0) + body


def header_size_for(document: dict[str, Any]) -> int:
    """Bytes the header of DOCUMENT takes, rounded up to 64."""
    return (len(encode_header(document)) + 63) // 64 * 64


@dataclass(frozen=True)
class Foreign:
    """A mapping named like nonstop patch memory whose header this engine did not write (or
    did not read): never trusted, never written, never unmapped."""

    start: int
    end: int
    other_format: bytes | None = None
    """The header version, when it is another version of nonstop's header."""
    unread: bool = False
    """Beyond the MAX_REGIONS patch memories read per process."""

    @property
    def reason(self) -> str:
        if self.other_format is not None:
            return f"header format {self.other_format!r}, which this engine does not know"
        if self.unread:
            return f"more than {MAX_REGIONS} patch memories in one process: not read"
        return "no well-formed nonstop header"


def scan_regions(
    pid: int, memory: ProcessMemory, maps: list[Mapping] | None = None
) -> tuple[list[Region], list[Foreign]]:
    """Every mapping of PID named like patch memory: the regions (lowest address first) and the
    foreign ones. At most MAX_REGIONS headers are read (each up to MAX_JSON bytes)."""
    grouped: dict[int, list[Mapping]] = {}
    for mapping in maps if maps is not None else read_maps(pid):
        if mapping.path.startswith(MAPS_PREFIX):
            grouped.setdefault(mapping.inode, []).append(mapping)
    spans = sorted((min(m.start for m in g), max(m.end for m in g)) for g in grouped.values())
    regions: list[Region] = []
    foreign = [Foreign(start, end, unread=True) for start, end in spans[MAX_REGIONS:]]
    for start, end in spans[:MAX_REGIONS]:
        found = read_region(memory, start, end)
        if isinstance(found, Region):
            regions.append(found)
        else:
            foreign.append(found)
    return regions, sorted(foreign, key=lambda f: f.start)


def find_regions(
    pid: int, memory: ProcessMemory, maps: list[Mapping] | None = None
) -> list[Region]:
    """Every nonstop patch memory in PID with a well-formed header, lowest address first.

    RefusedError when one has a header of another nonstop version: this engine must not
    change a process another version's patch runs in."""
    regions, foreign = scan_regions(pid, memory, maps)
    for each in foreign:
        if each.other_format is not None:
            raise RefusedError(
                f"patch memory at {each.start:#x} has {each.reason}: use the engine that applied it"
            )
    return regions


def read_region(memory: ProcessMemory, start: int, end: int) -> Region | Foreign:
    """The region at START, or Foreign when its header is missing, damaged or forged."""
    try:
        head = memory.read(start, JSON_OFFSET)
        if head[:8] != MAGIC:
            return Foreign(start, end, head[7:8] if head[:7] == MAGIC_FAMILY else None)
        state, commit, length, _ = struct.unpack_from("<QQII", head, STATE_OFFSET)
        if length > min(end - start - JSON_OFFSET, MAX_JSON) or commit not in (0, 1):
            return Foreign(start, end)
        document = json.loads(memory.read(start + JSON_OFFSET, length))
        if not well_formed(document, end - start):
            return Foreign(start, end)
        return Region(start, end, State(state), bool(commit), document)
    except (OSError, ValueError, RecursionError, ProcessGoneError):
        return Foreign(start, end)


def set_state(memory: ProcessMemory, region: Region, state: State) -> None:
    """Write STATE into REGION's header in the process (one aligned u64), and into REGION."""
    memory.write(region.start + STATE_OFFSET, struct.pack("<Q", state))
    region.state = state


def commit_bytes(on: bool) -> bytes:
    """The one aligned 8-byte write of a commit flag."""
    return struct.pack("<Q", int(on))


def leaked_memfds(pid: int) -> list[int]:
    """File descriptors of nonstop memfds left open in PID by a patcher that died (at most
    MAX_LEAKED: closing them is tidying, and the fd table is the target's to fill)."""
    found: list[int] = []
    try:
        entries = os.scandir(f"/proc/{pid}/fd")
    except OSError:
        return found
    with entries:
        for entry in entries:
            try:
                link = os.readlink(entry.path)
            except OSError:
                continue
            if link.startswith(MAPS_PREFIX) and entry.name.isdigit():
                found.append(int(entry.name))
                if len(found) == MAX_LEAKED:
                    break
    return found


def create_region(
    injector: Injector,
    pid: int,
    address: int,
    name: str,
    rx: bytes,
    rw: bytes,
) -> None:
    """Create the memfd in the target, fill it from here, and map it at ADDRESS.

    The memfd is written only through a duplicate of the target's open file that was
    proven to be the fresh memfd (memfd.py), and the mapping is checked to be that very
    file, so whatever a thread of the target does to its fd table, root writes nothing
    else. Raises FileExistsError when ADDRESS is taken (the caller picks another),
    RefusedError when the target swapped the file.
    """
    fd = injector.call(
        SYS_MEMFD_CREATE, DATA, MFD_CLOEXEC, data=name.encode() + b"\0", what="memfd_create"
    )
    size = len(rx) + len(rw)
    try:
        taken = take_fd(pid, fd)
        try:
            created = check_fresh_memfd(taken, name)
            write_all(taken, rx + rw)
        finally:
            os.close(taken)
        result = injector.syscall(
            SYS_MMAP, address, size, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_FIXED_NOREPLACE, fd, 0
        )
        if result == -EEXIST:
            raise FileExistsError(address)
        if result != address:
            if result > 0:
                injector.syscall(SYS_MUNMAP, result, size)
            if not _holds(pid, fd, created):
                raise RefusedError(SWAPPED)
            raise EngineError(f"mmap of patch memory failed in the target (result {result})")
        if not _maps_file(pid, address, size, created, name):
            injector.syscall(SYS_MUNMAP, address, size)
            raise RefusedError(SWAPPED)
        if rw:
            injector.call(
                SYS_MPROTECT, address + len(rx), len(rw), PROT_READ | PROT_WRITE, what="mprotect"
            )
    finally:
        injector.syscall(SYS_CLOSE, fd)


def _holds(pid: int, fd: int, file: os.stat_result) -> bool:
    """PID still holds FILE as FD."""
    try:
        taken = take_fd(pid, fd)
    except EngineError:
        return False
    try:
        now = os.fstat(taken)
    finally:
        os.close(taken)
    return (now.st_dev, now.st_ino) == (file.st_dev, file.st_ino)


def _maps_file(pid: int, address: int, size: int, file: os.stat_result, name: str) -> bool:
    """PID maps exactly [ADDRESS, ADDRESS+SIZE) from FILE (the memfd NAME that was filled)."""
    device = f"{os.major(file.st_dev):02x}:{os.minor(file.st_dev):02x}"
    covering = [m for m in read_maps(pid) if m.start < address + size and m.end > address]
    return (
        bool(covering)
        and min(m.start for m in covering) == address
        and max(m.end for m in covering) >= address + size
        and all(
            m.inode == file.st_ino and m.dev == device and m.path == f"/memfd:{name} (deleted)"
            for m in covering
        )
    )


def unmap_region(injector: Injector, region: Region) -> None:
    """munmap REGION in the target (EngineError when that fails). The caller must know that
    no thread executes in it or may return into it."""
    injector.call(SYS_MUNMAP, region.start, region.end - region.start, what="munmap")


def close_fds(injector: Injector, fds: list[int]) -> None:
    """close() FDS in the target; errors are ignored (tidying only)."""
    for fd in fds:
        injector.syscall(SYS_CLOSE, fd)

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
    32  JSON: level, target, sites (entry, patch address, original bytes, offsets of
        stub, trampoline, slot and new code), fixes, ...

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

from nonstop.userspace.errors import EngineError, RefusedError
from nonstop.userspace.inject import (
    DATA,
    SYS_CLOSE,
    SYS_MEMFD_CREATE,
    SYS_MMAP,
    SYS_MPROTECT,
    SYS_MUNMAP,
    Injector,
)
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


class State(IntEnum):
    PREPARED = 1
    """Mapped and filled; its move has not finished (the commit flag says if it committed)."""
    ACTIVE = 2
    """Its move finished; it runs while its commit flag is 1 (0: a revert committed)."""
    RETIRED = 3
    """Nothing refers to it any more; waiting to be unmapped."""


def memfd_name(build_id: str, level: int) -> str:
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
    """One level of patch memory in one process, as read back from the process."""

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
        low, high = self.document["code"]
        return self.start + int(low), self.start + int(high)

    @property
    def flag_address(self) -> int:
        return self.start + COMMIT_OFFSET

    @cached_property
    def sites(self) -> list[SiteRecord]:
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
    return (len(encode_header(document)) + 63) // 64 * 64


def find_regions(
    pid: int, memory: ProcessMemory, maps: list[Mapping] | None = None
) -> list[Region]:
    """Every nonstop patch memory in PID with a readable header, lowest address first."""
    grouped: dict[int, list[Mapping]] = {}
    for mapping in maps if maps is not None else read_maps(pid):
        if mapping.path.startswith(MAPS_PREFIX):
            grouped.setdefault(mapping.inode, []).append(mapping)
    regions = []
    for group in grouped.values():
        start = min(m.start for m in group)
        end = max(m.end for m in group)
        region = read_region(memory, start, end)
        if region is not None:
            regions.append(region)
    return sorted(regions, key=lambda r: r.start)


def unreadable_regions(pid: int, memory: ProcessMemory) -> list[tuple[int, int]]:
    """nonstop mappings whose header is missing or damaged (a patcher died while creating them)."""
    found = []
    grouped: dict[int, list[Mapping]] = {}
    for mapping in read_maps(pid):
        if mapping.path.startswith(MAPS_PREFIX):
            grouped.setdefault(mapping.inode, []).append(mapping)
    for group in grouped.values():
        start, end = min(m.start for m in group), max(m.end for m in group)
        if read_region(memory, start, end) is None:
            found.append((start, end))
    return found


def read_region(memory: ProcessMemory, start: int, end: int) -> Region | None:
    """The region at START, or None when its header is missing or damaged."""
    try:
        head = memory.read(start, JSON_OFFSET)
        if head[:8] != MAGIC:
            if head[:7] == MAGIC_FAMILY:
                raise RefusedError(
                    f"patch memory at {start:#x} has header format {head[7:8]!r}, which this "
                    "engine does not know: use the engine that applied it"
                )
            return None
        state, commit, length, _ = struct.unpack_from("<QQII", head, STATE_OFFSET)
        if length > end - start - JSON_OFFSET:
            return None
        document = json.loads(memory.read(start + JSON_OFFSET, length))
        return Region(start, end, State(state), bool(commit), document)
    except (OSError, ValueError, KeyError):
        return None


def set_state(memory: ProcessMemory, region: Region, state: State) -> None:
    memory.write(region.start + STATE_OFFSET, struct.pack("<Q", state))
    region.state = state


def commit_bytes(on: bool) -> bytes:
    """The one aligned 8-byte write of a commit flag."""
    return struct.pack("<Q", int(on))


def leaked_memfds(pid: int) -> list[int]:
    """File descriptors of nonstop memfds left open in PID by a patcher that died."""
    found: list[int] = []
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for name in names:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if link.startswith(MAPS_PREFIX):
            found.append(int(name))
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

    Raises FileExistsError when ADDRESS is taken (the caller picks another).
    """
    fd = injector.call(
        SYS_MEMFD_CREATE, DATA, MFD_CLOEXEC, data=name.encode() + b"\0", what="memfd_create"
    )
    try:
        with open(f"/proc/{pid}/fd/{fd}", "r+b", buffering=0) as handle:
            handle.truncate(len(rx) + len(rw))
            handle.write(rx)
            handle.write(rw)
        result = injector.syscall(
            SYS_MMAP,
            address,
            len(rx) + len(rw),
            PROT_READ | PROT_EXEC,
            MAP_PRIVATE | MAP_FIXED_NOREPLACE,
            fd,
            0,
        )
        if result == -EEXIST:
            raise FileExistsError(address)
        if result != address:
            if result > 0:
                injector.syscall(SYS_MUNMAP, result, len(rx) + len(rw))
            raise EngineError(f"mmap of patch memory failed in the target (result {result})")
        if rw:
            injector.call(
                SYS_MPROTECT, address + len(rx), len(rw), PROT_READ | PROT_WRITE, what="mprotect"
            )
    finally:
        injector.syscall(SYS_CLOSE, fd)


def unmap_region(injector: Injector, region: Region) -> None:
    injector.call(SYS_MUNMAP, region.start, region.end - region.start, what="munmap")


def close_fds(injector: Injector, fds: list[int]) -> None:
    for fd in fds:
        injector.syscall(SYS_CLOSE, fd)

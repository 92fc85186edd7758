"""Patch memory in the target: a memfd named after target and level, with a header inside.

``/proc/PID/maps`` itself shows what is applied::

    7f3a1c000000-7f3a1c002000 r-xp 00000000 00:01 1234  /memfd:nonstop:<build-id>:L2 (deleted)

and the first bytes of the mapping hold the header, so the state is read from
the process, never only from files of the agent::

    0   magic  b"NSTPHDR1"
    8   state  u64 (PREPARED, ACTIVE, REVERTING, RETIRED): one aligned 8-byte write changes it
    16  length u32 of the JSON document that follows
    24  JSON: level, target, functions with entry, patch address, original bytes, fixes, ...
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from nonstop.userspace.errors import EngineError
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

MAGIC = b"NSTPHDR1"
NAME_PREFIX = "nonstop:"
MAPS_PREFIX = "/memfd:" + NAME_PREFIX
PAGE = 4096
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
MAP_PRIVATE, MAP_FIXED_NOREPLACE = 0x02, 0x100000
MFD_CLOEXEC = 1
EEXIST = 17


class State(IntEnum):
    PREPARED = 1
    """Mapped and filled; entries may or may not point here yet (a switch may be half-done)."""
    ACTIVE = 2
    REVERTING = 3
    RETIRED = 4
    """No entry points here any more; waiting to be unmapped."""


def memfd_name(build_id: str, level: int) -> str:
    return f"{NAME_PREFIX}{build_id}:L{level}"


@dataclass(frozen=True)
class SiteRecord:
    function: str
    entry: int
    patch_address: int
    original: bytes
    replacement: str
    replacement_offset: int


@dataclass
class Region:
    """One level of patch memory in one process, as read back from the process."""

    start: int
    end: int
    state: State
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
    def sites(self) -> list[SiteRecord]:
        return [
            SiteRecord(
                function=item["function"],
                entry=item["entry"],
                patch_address=item["patch_address"],
                original=bytes.fromhex(item["original"]),
                replacement=item["replacement"],
                replacement_offset=item["replacement_offset"],
            )
            for item in self.document["sites"]
        ]

    def jump_for(self, site: SiteRecord) -> bytes:
        return jump_bytes(site.patch_address, self.start + site.replacement_offset)

    def contains(self, address: int) -> bool:
        return self.start <= address < self.end


def encode_header(state: State, document: dict[str, Any]) -> bytes:
    body = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return MAGIC + struct.pack("<QII", state, len(body), 0) + body


def header_size_for(document: dict[str, Any]) -> int:
    return (len(encode_header(State.PREPARED, document)) + 63) // 64 * 64


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
    try:
        head = memory.read(start, 24)
        if head[:8] != MAGIC:
            return None
        state, length, _ = struct.unpack_from("<QII", head, 8)
        if length > end - start - 24:
            return None
        document = json.loads(memory.read(start + 24, length))
        return Region(start, end, State(state), document)
    except (OSError, ValueError, KeyError):
        return None


def set_state(memory: ProcessMemory, region: Region, state: State) -> None:
    memory.write(region.start + 8, struct.pack("<Q", state))
    region.state = state


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

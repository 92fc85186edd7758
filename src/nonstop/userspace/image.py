"""The link model of one running process: its loaded ELF modules, bases and search order."""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from nonstop.userspace.elfmodel import ElfModel, FileKey, ModelCache, read_build_id
from nonstop.userspace.errors import RefusedError
from nonstop.userspace.memory import ProcessMemory
from nonstop.userspace.procfs import Mapping, map_file_path, read_maps

DT_NULL = 0
DT_DEBUG = 21


def open_regular(path: Path) -> BinaryIO:
    """Open PATH for reading only if it is a regular file.

    Another user's process can map a device file; opening one as root can have
    effects of its own, so the file is looked at through an O_PATH descriptor
    (which opens nothing) and opened for reading only once known to be regular.
    """
    located = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        seen = os.fstat(located)
        if not stat.S_ISREG(seen.st_mode):
            raise RefusedError(f"{path} is not a regular file")
        handle = open(f"/proc/self/fd/{located}", "rb")  # noqa: SIM115  # the caller closes it
    finally:
        os.close(located)
    opened = os.fstat(handle.fileno())
    if (opened.st_dev, opened.st_ino) != (seen.st_dev, seen.st_ino):
        handle.close()
        raise RefusedError(f"{path} changed while it was opened")
    return handle


def open_mapped(path: Path, mapping: Mapping) -> BinaryIO:
    """Open the (regular) file behind MAPPING through PATH, and check it is the one mapped
    (same device and inode as /proc/PID/maps shows): the mapping may have been replaced."""
    handle = open_regular(path)
    status = os.fstat(handle.fileno())
    major, _, minor = mapping.dev.partition(":")
    if (os.major(status.st_dev), os.minor(status.st_dev), status.st_ino) != (
        int(major, 16),
        int(minor, 16),
        mapping.inode,
    ):
        handle.close()
        raise RefusedError(f"{path} is no longer the file mapped at {mapping.start:#x}")
    return handle


@dataclass
class LoadedModule:
    """One ELF file mapped in one process, as /proc/PID/maps showed it: BASE is the start of
    its offset-0 mapping (load base), BUILD_ID what the file held when first read this run.
    KEY and MODEL are read on first use, from the very file mapped."""

    path: str
    """The path /proc/PID/maps shows (may end in ' (deleted)')."""
    file: Path
    """Opens the very file mapped (through /proc/PID/map_files)."""
    base: int
    build_id: str
    mappings: list[Mapping]
    _cache: ModelCache = field(repr=False)
    _model: ElfModel | None = field(default=None, repr=False)
    _key: FileKey | None = field(default=None, repr=False)

    def open(self) -> BinaryIO:
        """A new handle on the mapped file (RefusedError when it is no longer the file mapped,
        or not a regular file); the caller closes it."""
        return open_mapped(self.file, self.mappings[0])

    @property
    def key(self) -> FileKey:
        """What the mapped file holds (its SHA-256, and whether only root can change it)."""
        if self._key is None:
            with self.open() as handle:
                self._key = self._cache.key(handle)
        return self._key

    @property
    def model(self) -> ElfModel:
        """The model of the very file mapped here, never one read from another file."""
        if self._model is None:
            with self.open() as handle:
                self._key = self._key or self._cache.key(handle)
                self._model = self._cache.get(self.build_id, handle, self._key)
        return self._model

    def read_file(self, vaddr: int, size: int) -> bytes:
        """Bytes of the file (not of memory) at module address VADDR."""
        with self.open() as handle:
            handle.seek(self.model.file_offset(vaddr))
            return handle.read(size)

    def read_mapped_file(self, address: int, size: int) -> bytes:
        """What the file holds for process address ADDRESS, by the mapping that covers it
        (RefusedError when none of this module's mappings does)."""
        mapping = next((m for m in self.mappings if m.contains(address)), None)
        if mapping is None:
            raise RefusedError(f"{address:#x} is not in a mapping of {self.path}")
        with self.open() as handle:
            handle.seek(mapping.offset + address - mapping.start)
            return handle.read(size).ljust(size, b"\0")


class BuildIdCache:
    """Build-ids of mapped files by (device, inode), shared across the processes of one run."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, int], str | None] = {}

    def get(self, pid: int, mapping: Mapping) -> str | None:
        """The build-id of the file behind MAPPING of PID (None: it has none). Remembered per
        (device, inode) for the run, so a file rewritten in place keeps its first answer: the
        model of the file is checked against it again (:meth:`ModelCache.get`). A hostile file
        can make this raise anything: scans use :func:`build_id_of`."""
        key = (mapping.dev, mapping.inode)
        if key not in self._ids:
            try:
                with open_mapped(map_file_path(pid, mapping), mapping) as handle:
                    self._ids[key] = read_build_id(handle)
            except (OSError, RefusedError):
                return None  # not readable now, or remapped meanwhile: do not remember it
        return self._ids[key]


def build_id_of(build_ids: BuildIdCache, pid: int, mapping: Mapping) -> str | None:
    """The build-id of the file behind MAPPING; None when it has none or cannot be read.

    The file is whatever the process chose to map: reading it may fail in any way
    (a parser's AssertionError, OverflowError on a huge offset, ...), and such a file is
    simply not a target, like an unreadable one."""
    try:
        return build_ids.get(pid, mapping)
    except Exception:  # one hostile file never stops the scan of the others
        return None


def _is_file(mapping: Mapping) -> bool:
    return (
        mapping.inode != 0
        and mapping.path.startswith("/")
        and not mapping.path.startswith("/memfd:")
    )


class ProcessImage:
    """The ELF modules mapped in PID (files mapped from offset 0 that have a build-id), as
    /proc/PID/maps showed them when the image was made; :meth:`search_order` gives the dynamic
    linker's global search order."""

    def __init__(self, pid: int, models: ModelCache, build_ids: BuildIdCache | None = None) -> None:
        self.pid = pid
        self.maps = read_maps(pid)
        self._models = models
        ids = build_ids or BuildIdCache()
        grouped: dict[tuple[str, int], list[Mapping]] = {}
        for mapping in self.maps:
            if _is_file(mapping):
                grouped.setdefault((mapping.dev, mapping.inode), []).append(mapping)
        self.modules: list[LoadedModule] = []
        for group in grouped.values():
            first = min(group, key=lambda m: m.start)
            if first.offset != 0:
                continue
            build_id = build_id_of(ids, pid, first)
            if build_id is None:
                continue
            self.modules.append(
                LoadedModule(
                    path=first.path,
                    file=map_file_path(pid, first),
                    base=first.start,
                    build_id=build_id,
                    mappings=sorted(group, key=lambda m: m.start),
                    _cache=models,
                )
            )

    def with_build_id(self, build_id: str) -> list[LoadedModule]:
        return [module for module in self.modules if module.build_id == build_id]

    def module_at(self, address: int) -> LoadedModule | None:
        for module in self.modules:
            if any(m.contains(address) for m in module.mappings):
                return module
        return None

    def search_order(self, memory: ProcessMemory) -> list[LoadedModule]:
        """Executable first, then libraries in link-map order, as ld.so searches them."""
        exe = self._executable()
        order = self._link_map_order(memory, exe) if exe else []
        if not order:
            order = ([exe] if exe else []) + [m for m in self.modules if m is not exe]
        return order

    def _executable(self) -> LoadedModule | None:
        try:
            exe_path = Path(f"/proc/{self.pid}/exe").resolve()
        except OSError:
            return None
        for module in self.modules:
            if module.path.removesuffix(" (deleted)") == str(exe_path):
                return module
        return None

    def _link_map_order(self, memory: ProcessMemory, exe: LoadedModule) -> list[LoadedModule]:
        """Walk r_debug.r_map of the executable (DT_DEBUG); empty if it cannot be read."""
        try:
            if exe.model.dynamic is None:
                return []
            address = exe.base + exe.model.dynamic
            r_debug = 0
            for _ in range(256):
                tag, value = struct.unpack("<qQ", memory.read(address, 16))
                if tag == DT_NULL:
                    break
                if tag == DT_DEBUG:
                    r_debug = value
                address += 16
            if not r_debug:
                return []
            link = memory.read_u64(r_debug + 8)
            order: list[LoadedModule] = []
            for _ in range(4096):
                if not link:
                    break
                l_ld, l_next = struct.unpack("<QQ", memory.read(link + 16, 16))
                module = self.module_at(l_ld)
                if module is not None and module not in order:
                    order.append(module)
                link = l_next
            if exe in order:
                order.remove(exe)
            return [exe, *order]
        except (OSError, ValueError):
            return []

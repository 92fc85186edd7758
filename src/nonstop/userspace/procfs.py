"""Readers for /proc: memory maps, threads, thread status. Nothing here stops a process."""

from __future__ import annotations

import os
from bisect import bisect_right
from pathlib import Path
from typing import NamedTuple

PROC = Path("/proc")


class Mapping(NamedTuple):
    """One line of /proc/PID/maps. (A tuple: maps are read often, inside patch runs.)"""

    start: int
    end: int
    perms: str
    offset: int
    dev: str
    inode: int
    path: str

    @property
    def executable(self) -> bool:
        return "x" in self.perms

    @property
    def map_files_name(self) -> str:
        """Its entry name in /proc/PID/map_files ("start-end", lowercase hex, no 0x)."""
        return f"{self.start:x}-{self.end:x}"

    def contains(self, address: int) -> bool:
        return self.start <= address < self.end


def read_maps(pid: int) -> list[Mapping]:
    """The memory map of PID (FileNotFoundError/ProcessLookupError when it is gone)."""
    with open(PROC / str(pid) / "maps", "rb") as handle:
        text = handle.read().decode("utf-8", "surrogateescape")
    mappings = []
    for line in text.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 5:
            continue
        start, _, end = parts[0].partition("-")
        mappings.append(
            Mapping(
                start=int(start, 16),
                end=int(end, 16),
                perms=parts[1],
                offset=int(parts[2], 16),
                dev=parts[3],
                inode=int(parts[4]),
                path=parts[5] if len(parts) > 5 else "",
            )
        )
    return mappings


class MapIndex:
    """The mappings of one read of /proc/PID/maps, looked up by address (bisect)."""

    def __init__(self, maps: list[Mapping]) -> None:
        self.maps = sorted(maps, key=lambda m: m.start)
        self._starts = [m.start for m in self.maps]

    def containing(self, address: int) -> Mapping | None:
        index = bisect_right(self._starts, address) - 1
        if index >= 0 and address < self.maps[index].end:
            return self.maps[index]
        return None


def list_pids() -> list[int]:
    """Every process in /proc now (kernel threads included, threads of a process not)."""
    return sorted(int(name) for name in os.listdir(PROC) if name.isdigit())


def list_tasks(pid: int) -> list[int]:
    """Thread ids of PID, sorted, as of this listing (FileNotFoundError when it is gone)."""
    return sorted(int(name) for name in os.listdir(PROC / str(pid) / "task"))


class ThreadCounter:
    """The number of live threads of PID, from one fstat of its open /proc/PID/task directory
    (procfs gives it 2 + the thread count as link count): cheaper than listing the threads."""

    def __init__(self, pid: int) -> None:
        self._fd = os.open(PROC / str(pid) / "task", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def count(self) -> int:
        try:
            return os.fstat(self._fd).st_nlink - 2
        except OSError:
            return -1  # the process is exiting: the caller lists its threads again

    def close(self) -> None:
        os.close(self._fd)


def task_status(pid: int, tid: int) -> dict[str, str]:
    """Fields of /proc/PID/task/TID/status (empty when the thread is gone)."""
    try:
        text = (PROC / str(pid) / "task" / str(tid) / "status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return {}
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def executable_of(pid: int) -> str:
    """Where /proc/PID/exe points ('' when unreadable), for reports: it may end in
    ' (deleted)', and the name is the process owner's choice."""
    try:
        return os.readlink(PROC / str(pid) / "exe")
    except OSError:
        return ""


def start_time(pid: int) -> int:
    """Start time in clock ticks: with the PID, a name for the process that survives PID reuse."""
    stat = (PROC / str(pid) / "stat").read_text()
    # The command name may hold spaces and parentheses: split after its closing one.
    return int(stat.rpartition(")")[2].split()[19])


PF_EXITING = 0x4
SIGKILL_BIT = 1 << 8


def is_alive(pid: int) -> bool:
    """True while PID exists and is not exiting (no zombie, no exit under way, no SIGKILL)."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rpartition(")")[2].split()
        status = (PROC / str(pid) / "status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    if fields[0] in ("Z", "X") or int(fields[6]) & PF_EXITING:
        return False
    for line in status.splitlines():
        if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & SIGKILL_BIT:
            return False
    return True


def map_file_path(pid: int, mapping: Mapping) -> Path:
    """A path that opens the very file behind MAPPING, even in another mount namespace or
    after the file was deleted by a package upgrade."""
    return PROC / str(pid) / "map_files" / mapping.map_files_name

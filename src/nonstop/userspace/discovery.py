"""Which processes to patch: found by the build-id of what they map, never by path.

Each file mapping is identified through /proc/PID/map_files, so a process in
another mount namespace, or one still mapping a library that a package
upgrade deleted, is found as well.
"""

from __future__ import annotations

import contextlib
import os

from nonstop.userspace.image import BuildIdCache
from nonstop.userspace.procfs import Mapping, list_pids, read_maps
from nonstop.userspace.region import MAPS_PREFIX


def build_id_of(build_ids: BuildIdCache, pid: int, mapping: Mapping) -> str | None:
    """The build-id of the file behind MAPPING; None when it has none or cannot be read.

    The file is whatever the process chose to map: reading it may fail in any way
    (a parser's AssertionError, OverflowError on a huge offset, ...), and such a file is
    simply not a target, like an unreadable one."""
    try:
        return build_ids.get(pid, mapping)
    except Exception:  # one hostile file never stops the scan of the others
        return None


def processes_mapping(build_id: str, build_ids: BuildIdCache) -> list[int]:
    """Every process (but this one) mapping a file whose build-id is BUILD_ID."""
    found = []
    for pid in list_pids():
        if pid == os.getpid():
            continue
        try:
            maps = read_maps(pid)
        except (OSError, ValueError):
            continue  # exited meanwhile, or a kernel thread
        for mapping in maps:
            is_file = mapping.offset == 0 and mapping.inode and mapping.path.startswith("/")
            if is_file and build_id_of(build_ids, pid, mapping) == build_id:
                found.append(pid)
                break
    return found


def processes_with_patches() -> list[int]:
    """Every process showing nonstop patch memory in its maps."""
    found = []
    for pid in list_pids():
        with contextlib.suppress(OSError):
            if any(m.path.startswith(MAPS_PREFIX) for m in read_maps(pid)):
                found.append(pid)
    return found

"""Which processes to patch: found by the build-id of what they map, never by path.

Each file mapping is identified through /proc/PID/map_files, so a process in
another mount namespace, or one still mapping a library that a package
upgrade deleted, is found as well.
"""

from __future__ import annotations

import contextlib
import os

from nonstop.userspace.image import BuildIdCache, build_id_of
from nonstop.userspace.procfs import list_pids, read_maps
from nonstop.userspace.region import MAPS_PREFIX


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

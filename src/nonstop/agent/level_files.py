"""The level files that scanners on the host read (OVAL): what is live-patched, in plain files.

Under ``<state_dir>/levels`` (``nonstop.cve.model.LEVEL_STATE_DIR`` by
default) the agent keeps ``lib-<build-id>`` for each library that some process
runs with a live patch, and ``kernel`` while a kernel level is loaded, each
holding one line ``level=N``: the level applied in every process that maps
the library (0 while one still runs it unpatched), or the kernel's loaded
level. The OVAL definitions nonstop exports test these files, so ``oscap`` on
the host tells a live-patched CVE from an open one without asking anyone.

They are rewritten from a fresh scan of the processes at each check-in and
after each change the agent makes, atomically, readable by all (scanners may
run unprivileged); files of libraries no process maps any more are removed.
Build-ids are hex by construction (``build_id_of``), so no file name comes
from another user.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from nonstop.cve.model import level_state_name

if TYPE_CHECKING:  # the kernel commands write the kernel file without the userspace modules
    from nonstop.agent.config import Blocklist
    from nonstop.agent.inventory import LibraryUse
    from nonstop.agent.kernel_levels import KernelManager
    from nonstop.userspace import Engine

_LIBRARY_FILE = re.compile(r"lib-[0-9a-f]{2,128}")


def level_dir(state_dir: Path) -> Path:
    """Where the level files of an agent with STATE_DIR live."""
    return state_dir / "levels"


def write_library_files(directory: Path, uses: Mapping[str, LibraryUse]) -> None:
    """Make DIRECTORY's library files say what USES (a fresh scan) say; best effort."""
    wanted = {
        level_state_name(use.build_id): use.applied_level or 0
        for use in uses.values()
        if any(level is not None for level in use.levels.values())
    }
    with contextlib.suppress(OSError):
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        for name, level in wanted.items():
            _write(directory / name, f"level={level}\n")
        for path in directory.iterdir():
            if _LIBRARY_FILE.fullmatch(path.name) and path.name not in wanted:
                path.unlink(missing_ok=True)


def write_kernel_file(directory: Path, level: int | None) -> None:
    """Make DIRECTORY's kernel file say LEVEL (None: no kernel level loaded); best effort."""
    path = directory / level_state_name(None)
    with contextlib.suppress(OSError):
        if level is None:
            path.unlink(missing_ok=True)
            return
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        _write(path, f"level={level}\n")


def refresh_library_files(state_dir: Path, engine: Engine, blocklist: Blocklist) -> None:
    """Scan the processes and rewrite the library files (after the agent changed levels)."""
    from nonstop.agent.inventory import libraries_in_use

    write_library_files(level_dir(state_dir), libraries_in_use(engine, blocklist))


def refresh_kernel_file(state_dir: Path, manager: KernelManager) -> None:
    """Rewrite the kernel file from the kernel's state (after the agent loaded or unloaded)."""
    current = manager.load_state().current
    loaded = current is not None and manager.loaded(current)
    write_kernel_file(level_dir(state_dir), current.level if loaded and current else None)


def _write(path: Path, text: str) -> None:
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(text)
    temporary.chmod(0o644)
    os.replace(temporary, path)

"""What a host reports at check-in: who it is, its kernel, and every library its processes map.

Libraries are found the way the engine finds targets: every ELF file mapped
by a running process (other than the process's own executable), identified by
its build-id through /proc/PID/map_files. Per build-id the report carries the
soname, a path, the owning dpkg or rpm package, how many processes map it and
the level applied to them, read from the processes themselves (lowest level;
none when any process still runs the unpatched code). Soname and package are
cached per build-id in the cache dir, because asking dpkg or rpm is slow and
the answer never changes for one build.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nonstop import __version__
from nonstop.agent.config import Blocklist
from nonstop.agent.host_info import Distro, detect_distro
from nonstop.agent.new_processes import all_process_maps
from nonstop.bundle import KernelTarget
from nonstop.userspace import Engine
from nonstop.userspace.elfmodel import root_sealed
from nonstop.userspace.image import BuildIdCache, build_id_of, open_regular
from nonstop.userspace.procfs import PROC, executable_of, map_file_path

MAX_LIBRARIES = 4096
"""The API's limit per check-in; past it the libraries mapped by fewest processes are left out."""
MAX_NAMED_PROCESSES = 32
"""The API's limit of unpatched processes named per library (the count is always whole)."""
_CONTROL = re.compile(r"[\x00-\x1f]")


@dataclass
class LibraryUse:
    """One library build-id as this host's processes map it, gathered by ``libraries_in_use``."""

    build_id: str
    path: str
    opener: Path
    """Opens the very file (through one process's map_files)."""
    same_namespace: bool
    """Mapped from this agent's mount namespace, so dpkg/rpm here know its path."""
    sealed: bool
    """The file is one only root can change, so what it says may be cached for its build-id."""
    pids: set[int] = field(default_factory=set)
    levels: dict[int, int | None] = field(default_factory=dict)
    """Applied level per process that may be patched (blocklisted processes left out)."""

    @property
    def deleted(self) -> bool:
        """The file was replaced on disk since it was mapped: its processes run an old copy."""
        return self.path.endswith(" (deleted)")

    @property
    def unpatched_pids(self) -> list[int]:
        """The patchable processes that run it without a live patch, lowest pid first."""
        return sorted(pid for pid, level in self.levels.items() if level is None)

    @property
    def partial_level(self) -> int | None:
        """While some processes run it unpatched: the lowest level the others run."""
        applied = [level for level in self.levels.values() if level is not None]
        if not applied or len(applied) == len(self.levels):
            return None
        return min(applied)

    @property
    def applied_level(self) -> int | None:
        """Lowest level of the patchable processes; None if one is unpatched or none qualifies."""
        values = list(self.levels.values())
        if not values or any(level is None for level in values):
            return None
        return min(level for level in values if level is not None)


def _mount_namespace(pid: int | str) -> str | None:
    try:
        return os.readlink(PROC / str(pid) / "ns" / "mnt")
    except OSError:
        return None


def _sealed(opener: Path) -> bool:
    try:
        return root_sealed(os.stat(opener))
    except OSError:
        return False


def libraries_in_use(
    engine: Engine, blocklist: Blocklist, build_ids: BuildIdCache | None = None
) -> dict[str, LibraryUse]:
    """Every mapped ELF library by build-id, with its processes and their applied levels."""
    ids = build_ids or engine.build_ids
    own_namespace = _mount_namespace("self")
    found: dict[str, LibraryUse] = {}
    for pid, maps in all_process_maps(set()):
        executable = executable_of(pid)
        namespace = _mount_namespace(pid)
        seen: set[str] = set()
        for mapping in maps:
            if mapping.offset != 0 or not mapping.inode or not mapping.path.startswith("/"):
                continue
            if mapping.path.removesuffix(" (deleted)") == executable:
                continue
            build_id = build_id_of(ids, pid, mapping)
            if build_id is None or build_id in seen:
                continue
            seen.add(build_id)
            use = found.get(build_id)
            if use is None or not use.sealed:
                # Any user can copy a build-id note: facts are read from a root-sealed file
                # with that build-id if a process maps one, whoever was met first.
                opener = map_file_path(pid, mapping)
                candidate = LibraryUse(
                    build_id, mapping.path, opener, namespace == own_namespace, _sealed(opener)
                )
                if use is None:
                    use = found[build_id] = candidate
                elif candidate.sealed:
                    use.path, use.opener = candidate.path, candidate.opener
                    use.same_namespace, use.sealed = candidate.same_namespace, True
            use.pids.add(pid)
            if not (executable and blocklist.blocks(executable)):
                use.levels[pid] = None
        if seen:
            for patch in engine.live_patches(pid):
                use_of = found.get(patch.region.build_id)
                if use_of is not None and pid in use_of.levels:
                    use_of.levels[pid] = patch.region.level
    return found


class LibraryFacts:
    """Soname and owning package per build-id, cached on disk (``inventory-libraries.json``).

    Only facts read from a root-sealed file are cached: another user's file with a copied
    build-id note is described for this run only, so it cannot name that build-id for good.
    """

    def __init__(self, cache_dir: Path) -> None:
        self.path = cache_dir / "inventory-libraries.json"
        self._facts: dict[str, dict[str, Any]] = {}
        self._this_run: dict[str, dict[str, Any]] = {}
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads(self.path.read_text())
            if isinstance(loaded, dict):
                self._facts = loaded
        self._dirty = False

    def learn(self, uses: list[LibraryUse]) -> None:
        """Find soname and package of the build-ids not known yet (one package query)."""
        new = [use for use in uses if use.build_id not in self._facts]
        self._this_run.clear()
        if not new:
            return
        from nonstop.bundle.identity import owning_packages

        # This host's dpkg/rpm do not know another mount namespace's files. A replaced file's
        # path now belongs to the package's newer version: its name is right, not its version
        # (the check-in says the file is deleted), so that answer is not cached.
        paths = {use.build_id: Path(use.path.removesuffix(" (deleted)")) for use in new}
        packages = owning_packages(
            sorted({paths[use.build_id] for use in new if use.same_namespace})
        )
        for use in new:
            package = packages.get(paths[use.build_id]) if use.same_namespace else None
            facts = self._facts if use.sealed and not use.deleted else self._this_run
            facts[use.build_id] = {
                "soname": _soname(use),
                "package": {
                    "name": _clean(package.name, 255),
                    "version": _clean(package.version, 255),
                }
                if package
                else None,
            }
        self._dirty = True

    def of(self, build_id: str) -> dict[str, Any]:
        """BUILD_ID's facts; only for build-ids given to the last ``learn`` (else KeyError)."""
        return self._facts.get(build_id) or self._this_run[build_id]

    def save(self) -> None:
        """Write the cached facts if they changed; best effort (a failure costs a new lookup)."""
        if not self._dirty:
            return
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            temporary = self.path.with_suffix(f".tmp.{os.getpid()}")
            temporary.write_text(json.dumps(self._facts, sort_keys=True))
            os.replace(temporary, self.path)
        self._dirty = False


def _soname(use: LibraryUse) -> str:
    from nonstop.bundle.elfcheck import open_elf
    from nonstop.bundle.identity import elf_soname

    name = None
    # A process may map any file: pyelftools fails on hostile ones in many ways (ELFError,
    # AssertionError, OverflowError, ...). Such a library is reported by its file name.
    with contextlib.suppress(Exception), open_regular(use.opener) as handle:
        name = elf_soname(open_elf(handle))  # bounded: any user can map the file
    return _clean(name or Path(use.path.removesuffix(" (deleted)")).name, 255)


def _clean(text: str, limit: int) -> str:
    return _CONTROL.sub("?", text)[:limit] or "?"


def os_report(distro: Distro) -> dict[str, Any]:
    """The check-in's ``os`` section: DISTRO's fields cut to the API's lengths, control characters
    replaced."""
    os_id = re.sub(r"[^a-z0-9._-]", "-", distro.id.lower())[:64] or "linux"
    return {
        "id": os_id,
        "version_id": _clean(distro.version_id, 64) if distro.version_id else None,
        "pretty_name": _clean(distro.pretty_name, 255) if distro.pretty_name else None,
    }


def kernel_report(running: KernelTarget, applied_level: int | None) -> dict[str, Any]:
    """The check-in's ``kernel`` section; APPLIED_LEVEL is the loaded level (None: none loaded)."""
    return {
        "release": _clean(running.release, 255),
        "build_id": running.build_id,
        "version_digest": running.version_digest,
        "applied_level": applied_level,
        "source_version": kernel_source_version(),
    }


# Debian's /proc/version ends "... SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)".
_DEBIAN_KERNEL_VERSION = re.compile(r" Debian ([0-9][A-Za-z0-9.+~:-]{0,62}) \(")


def kernel_source_version(proc_version: str | None = None) -> str | None:
    """The distribution source version the running kernel was built from, when it says
    (Debian kernels do, in /proc/version); vulnerability feeds name that version."""
    if proc_version is None:
        try:
            proc_version = (PROC / "version").read_text()[:4096]
        except OSError:
            return None
    found = _DEBIAN_KERNEL_VERSION.findall(proc_version)
    return found[-1] if found else None  # the kernel's own, after the compiler's


def _process_name(pid: int) -> str:
    """/proc/PID/comm (chosen by the process's owner: control characters replaced)."""
    try:
        comm = (PROC / str(pid) / "comm").read_bytes()[:64]
    except OSError:
        return "?"
    return _CONTROL.sub("?", comm.decode("utf-8", "replace").removesuffix("\n"))[:64]


def library_report(uses: dict[str, LibraryUse], facts: LibraryFacts) -> list[dict[str, Any]]:
    """The check-in's ``libraries`` section: at most MAX_LIBRARIES, the most mapped first.

    Looks up soname and package of build-ids not met before (ELF reads, one
    dpkg/rpm query) and updates FACTS' cache file.
    """
    ordered = sorted(uses.values(), key=lambda use: (-len(use.pids), use.build_id))
    kept = ordered[:MAX_LIBRARIES]
    facts.learn(kept)
    report = []
    for use in kept:
        known = facts.of(use.build_id)
        report.append(
            {
                "build_id": use.build_id,
                "soname": known["soname"],
                "path": use.path.removesuffix(" (deleted)")[:4096],
                "package": known["package"],
                "processes": len(use.pids),
                "applied_level": use.applied_level,
                "partial_level": use.partial_level,
                "deleted": use.deleted,
                "unpatched": [
                    {"pid": pid, "name": _process_name(pid)}
                    for pid in use.unpatched_pids[:MAX_NAMED_PROCESSES]
                ],
            }
        )
    facts.save()
    return report


def collect(
    *,
    hostname: str,
    distro: Distro | None,
    kernel: dict[str, Any] | None,
    libraries: list[dict[str, Any]],
    packages: dict[str, Any] | None = None,
    sticky: str | None = None,
    delay_hours: int = 0,
) -> dict[str, Any]:
    """The check-in body (without its check-in id), as docs/api.md describes it.

    The host's own sticky pin and update delay travel with it, so the server's
    answer (and what the dashboard shows as pending) already honours them.
    """
    body: dict[str, Any] = {
        "agent_version": __version__,
        "hostname": hostname,
        "os": os_report(distro or detect_distro()),
        "kernel": kernel,
        "libraries": libraries,
    }
    if packages is not None:
        body["packages"] = packages
    if sticky:
        body["sticky"] = sticky
    if delay_hours:
        body["delay_hours"] = delay_hours
    return body

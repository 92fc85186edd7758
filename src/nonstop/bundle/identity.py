"""Target identity: which exact library file or kernel build a bundle is for.

Identity is the GNU build-id (plus soname or kernel release for humans), never
a path or a version string: a build-id names one build. It is only a claim of
the file that carries it (anyone can copy a build-id note into another file),
so the engine also compares the code it patches with what the bundle records.
Package name and version are looked up from dpkg or rpm when they own the
file; they are informative only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import struct
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from nonstop.bundle.manifest import KernelTarget, PackageInfo, UserspaceTarget

if TYPE_CHECKING:  # pyelftools is imported where an ELF file is parsed, not by every command
    from elftools.elf.elffile import ELFFile

NT_GNU_BUILD_ID = 3


class IdentityError(Exception):
    """The identity of a file or of the running kernel cannot be read."""


def parse_build_id_notes(blob: bytes) -> str | None:
    """The GNU build-id in a raw ELF note sequence (as in /sys/kernel/notes), if any."""
    offset = 0
    while offset + 12 <= len(blob):
        namesz, descsz, note_type = struct.unpack_from("<III", blob, offset)
        offset += 12
        name = blob[offset : offset + namesz]
        offset += (namesz + 3) & ~3
        desc = blob[offset : offset + descsz]
        offset += (descsz + 3) & ~3
        if note_type == NT_GNU_BUILD_ID and name.rstrip(b"\0") == b"GNU" and desc:
            return desc.hex()
    return None


def elf_build_id(elf: ELFFile) -> str | None:
    """The GNU build-id in ELF's note sections (each read whole only when small)."""
    from nonstop.bundle.elfcheck import MAX_NOTES

    for section in elf.iter_sections():
        # Our own parser, not pyelftools' note walker: that one reads whatever size a note claims.
        if section["sh_type"] == "SHT_NOTE" and 0 < section["sh_size"] <= MAX_NOTES:
            found = parse_build_id_notes(section.data())
            if found:
                return found
    return None


def elf_soname(elf: ELFFile) -> str | None:
    from elftools.elf.dynamic import DynamicSection

    for section in elf.iter_sections():
        if isinstance(section, DynamicSection):
            for tag in section.iter_tags():
                if tag.entry.d_tag == "DT_SONAME":
                    soname: str = tag.soname  # type: ignore[attr-defined]  # set by pyelftools
                    return soname
    return None


def read_os_release(path: Path = Path("/etc/os-release")) -> dict[str, str]:
    """KEY=value pairs of os-release(5), quotes removed."""
    values: dict[str, str] = {}
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return values
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            values[key] = value.strip().strip("\"'")
    return values


def distro_label(os_release: dict[str, str]) -> str | None:
    """'ID VERSION_ID' of os-release (e.g. 'debian 12'); None without an ID."""
    if "ID" not in os_release:
        return None
    return f"{os_release['ID']} {os_release.get('VERSION_ID', '')}".strip()


def owning_package(path: Path) -> PackageInfo | None:
    """The dpkg or rpm package that installed PATH, when a package manager knows it."""
    return owning_packages([path]).get(path)


def owning_packages(paths: list[Path]) -> dict[Path, PackageInfo]:
    """The dpkg or rpm package of each of PATHS that one is known for (one query for all)."""
    distro = distro_label(read_os_release())
    # usrmerge: dpkg may record /lib/... for a file found at /usr/lib/..., or under
    # the name a symlink resolves to.
    queries: dict[str, Path] = {}
    for path in paths:
        for name in dict.fromkeys([str(path), os.path.realpath(path)]):
            for query in dict.fromkeys([name, name.removeprefix("/usr")]):
                queries.setdefault(query, path)
    found: dict[Path, PackageInfo] = {}
    for owners in (_dpkg_owners, _rpm_owners):
        missing = [query for query, path in queries.items() if path not in found]
        if not missing:
            break
        for query, (name, version) in owners(missing).items():
            found.setdefault(queries[query], PackageInfo(name=name, version=version, distro=distro))
    return found


def _run_quiet(argv: list[str]) -> str:
    """ARGV's standard output ('' when it cannot run); a non-zero exit may still carry answers."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout


def _dpkg_owners(paths: list[str]) -> dict[str, tuple[str, str]]:
    if not shutil.which("dpkg-query"):
        return {}
    owners: dict[str, str] = {}
    for line in _run_quiet(["dpkg-query", "-S", *paths]).splitlines():
        packages, sep, path = line.partition(": ")
        if sep and not line.startswith("diversion ") and path in paths:
            owners.setdefault(path, packages.split(",")[0].strip().split(":")[0])
    if not owners:
        return {}
    versions = {}
    listing = _run_quiet(["dpkg-query", "-W", "-f=${Package}\t${Version}\n", *set(owners.values())])
    for line in listing.splitlines():
        name, _, version = line.partition("\t")
        if version:
            versions[name] = version
    return {path: (name, versions[name]) for path, name in owners.items() if name in versions}


def _rpm_owners(paths: list[str]) -> dict[str, tuple[str, str]]:
    if not shutil.which("rpm"):
        return {}
    found = {}
    for path in paths:  # one query each: a file owned by two packages answers two lines
        out = _run_quiet(["rpm", "-qf", "--qf", "%{NAME}\t%{VERSION}-%{RELEASE}\n", path])
        name, tab, version = out.partition("\n")[0].partition("\t")
        if tab:
            found[path] = (name, version)
    return found


def userspace_target_of(path: Path, *, with_package: bool = True) -> UserspaceTarget:
    """Identity of the shared library at PATH."""
    from elftools.common.exceptions import ELFError

    from nonstop.bundle.elfcheck import open_elf

    try:
        with path.open("rb") as handle:
            elf = open_elf(handle)
            if elf["e_machine"] != "EM_X86_64":
                raise IdentityError(f"{path} is not an x86_64 ELF file")
            build_id = elf_build_id(elf)
            soname = elf_soname(elf)
    except FileNotFoundError:
        raise IdentityError(f"target file not found: {path}") from None
    except (ELFError, OSError) as exc:
        raise IdentityError(f"cannot read ELF file {path}: {exc}") from None
    if not build_id:
        raise IdentityError(f"{path} has no GNU build-id; nonstop identifies targets by build-id")
    return UserspaceTarget(
        build_id=build_id,
        soname=soname or path.name,
        filename=path.name,
        package=owning_package(path) if with_package else None,
    )


def running_kernel_target(
    notes: Path = Path("/sys/kernel/notes"), proc_version: Path = Path("/proc/version")
) -> KernelTarget:
    """Identity of the kernel this process runs on."""
    build_id = None
    with contextlib.suppress(OSError):  # no /sys/kernel/notes: fall back to the digest
        build_id = parse_build_id_notes(notes.read_bytes())
    try:
        digest = hashlib.sha256(proc_version.read_bytes()).hexdigest()
    except OSError as exc:
        raise IdentityError(f"cannot read {proc_version}: {exc.strerror}") from None
    return KernelTarget(release=platform.release(), build_id=build_id, version_digest=digest)

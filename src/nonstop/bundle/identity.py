"""Target identity: which exact library file or kernel build a bundle is for.

Identity is the GNU build-id (plus soname or kernel release for humans), never
a path or a version string: two files with one build-id are the same build.
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

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import NoteSection

from nonstop.bundle.manifest import KernelTarget, PackageInfo, UserspaceTarget

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
    for section in elf.iter_sections():
        if not isinstance(section, NoteSection):
            continue
        for note in section.iter_notes():
            # Match the owner too: a Xen note (in a vmlinux) shares the type number.
            if note["n_type"] == "NT_GNU_BUILD_ID" and note["n_name"] == "GNU":
                desc: str = note["n_desc"]
                return desc
    return None


def elf_soname(elf: ELFFile) -> str | None:
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
    if "ID" not in os_release:
        return None
    return f"{os_release['ID']} {os_release.get('VERSION_ID', '')}".strip()


def owning_package(path: Path) -> PackageInfo | None:
    """The dpkg or rpm package that installed PATH, when a package manager knows it."""
    distro = distro_label(read_os_release())
    candidates = dict.fromkeys([str(path), os.path.realpath(path)])
    for candidate in candidates:
        if shutil.which("dpkg-query"):
            found = _dpkg_owner(candidate)
            if found:
                return PackageInfo(name=found[0], version=found[1], distro=distro)
        if shutil.which("rpm"):
            found = _rpm_owner(candidate)
            if found:
                return PackageInfo(name=found[0], version=found[1], distro=distro)
    return None


def _run_quiet(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _dpkg_owner(path: str) -> tuple[str, str] | None:
    # usrmerge: dpkg may record /lib/... for a file found at /usr/lib/...
    for query in dict.fromkeys([path, path.removeprefix("/usr")]):
        out = _run_quiet(["dpkg-query", "-S", query])
        if out:
            package = out.splitlines()[0].split(":", 1)[0].split(",")[0].strip()
            version = _run_quiet(["dpkg-query", "-W", "-f=${Version}", package])
            if version:
                return package, version
    return None


def _rpm_owner(path: str) -> tuple[str, str] | None:
    out = _run_quiet(["rpm", "-qf", "--qf", "%{NAME}\t%{VERSION}-%{RELEASE}\n", path])
    if out and "\t" in out:
        name, version = out.splitlines()[0].split("\t", 1)
        return name, version
    return None


def userspace_target_of(path: Path, *, with_package: bool = True) -> UserspaceTarget:
    """Identity of the shared library at PATH."""
    try:
        with path.open("rb") as handle:
            elf = ELFFile(handle)
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

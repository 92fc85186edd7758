"""The shared libraries a source package ships, taken from the archive's own binary packages.

Live patches are for the exact files hosts run, so the ``--from`` version's
library packages are fetched (``apt-get download``, checked by apt against
the archive's signed index) and unpacked into the cache:
``<cache>/<source>_<version>/binaries/<package>/``. Every ELF shared object
with a SONAME in them is a target; its build-id is what the original build
must reproduce and what the bundles name. Library packages are the
architecture-dependent ones of the ``.dsc`` ``Package-List`` in section
``libs`` (or named ``lib*``), without development, debug and udeb packages.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from debian.deb822 import Dsc
from elftools.common.exceptions import ELFError

from nonstop.builders import cache
from nonstop.builders.debian.sources import Progress, SourcePackage
from nonstop.builders.errors import BuilderError
from nonstop.bundle import PackageInfo, UserspaceTarget
from nonstop.bundle.elfcheck import ElfBoundsError, open_elf
from nonstop.bundle.identity import IdentityError, elf_soname, userspace_target_of

STAMP = "binaries.json"
_NOT_LIBRARIES = ("-dev", "-dbg", "-dbgsym", "-doc", "-udeb", "-bin", "-utils", "-tools")
_ELF_MAGIC = b"\x7fELF"


@dataclass(frozen=True)
class ShippedLibrary:
    """One shared library of a binary package, unpacked at PATH (installed at INSTALLED)."""

    package: str
    version: str
    path: Path
    installed: str
    target: UserspaceTarget

    @property
    def build_id(self) -> str:
        return self.target.build_id

    @property
    def soname(self) -> str:
        return self.target.soname


def library_packages(source: SourcePackage) -> list[str]:
    """The binary packages of SOURCE that ship shared libraries (module docstring)."""
    dsc = Dsc(next(source.root.glob("*.dsc")).read_text())
    names = []
    for entry in dsc.get("Package-List", []):
        name, section = entry["package"], entry["section"].rsplit("/", 1)[-1]
        arch = next(
            (word[5:] for word in entry.get("_other", "").split() if word.startswith("arch=")),
            "any",
        )
        if entry["package-type"] != "deb" or arch == "all" or name.endswith(_NOT_LIBRARIES):
            continue
        if section == "libs" or name.startswith("lib"):
            names.append(name)
    if not names:
        raise BuilderError(
            f"{source.package} {source.version} builds no library package (its Package-List "
            "names none in section libs): nothing to live-patch"
        )
    return names


def fetch_libraries(
    source: SourcePackage, *, offline: bool = False, progress: Progress | None = None
) -> list[ShippedLibrary]:
    """The shared libraries SOURCE's library packages ship, fetched once into its cache dir."""
    say = progress or (lambda _line: None)
    directory = source.root / "binaries"
    with cache.locked(source.root):
        stamp = _read_stamp(directory)
        if stamp is None:
            if offline:
                raise BuilderError(
                    f"the binary packages of {source.package} {source.version} are not in the "
                    "cache (--offline); run once without --offline to fetch them"
                )
            shutil.rmtree(directory, ignore_errors=True)
            work = Path(tempfile.mkdtemp(dir=source.root, prefix=".binaries-"))
            try:
                _download(source, library_packages(source), work, say)
                (work / STAMP).write_text(json.dumps(library_packages(source)))
                work.rename(directory)
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
            stamp = _read_stamp(directory)
            assert stamp is not None
    libraries = [
        library
        for package in stamp
        for library in _shared_objects(directory / package, package, source.version)
    ]
    if not libraries:
        raise BuilderError(
            f"the packages {', '.join(stamp)} of {source.package} {source.version} hold no "
            "shared library with a SONAME"
        )
    return libraries


def _download(source: SourcePackage, packages: list[str], work: Path, say: Progress) -> None:
    argv = ["apt-get", "download", "-q"]
    if os.geteuid() == 0:  # apt's _apt user cannot write into root's cache
        argv += ["-o", "APT::Sandbox::User=root"]
    for package in packages:
        say(f"{package} {source.version}: downloading the binary package (apt-get download)")
        cache.run_tool(
            [*argv, f"{package}={source.version}"],
            cwd=work,
            hint=f"the archive must still serve {package} {source.version}, the version hosts run",
        )
        debs = list(work.glob(f"{package}_*.deb"))
        if len(debs) != 1:
            raise BuilderError(f"apt-get download left {len(debs)} {package} packages, not one")
        cache.run_tool(["dpkg-deb", "-x", str(debs[0]), str(work / package)])
        debs[0].unlink()


def _read_stamp(directory: Path) -> list[str] | None:
    try:
        packages = json.loads((directory / STAMP).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
        return None
    return packages


def _has_soname(path: Path) -> bool:
    with path.open("rb") as handle:
        if handle.read(4) != _ELF_MAGIC:
            return False
        try:
            return elf_soname(open_elf(handle)) is not None
        except (ELFError, ElfBoundsError, OSError):
            return False


def _shared_objects(root: Path, package: str, version: str) -> list[ShippedLibrary]:
    found = []
    for path in sorted(root.rglob("*.so*")):
        if path.is_symlink() or not path.is_file():
            continue
        if not _has_soname(path):
            continue  # not ELF, or a plugin or module without a SONAME: no host links it
        try:
            target = userspace_target_of(path, with_package=False)
        except IdentityError as exc:
            raise BuilderError(f"{package}: {exc}") from None
        info = PackageInfo(name=package, version=version, distro="debian")
        installed = "/" + str(path.relative_to(root))
        found.append(
            ShippedLibrary(
                package,
                version,
                path,
                installed,
                UserspaceTarget(
                    build_id=target.build_id,
                    soname=target.soname,
                    arch=target.arch,
                    filename=target.filename,
                    package=info,
                ),
            )
        )
    return found

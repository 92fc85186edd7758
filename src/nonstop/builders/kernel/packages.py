"""Debian kernel packages of one exact kernel build, unpacked into a cache dir.

Nothing is installed system-wide (installing a kernel package pulls udev,
initramfs-tools and systemd into the machine): ``apt-get download`` fetches
the ``.deb`` files and ``dpkg-deb`` unpacks them under
``<cache>/<release>_<version>/root``. The tree holds the headers and kbuild
tools to build modules against (``linux-headers-<release>``, its ``-common``
part and ``linux-kbuild-<major.minor>``), and from ``linux-image-<release>``
only the kernel image (for its build-id, and for booting test guests) plus
the few modules a test guest needs to mount the host over virtio-9p.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from nonstop.builders import cache
from nonstop.builders.errors import BuilderError
from nonstop.builders.kernel.image import vmlinuz_build_id
from nonstop.bundle.manifest import KernelTarget, PackageInfo

GUEST_MODULE_DIRS = ("drivers/virtio", "net/9p", "fs/9p", "fs/netfs", "fs/fscache")
TREE_STAMP = "tree.json"


class KernelPackageError(BuilderError):
    """A kernel package cannot be resolved, downloaded or unpacked."""


def _run(argv: list[str], cwd: Path | None = None) -> str:
    return cache.run_tool(
        argv, cwd, error=KernelPackageError, hint="are the apt lists current? apt-get update"
    )


@dataclass(frozen=True)
class KernelTree:
    """One exact kernel build unpacked under ROOT: release, Debian package version, build-id.

    BUILD_ID is read from the tree's own vmlinuz, so it is the build-id the
    kernel reports once it runs.
    """

    release: str
    version: str
    build_id: str
    root: Path

    @property
    def headers(self) -> Path:
        """The kbuild tree modules are built against (``make -C`` there)."""
        return self.root / "usr" / "src" / f"linux-headers-{self.release}"

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def modules_dir(self) -> Path:
        """The image's modules; only the few a test guest needs (GUEST_MODULE_DIRS) are unpacked."""
        return self.root / "lib" / "modules" / self.release / "kernel"

    def target(self) -> KernelTarget:
        """The manifest target of bundles built on this tree: its exact release and build-id."""
        return KernelTarget(
            release=self.release,
            build_id=self.build_id,
            package=PackageInfo(
                name=f"linux-image-{self.release}", version=self.version, distro="debian"
            ),
        )


def candidate_version(package: str) -> str:
    """The version apt would install of PACKAGE; KernelPackageError if the archive has none."""
    out = _run(["apt-cache", "policy", package])
    match = re.search(r"Candidate: (\S+)", out)
    if not match or match.group(1) == "(none)":
        raise KernelPackageError(f"the archive offers no {package} (apt-get update?)")
    return match.group(1)


def fetch_kernel(
    release: str, version: str | None = None, cache_dir: Path | None = None
) -> KernelTree:
    """The unpacked tree of kernel RELEASE at package VERSION (default: the archive's candidate).

    The first call downloads and unpacks the packages under CACHE_DIR (see the
    module docstring); the tree's stamp file is written last, so a later call
    reuses only a complete tree and redoes a partial one. An flock on the
    cache dir serialises concurrent builds.
    """
    cache_dir = (cache_dir or cache.cache_dir("kernel")).resolve()
    image_package = f"linux-image-{release}"
    version = version or candidate_version(image_package)
    directory = cache_dir / f"{release}_{version}"
    with cache.locked(cache_dir):
        cached = _read_stamp(directory)
        if cached is not None:
            return cached
        shutil.rmtree(directory, ignore_errors=True)
        root = directory / "root"
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
            debs = Path(tmp)
            headers = _download(f"linux-headers-{release}", version, debs)
            for dependency in _kernel_dependencies(headers):
                _unpack_all(_download(dependency[0], dependency[1], debs), root)
            _unpack_all(headers, root)
            _unpack_image(_download(image_package, version, debs), root, release)
        _point_makefile_at(root, release)
        tree = KernelTree(
            release, version, vmlinuz_build_id(root / "boot" / f"vmlinuz-{release}"), root
        )
        (directory / TREE_STAMP).write_text(
            json.dumps({"release": release, "version": version, "build_id": tree.build_id})
        )
        return tree


def _read_stamp(directory: Path) -> KernelTree | None:
    try:
        stamp = json.loads((directory / TREE_STAMP).read_text())
    except (OSError, ValueError):
        return None
    return KernelTree(stamp["release"], stamp["version"], stamp["build_id"], directory / "root")


def _download(package: str, version: str, into: Path) -> Path:
    _run(
        ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", f"{package}={version}"],
        cwd=into,
    )
    found = sorted(into.glob(f"{package}_*.deb"))
    if not found:
        raise KernelPackageError(f"apt-get download left no {package} package")
    return found[-1]


def _kernel_dependencies(headers_deb: Path) -> list[tuple[str, str]]:
    """The headers' -common and kbuild packages, at the versions the headers depend on."""
    depends = _run(["dpkg-deb", "-f", str(headers_deb), "Depends"])
    wanted = []
    for clause in depends.split(","):
        match = re.match(r"\s*(linux-(?:headers|kbuild)-\S+)\s*\((?:=|>=)\s*([^)\s]+)\)", clause)
        if match:
            wanted.append((match.group(1), match.group(2)))
    if not any(name.startswith("linux-kbuild-") for name, _ in wanted):
        raise KernelPackageError(f"{headers_deb.name} names no linux-kbuild dependency")
    return wanted


def _unpack_all(deb: Path, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    _run(["dpkg-deb", "-x", str(deb), str(root)])


def _unpack_image(deb: Path, root: Path, release: str) -> None:
    """From the image package only the kernel, its config and the guest's modules."""
    prefixes = tuple(
        f"./lib/modules/{release}/kernel/{directory}/" for directory in GUEST_MODULE_DIRS
    )
    keep = {f"./boot/vmlinuz-{release}", f"./boot/config-{release}"}
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
            for member in archive:
                if not member.isfile() or not (
                    member.name in keep or member.name.startswith(prefixes)
                ):
                    continue
                source = archive.extractfile(member)
                if source is None:
                    continue
                destination = root / member.name.removeprefix("./")
                destination.parent.mkdir(parents=True, exist_ok=True)
                with destination.open("wb") as out:
                    shutil.copyfileobj(source, out)
    if proc.returncode != 0:
        raise KernelPackageError(f"dpkg-deb could not read {deb.name}")


def _point_makefile_at(root: Path, release: str) -> None:
    # The arch-specific headers Makefile includes the -common tree by its
    # absolute installed path (/usr/src/...); make it include the unpacked one.
    makefile = root / "usr" / "src" / f"linux-headers-{release}" / "Makefile"
    text = makefile.read_text()
    makefile.write_text(text.replace("include /usr/src/", f"include {root}/usr/src/"))

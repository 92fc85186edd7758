"""The records of vulnerability monitoring, shared by feeds, matching and exports.

A feed (Debian security tracker, OSV, newer source changelogs, bundle CVE
lists) becomes ``Advisory`` records: what one feed says of one CVE in one
source package of one distribution release. A host becomes a ``HostState``:
its installed packages, the libraries its processes map and the kernel it
runs, each with the live patch level applied. Matching turns the two into one
``Finding`` per host and CVE, whose ``Status`` is what the API, the agent and
the scanner exports report.

Versions are kept as the distribution writes them and compared only with a
version library (Debian: python-debian), never as strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

DEBIAN_CODENAMES = {
    "buster": "10",
    "bullseye": "11",
    "bookworm": "12",
    "trixie": "13",
    "forky": "14",
}
"""Debian release codenames by number: the tracker names releases by codename, OSV by number."""


LEVEL_STATE_DIR = "/var/lib/nonstop/levels"
"""Where the agent keeps, for scanners that read files on the host (OVAL), one file per target
it live-patches: ``lib-<build-id>`` for a library and ``kernel`` for the running kernel, each
holding one line ``level=N``: the level applied in every process that maps the library, or in
the kernel; ``level=0`` while any process runs the library's unpatched code."""


def level_state_name(build_id: str | None) -> str:
    """The file name under LEVEL_STATE_DIR for a library BUILD_ID, or for the kernel (None)."""
    return "kernel" if build_id is None else f"lib-{build_id}"


def release_key(distro: str, version: str) -> str:
    """One spelling of a distribution release for every feed and host: ``debian:12``.

    VERSION may be a number (``12``, ``12.8``: the point release is dropped) or
    a Debian codename (``bookworm``).
    """
    distro = distro.strip().lower()
    version = version.strip().lower()
    if distro == "debian":
        version = DEBIAN_CODENAMES.get(version, version).split(".")[0]
    return f"{distro}:{version}"


class FeedState(StrEnum):
    """What a feed says of one CVE in one source package and release."""

    FIXED = "fixed"
    """Fixed in ``fixed_version`` and every later version."""
    OPEN = "open"
    """Affected, no fixed version in this release yet."""
    NOT_AFFECTED = "not-affected"
    """This release's package never had the flaw (the tracker's fixed version ``0``)."""
    UNDETERMINED = "undetermined"
    """The feed does not know yet."""


@dataclass(frozen=True, slots=True)
class Advisory:
    """One feed's word on one CVE in one source package of one release."""

    cve: str
    source: str
    """The distribution's source package (Debian: the tracker's and changelogs' package name)."""
    release: str
    """``release_key`` form, e.g. ``debian:12``."""
    state: FeedState
    fixed_version: str | None = None
    """Set when ``state`` is FIXED."""
    urgency: str | None = None
    """The feed's urgency or severity word (tracker: unimportant, low, medium, high)."""
    cvss: float | None = None
    nodsa: str | None = None
    """Why no security advisory will come (the tracker's nodsa text and reason), if it says so."""
    description: str | None = None
    feed: str = ""
    """The feed's name: ``debian-tracker``, ``osv``, ``changelog``, ``bundles``."""


class Status(StrEnum):
    """One host's standing against one CVE (docs/vulnerabilities.md)."""

    NOT_AFFECTED = "not-affected"
    FIXED_BY_PACKAGE = "fixed-by-package"
    FIXED_BY_LIVE_PATCH = "fixed-by-live-patch"
    """Applied in the kernel, or in every process that maps the library."""
    PARTLY_FIXED = "partly-fixed"
    """A live patch is applied in some processes; ``Finding.processes`` names the others."""
    RESTART_NEEDED = "restart-needed"
    """Fixed on disk, but processes (named) or the kernel still run the old code."""
    OPEN_FIX_AVAILABLE = "open-fix-available"
    """A fixed package version exists (``fixed_version``), and maybe a bundle (``bundle``)."""
    OPEN_NO_FIX = "open-no-fix"
    UNDETERMINED = "undetermined"

    @property
    def exposed(self) -> bool:
        """Whether the host still runs code with the flaw somewhere."""
        return self in _EXPOSED


_EXPOSED = {
    Status.PARTLY_FIXED,
    Status.RESTART_NEEDED,
    Status.OPEN_FIX_AVAILABLE,
    Status.OPEN_NO_FIX,
}


@dataclass(frozen=True, slots=True)
class InstalledPackage:
    """One installed binary package (dpkg or rpm), as the agent reports it."""

    name: str
    version: str
    source: str
    """The source package it was built from (dpkg's ``source:Package``)."""
    source_version: str
    """The source version (differs from ``version`` for binNMUs and some packages)."""
    arch: str = "amd64"


@dataclass(frozen=True, slots=True)
class ProcessRef:
    """A process named in a finding: its pid and its name (``/proc/PID/comm``, untrusted text)."""

    pid: int
    name: str


@dataclass(frozen=True, slots=True)
class RunningLibrary:
    """One library build-id mapped by this host's processes."""

    build_id: str
    soname: str
    package: str | None
    """The binary package that owns the mapped file, when the file on disk is that file."""
    package_version: str | None
    deleted: bool = False
    """The mapped file was replaced on disk (an upgrade): processes still run an older version."""
    applied_level: int | None = None
    """Level applied in every process that maps it; None when one runs unpatched code."""
    processes: tuple[ProcessRef, ...] = ()
    unpatched: tuple[ProcessRef, ...] = ()
    """The processes that run it without a live patch (a subset of ``processes``)."""
    partial_level: int | None = None
    """While ``unpatched`` names some processes (``applied_level`` is then None): the level
    applied in the others. Matching needs it to tell partly fixed from open."""
    process_count: int = 0
    """How many processes map it, when ``processes`` names fewer (a check-in names only the
    unpatched ones)."""


@dataclass(frozen=True, slots=True)
class RunningKernel:
    """The running kernel, as ``uname`` and ``/proc/version`` say, with its live patch level."""

    release: str
    """``uname -r``, e.g. ``6.1.0-28-amd64``."""
    source_version: str | None
    """The source version the running kernel was built from (Debian: ``6.1.119-1``)."""
    target_key: str
    """The kernel's bundle target key (build-id or version digest)."""
    applied_level: int | None = None
    source: str = "linux"


@dataclass(frozen=True, slots=True)
class HostState:
    """Everything matching needs to know of one host."""

    host_id: str
    hostname: str
    release: str
    """``release_key`` form."""
    packages: tuple[InstalledPackage, ...] = ()
    libraries: tuple[RunningLibrary, ...] = ()
    kernel: RunningKernel | None = None


@dataclass(frozen=True, slots=True)
class LivePatchLevel:
    """A published bundle level for one target and the CVEs it closes (cumulative: levels 1..N)."""

    target_key: str
    level: int
    cves: frozenset[str]
    bundle_sha256: str
    effective_version: str
    source: str | None = None
    """The source package of the update the level was built from, when the manifest says."""
    kernel_module: str | None = None
    """A kernel level's livepatch module (``/sys/kernel/livepatch/<module>``), when known."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One host's standing against one CVE in one source package."""

    cve: str
    source: str
    status: Status
    installed_version: str | None = None
    """The installed source version (kernel: the running kernel's source version)."""
    fixed_version: str | None = None
    urgency: str | None = None
    cvss: float | None = None
    nodsa: str | None = None
    live_patch: LivePatchLevel | None = None
    """The applied level that closes this CVE (fixed or partly fixed by live patch)."""
    available_bundle: LivePatchLevel | None = None
    """A published level that would close it but is not applied (open: fix available)."""
    processes: tuple[ProcessRef, ...] = ()
    """Processes that still run flawed code (partly fixed, restart needed)."""
    kernel_reboot: bool = False
    """The running kernel is older than the fixed, installed image (restart needed)."""
    feeds: tuple[str, ...] = field(default=())
    """The feeds the verdict rests on."""

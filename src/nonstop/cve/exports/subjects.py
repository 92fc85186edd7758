"""What one finding concerns on its host, said the same way to every export format.

A ``Subject`` is one host's finding with what the formats need around it: the
installed packages it is about (with their Package URLs), whether it is the
running kernel, which library build the live patch targets, and the sentences
(live patch, processes to restart, action to take) that CSAF notes, CycloneDX
details, OpenVEX statements, OSV details and OVAL descriptions all carry.

Products are never said to be at another version than the one installed: a
live patch changes the running code, not the package, so it is named beside
the package (bundle digest, level, target build) and never folded into it.

Text that other users chose (process names, hostnames, versions the agent
reports) goes through ``inert`` before it enters any document.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from packageurl import PackageURL

from nonstop.console import printable
from nonstop.cve.model import Finding, HostState, LivePatchLevel, ProcessRef, Status
from nonstop.cve.versions import VersionError, check, uses_rpm

MAX_TEXT = 200
"""Longest untrusted name kept in a document (hostnames stop at 253, comm at 15)."""

MAX_PROCESSES_NAMED = 20
"""Processes named in one sentence; the rest are counted."""

_XML_ILLEGAL = re.compile("[\ud800-\udfff\ufffe\uffff]")
_BUILD_ID = re.compile(r"[0-9a-f]{8,128}")
_SHA256 = re.compile(r"[0-9a-f]{64}")

USERSPACE_KEY_PREFIX = "userspace:"
"""How a library's bundle target key starts (``nonstop.bundle.manifest.UserspaceTarget.key``)."""


class ExportError(ValueError):
    """The findings cannot be exported as asked; the message says why in one line."""


def inert(text: str, limit: int = MAX_TEXT) -> str:
    """TEXT with controls, bidi overrides, lone surrogates and XML-illegal characters escaped.

    Newlines and tabs become escapes too: one name stays on one line. The
    result is cut to LIMIT characters, so no name can grow a document.
    """
    text = _XML_ILLEGAL.sub(lambda m: f"\\u{ord(m.group()):04x}", text[: limit * 2])
    text = printable(text).replace("\n", "\\n").replace("\t", "\\t")
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def stable_id(*parts: object) -> str:
    """A SHA-256 hex digest of PARTS: the same inputs name the same thing in every export."""
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def timestamp(moment: datetime) -> str:
    """MOMENT in UTC, to the second, as every format here accepts it: ``2025-01-31T12:00:00Z``."""
    if moment.tzinfo is None:
        raise ExportError("generated_at must carry a time zone")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Package:
    """An installed package a finding is about (or, for the running kernel, its source)."""

    name: str
    version: str | None
    arch: str
    purl: str


@dataclass(frozen=True, slots=True)
class Subject:
    """One host's finding, with what every format says around it."""

    host: HostState
    finding: Finding
    packages: tuple[Package, ...]
    """The host's binary packages built from the finding's source, sorted; for the running
    kernel, or when the host lists none, the source package at the installed version."""
    kernel: bool
    """The finding is about the running kernel (its source, its live patch level)."""
    patched_build_id: str | None
    """The library build the live patch (applied or available) targets, if a library."""

    @property
    def key(self) -> str:
        """Stable id of this host, CVE and source package."""
        return stable_id(self.host.host_id, self.finding.cve, self.finding.source)

    @property
    def hostname(self) -> str:
        return inert(self.host.hostname) or inert(self.host.host_id)

    @property
    def patched_packages(self) -> tuple[Package, ...]:
        """The packages whose running code the live patch changes (all when the host does
        not say which package maps the patched build)."""
        owners = {
            lib.package for lib in self.host.libraries if lib.build_id == self.patched_build_id
        }
        return tuple(p for p in self.packages if p.name in owners) or self.packages

    @property
    def level(self) -> LivePatchLevel | None:
        """The level that closes the CVE: applied if one is, else a published one."""
        return self.finding.live_patch or self.finding.available_bundle

    @property
    def installed_flawed(self) -> bool:
        """Whether the installed (kernel: running) version is one with the flaw."""
        return self.finding.status not in _INSTALLED_CLEAN

    def headline(self) -> str:
        """The CVE, the source package, the host and the status, in words."""
        f = self.finding
        return (
            f"{inert(f.cve, 40)} in {inert(f.source)} on {self.hostname}: {_STATUS_WORDS[f.status]}"
        )

    def summary(self) -> str:
        """One sentence: the headline, with what closed or still exposes the flaw."""
        return self.headline() + self._because()

    def details(self) -> str:
        """The summary and the action to take, as a paragraph."""
        return " ".join(filter(None, [self.summary() + ".", self.action()]))

    def _because(self) -> str:
        f = self.finding
        if f.status is Status.FIXED_BY_LIVE_PATCH and f.live_patch:
            return f" by {live_patch_text(f.live_patch)}; the installed version is unchanged"
        if f.status is Status.PARTLY_FIXED and f.live_patch:
            return f" ({live_patch_text(f.live_patch)} is applied in other processes)"
        if f.status is Status.OPEN_NO_FIX and f.nodsa:
            return f" ({inert(f.nodsa)})"
        return ""

    def action(self) -> str:
        """What the operator can do, as one sentence ('' when nothing is left to do)."""
        f = self.finding
        steps = [self.restart_text()] if self.restart_text() else []
        if f.status is Status.OPEN_FIX_AVAILABLE:
            if f.available_bundle:
                steps.append(f"apply {live_patch_text(f.available_bundle)}")
            if f.fixed_version:
                steps.append(self.upgrade_text(f.fixed_version))
        if f.status is Status.OPEN_NO_FIX:
            steps.append("no fixed version exists yet: watch for one")
        return ("; or ".join(steps) + ".") if steps else ""

    def upgrade_text(self, fixed_version: str) -> str:
        """The upgrade to FIXED_VERSION that fixes the finding, with the restart it takes."""
        source = inert(self.finding.source)
        after = "reboot" if self.kernel else f"restart the processes that map {source}"
        return f"upgrade {source} to {inert(fixed_version)} or later, then {after}"

    def restart_text(self) -> str:
        """The restart a remediation needs, or '' when none."""
        f = self.finding
        parts = []
        if f.kernel_reboot:
            parts.append("reboot the host into the installed fixed kernel")
        restart = f.status in (Status.PARTLY_FIXED, Status.RESTART_NEEDED)
        if restart and (f.processes or not f.kernel_reboot):
            parts.append(f"restart {processes_text(f.processes)}")
        return "; ".join(parts)

    def live_patch_facts(self) -> dict[str, object] | None:
        """The applied live patch as data (formats that carry structured extensions)."""
        return level_facts(self.finding.live_patch, self.patched_build_id, self.kernel)


_INSTALLED_CLEAN = {Status.NOT_AFFECTED, Status.FIXED_BY_PACKAGE, Status.RESTART_NEEDED}

_STATUS_WORDS = {
    Status.NOT_AFFECTED: "not affected (the release's package never had the flaw)",
    Status.FIXED_BY_PACKAGE: "fixed by the installed package",
    Status.FIXED_BY_LIVE_PATCH: "fixed in the running code",
    Status.PARTLY_FIXED: "still exposed in some processes",
    Status.RESTART_NEEDED: "fixed on disk, but the old code still runs",
    Status.OPEN_FIX_AVAILABLE: "exposed; a fix is available",
    Status.OPEN_NO_FIX: "exposed; no fix exists yet",
    Status.UNDETERMINED: "under investigation (the feeds do not tell yet)",
}


def live_patch_text(level: LivePatchLevel) -> str:
    """A live patch level named in words: target, level, bundle digest."""
    effective = " ".join(inert(part) for part in (level.source, level.effective_version) if part)
    return (
        f"nonstop live patch level {level.level} for {inert(level.target_key)} "
        f"(bundle sha256 {inert(level.bundle_sha256)}, effective version {effective})"
    )


def level_facts(
    level: LivePatchLevel | None, build_id: str | None, kernel: bool
) -> dict[str, object] | None:
    """LEVEL as data: target, build-id or kernel, level, bundle digest, effective version."""
    if level is None:
        return None
    facts: dict[str, object] = {
        "target": inert(level.target_key),
        "level": level.level,
        "bundle_sha256": inert(level.bundle_sha256),
        "effective_version": inert(level.effective_version),
    }
    if kernel:
        facts["kernel"] = True
        if level.kernel_module:
            facts["kernel_module"] = inert(level.kernel_module)
    elif build_id:
        facts["build_id"] = build_id
    return facts


def shown_processes(processes: Sequence[ProcessRef]) -> list[ProcessRef]:
    """The processes a document names: the first MAX_PROCESSES_NAMED by pid."""
    return sorted(processes, key=lambda p: (p.pid, p.name))[:MAX_PROCESSES_NAMED]


def processes_text(processes: Sequence[ProcessRef]) -> str:
    """The processes named for a restart: ``pid 12 (nginx), pid 40 (php-fpm)``, bounded."""
    if not processes:
        return "the processes that map the old library"
    shown = shown_processes(processes)
    text = ", ".join(f"pid {p.pid} ({inert(p.name, 32)})" for p in shown)
    more = len(processes) - len(shown)
    return f"{text} and {more} more" if more else text


def purl(release: str, name: str, version: str | None, arch: str) -> str:
    """The Package URL of package NAME at VERSION for RELEASE (``debian:12``)."""
    distro, _, number = release.partition(":")
    return PackageURL(
        type="rpm" if uses_rpm(release) else "deb",
        namespace=distro,
        name=name,
        version=version,
        qualifiers={"arch": arch, "distro": f"{distro}-{number}"},
    ).to_string()


def library_build_id(level: LivePatchLevel | None) -> str | None:
    """The build-id a library level targets (its key is ``userspace:<build-id>``)."""
    if level is None or not level.target_key.startswith(USERSPACE_KEY_PREFIX):
        return None
    build_id = level.target_key.removeprefix(USERSPACE_KEY_PREFIX)
    if not _BUILD_ID.fullmatch(build_id):
        raise ExportError(f"not a build-id in target key {inert(level.target_key, 80)!r}")
    return build_id


def subject(host: HostState, finding: Finding) -> Subject:
    """FINDING on HOST, with the packages it concerns and the live patch target."""
    kernel = host.kernel is not None and finding.source == host.kernel.source
    if host.kernel is not None and kernel:
        version = host.kernel.source_version or finding.installed_version
        packages: tuple[Package, ...] = ()
    else:
        version = finding.installed_version
        packages = tuple(
            Package(p.name, p.version, p.arch, purl(host.release, p.name, p.version, p.arch))
            for p in sorted(host.packages, key=lambda p: (p.name, p.arch, p.version))
            if p.source == finding.source
        )
    if not packages:
        source_purl = purl(host.release, finding.source, version, "source")
        packages = (Package(finding.source, version, "source", source_purl),)
    versions = (finding.fixed_version, finding.installed_version)
    try:
        for version in (v for v in versions if v is not None):
            check(host.release, version)
    except VersionError as error:
        raise ExportError(f"{inert(finding.cve, 40)}: {error}") from error
    for level in (finding.live_patch, finding.available_bundle):
        if level is not None and not _SHA256.fullmatch(level.bundle_sha256):
            raise ExportError(f"{finding.cve}: bundle digest is not SHA-256 hex")
    build_id = None if kernel else library_build_id(finding.live_patch or finding.available_bundle)
    return Subject(host, finding, packages, kernel, build_id)


def subjects(host: HostState, findings: Iterable[Finding]) -> list[Subject]:
    """HOST's findings as subjects, sorted by CVE and source (the order of every document)."""
    return [subject(host, f) for f in sorted(findings, key=lambda f: (f.cve, f.source))]

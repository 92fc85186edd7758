"""API v1 request and response bodies (pydantic): every input is validated here first.

Unknown fields are refused (``extra="forbid"``) so a typo in an agent or
script is a clear 422 instead of a silently ignored setting. Lengths and
patterns match the database columns, so valid input always fits.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from nonstop.cve.package_lists import MAX_PACKAGES, packages_digest
from nonstop.server.policy import parse_sticky

Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]+$", min_length=2, max_length=128)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Text64 = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")]
Text255 = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f]+$")
]
Hostname = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.:-]+$")
]
FeedName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
LabelKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,63}$")]
LabelValue = Annotated[str, StringConstraints(max_length=255, pattern=r"^[^\x00-\x1f]*$")]
Description = Annotated[str, StringConstraints(max_length=500, pattern=r"^[^\x00]*$")]
Labels = Annotated[dict[LabelKey, LabelValue], Field(max_length=32)]
Level = Annotated[int, Field(ge=1, le=1_000_000_000)]
StickyPin = Annotated[
    str,
    StringConstraints(pattern=r"^(level:[1-9][0-9]{0,8}|date:[0-9]{4}-[0-9]{2}-[0-9]{2})$"),
]
MAX_NAMED_PROCESSES = 32
HostState = Literal["active", "stale", "never", "unregistered"]
DelayHours = Annotated[int, Field(ge=0, le=24 * 365)]


class Input(BaseModel):
    """Base of request bodies: an unknown field is refused (422)."""

    model_config = ConfigDict(extra="forbid")


def _check_sticky(value: str | None) -> str | None:
    parse_sticky(value)  # a real date, not just the shape of one
    return value


class ErrorBody(BaseModel):
    """Every error answer: a one-line reason."""

    detail: str


# --- host side: registration, check-in ---------------------------------------------------


class RegisterRequest(Input):
    registration_key: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    hostname: Hostname


class RegisterResponse(BaseModel):
    host_id: str
    token: str = Field(description="secret bearer token for this host; shown only once")
    feed: str
    checkin_interval_seconds: int


class OsInfo(Input):
    id: Annotated[str, StringConstraints(pattern=r"^[a-z0-9._-]{1,64}$")]
    version_id: Text64 | None = None
    pretty_name: Text255 | None = None


class PackageRef(Input):
    name: Text255
    version: Text255


# What dpkg and rpm accept in package names, versions and architectures.
PackageName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9+._-]{0,199}$")]
PackageVersion = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.+~:_-]{1,255}$")]
Arch = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
InstalledRow = tuple[PackageName, PackageVersion, PackageName, PackageVersion, Arch]


class InstalledPackages(Input):
    """The host's installed packages: always their digest, the list only when the server's last
    answer did not acknowledge that digest (``packages_digest``)."""

    manager: Literal["dpkg", "rpm"]
    digest: Sha256
    items: Annotated[list[InstalledRow], Field(max_length=MAX_PACKAGES)] | None = Field(
        None,
        description="[name, version, source, source_version, arch] per package, sorted, "
        "each once; digest is nonstop.cve.package_lists.packages_digest of them",
    )

    @model_validator(mode="after")
    def _digest_matches(self) -> InstalledPackages:
        if self.items is not None:
            if any(a >= b for a, b in zip(self.items, self.items[1:], strict=False)):
                raise ValueError("packages.items must be sorted, each once")
            if packages_digest(self.manager, list(self.items)) != self.digest:
                raise ValueError("packages.digest is not the digest of packages.items")
        return self


class ProcessName(Input):
    """A process named in the inventory: pid and /proc/PID/comm (control characters replaced)."""

    pid: Annotated[int, Field(ge=1, le=2**22)]
    name: Annotated[str, StringConstraints(max_length=64, pattern=r"^[^\x00-\x1f]*$")]


class KernelInventory(Input):
    """The running kernel, identified by build_id or version_digest (at least one)."""

    release: Text255
    build_id: Hex | None = None
    version_digest: Sha256 | None = None
    arch: Text64 = "x86_64"
    applied_level: Level | None = None
    source_version: PackageVersion | None = Field(
        None, description="the distribution source version it was built from (/proc/version)"
    )

    @model_validator(mode="after")
    def _identified(self) -> KernelInventory:
        if self.build_id is None and self.version_digest is None:
            raise ValueError("kernel needs build_id or version_digest")
        return self


class LibraryInventory(Input):
    build_id: Hex
    soname: Text255
    path: Annotated[str, StringConstraints(max_length=4096)] | None = None
    package: PackageRef | None = None
    processes: Annotated[int, Field(ge=0, le=10_000_000)] = 0
    applied_level: Level | None = None
    deleted: bool = Field(
        False, description="the mapped file was replaced on disk: processes run an older copy"
    )
    unpatched: Annotated[list[ProcessName], Field(max_length=MAX_NAMED_PROCESSES)] = Field(
        default_factory=list,
        description="processes running it without a live patch (at most 32 named)",
    )
    partial_level: Level | None = Field(
        None,
        description="while applied_level is null because some processes run it unpatched: "
        "the level the other processes run",
    )


class CheckinRequest(Input):
    checkin_id: uuid.UUID = Field(
        description="chosen by the agent per check-in; a retry reuses it and is recorded once"
    )
    agent_version: Text64
    hostname: Hostname
    os: OsInfo
    kernel: KernelInventory | None = None
    libraries: Annotated[list[LibraryInventory], Field(max_length=4096)] = []
    packages: InstalledPackages | None = None
    sticky: StickyPin | None = Field(
        None,
        description="the host's own pin (nonstopctl --set-sticky-patch); "
        "with the key's or host's pin, the strictest wins",
    )
    delay_hours: DelayHours | None = Field(
        None,
        description="the host's own update delay: bundles published less than this many "
        "hours ago are not offered (the larger of this and the feed's delay applies)",
    )

    _sticky = field_validator("sticky")(_check_sticky)


class BundleRef(BaseModel):
    """The bundle to apply; url is its download path on this server (host token required)."""

    sha256: str
    level: int
    size: int
    effective_version: str
    published_at: datetime
    url: str


class HeldLevel(BaseModel):
    level: int
    published_at: datetime
    release_at: datetime = Field(description="when the feed's (or host's) delay releases it")


class TargetDecision(BaseModel):
    """The server's answer for one reported target: apply bundle, or none (bundle null);
    reason says why, for the host's operator.
    """

    target: str
    kind: Literal["userspace", "kernel"]
    name: str
    applied_level: int | None
    action: Literal["apply", "none"]
    reason: str
    bundle: BundleRef | None
    held_back: list[HeldLevel] = Field(
        default_factory=list,
        description="published levels above the offer (and the applied level) that the pin "
        "allows but the delay still holds back, lowest first (absent from older servers)",
    )


class CheckinResponse(BaseModel):
    host_id: str
    checkin_id: uuid.UUID
    recorded: bool = Field(description="false when this check-in id was already recorded")
    feed: str
    server_time: datetime
    next_checkin_seconds: int
    targets: list[TargetDecision]
    packages_digest: str | None = Field(
        None,
        description="the digest of the installed-package list the server holds for this host; "
        "while it differs from the host's own, the host sends the list",
    )
    vulnerabilities_digest: str | None = Field(
        None,
        description="identifies what the host's findings are computed from: when it changes, "
        "GET /api/v1/hosts/{host_id}/vulnerabilities has news",
    )


class HostTargetView(BaseModel):
    target: str
    kind: str
    name: str
    package_name: str | None
    package_version: str | None
    processes: int
    applied_level: int | None


class HostView(BaseModel):
    """A host as the server sees it. state: active (checked in within the stale period),
    stale (not since), never (registered, no check-in yet) or unregistered.
    """

    id: str
    hostname: str
    state: HostState
    feed: str
    sticky: str | None
    labels: dict[str, str]
    registration_key_id: str | None
    distro_id: str | None
    distro_version: str | None
    kernel_release: str | None
    kernel_build_id: str | None
    kernel_version_digest: str | None
    agent_version: str | None
    registered_at: datetime
    last_checkin_at: datetime | None
    checkin_count: int
    unregistered_at: datetime | None


class HostDetail(HostView):
    targets: list[HostTargetView]


class HostList(BaseModel):
    hosts: list[HostView]
    next_after: str | None = Field(description="pass as `after` to get the next page")


class CheckinRecord(BaseModel):
    checkin_id: str
    received_at: datetime
    agent_version: str | None


class CheckinHistory(BaseModel):
    checkins: list[CheckinRecord]


class HostUpdate(Input):
    feed: FeedName | None = None
    sticky: StickyPin | None = Field(None, description="null removes the pin")
    labels: Labels | None = None

    _sticky = field_validator("sticky")(_check_sticky)


# --- admin: registration keys ------------------------------------------------------------


class KeyCreate(Input):
    name: Text64
    feed: FeedName = "stable"
    sticky: StickyPin | None = None
    labels: Labels = {}
    host_limit: Annotated[int, Field(ge=1, le=100_000_000)] | None = None

    _sticky = field_validator("sticky")(_check_sticky)


class KeyUpdate(Input):
    feed: FeedName | None = None
    sticky: StickyPin | None = Field(None, description="null removes the pin")
    labels: Labels | None = None
    host_limit: Annotated[int, Field(ge=1, le=100_000_000)] | None = Field(
        None, description="null removes the limit"
    )

    _sticky = field_validator("sticky")(_check_sticky)


class KeyView(BaseModel):
    """A registration key (never its secret). host_count: hosts registered with it and not
    unregistered.
    """

    id: str
    name: str
    feed: str
    sticky: str | None
    labels: dict[str, str]
    host_limit: int | None
    host_count: int
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyView):
    key: str = Field(description="the registration key for hosts; shown only once")


# --- admin: bundles, feeds ---------------------------------------------------------------


class BundleView(BaseModel):
    """A stored bundle: target is its target key, key_id the vendor key that signed it,
    uploaded_by the admin token that uploaded it; retired_at set once it is no longer offered.
    """

    sha256: str
    kind: Literal["userspace", "kernel"]
    target: str
    target_name: str
    level: int
    key_id: str
    size: int
    effective_version: str
    cves: list[str]
    published_at: datetime
    retired_at: datetime | None
    uploaded_by: str


class BundleDetail(BundleView):
    manifest: dict[str, Any]


class BundleList(BaseModel):
    bundles: list[BundleView]


class FeedCreate(Input):
    name: FeedName
    description: Description = ""
    delay_hours: DelayHours = 0


class FeedUpdate(Input):
    description: Description | None = None
    delay_hours: DelayHours | None = None


class FeedView(BaseModel):
    name: str
    description: str
    delay_hours: int
    created_at: datetime


class FeedList(BaseModel):
    feeds: list[FeedView]


# --- admin: reports, audit ---------------------------------------------------------------


class LevelCount(BaseModel):
    level: int | None = Field(description="null: no level applied")
    hosts: int


class TargetLevels(BaseModel):
    """How many hosts of the fleet are at each applied level of one target."""

    target: str
    kind: str
    name: str
    latest_level: int | None = Field(description="highest published level, any feed")
    levels: list[LevelCount]


class LevelsReport(BaseModel):
    targets: list[TargetLevels]


class AuditEntry(BaseModel):
    """One admin action: actor names the admin token (or cli), target the object acted on."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    details: dict[str, Any]


class AuditList(BaseModel):
    entries: list[AuditEntry]
    next_before: int | None = Field(description="pass as `before` to get older entries")


class Health(BaseModel):
    status: Literal["ok"]
    schema_revision: str | None


# --- vulnerabilities ------------------------------------------------------------------------


class LivePatchView(BaseModel):
    target: str
    level: int
    bundle_sha256: str
    effective_version: str


class ProcessView(BaseModel):
    pid: int
    name: str


class FindingView(BaseModel):
    """One host's standing against one CVE (docs/vulnerabilities.md names the statuses)."""

    cve: str
    source: str
    status: str
    installed_version: str | None
    fixed_version: str | None
    urgency: str | None
    cvss: float | None
    nodsa: str | None
    live_patch: LivePatchView | None = Field(description="the applied level that closes it")
    available_bundle: LivePatchView | None = Field(
        description="a published level that would close it, not applied (held by the feed's "
        "delay or a pin, or not fetched yet)"
    )
    processes: list[ProcessView] = Field(description="processes still running flawed code")
    kernel_reboot: bool
    feeds: list[str]


class HostVulnerabilities(BaseModel):
    host_id: str
    hostname: str
    release: str
    counts: dict[str, int] = Field(description="findings per status, resolved ones included")
    effective_versions: dict[str, str] = Field(
        description="source package -> the newest version whose fixes since the installed "
        "one are all applied live"
    )
    findings: list[FindingView] = Field(
        description="every finding except not-affected and fixed-by-package (counted only)"
    )
    inputs_digest: str = Field(description="equal on the next check-in: the same findings")


class CveHost(BaseModel):
    host_id: str
    hostname: str
    finding: FindingView


class CveHosts(BaseModel):
    cve: str
    counts: dict[str, int] = Field(description="hosts per status")
    hosts: list[CveHost]


class FleetVulnerabilities(BaseModel):
    hosts: int
    counts: dict[str, dict[str, int]] = Field(
        description="findings (host and CVE pairs) per status, then per urgency ('none': "
        "no feed gives one)"
    )
    exposed_hosts: int = Field(description="hosts with at least one exposed finding")

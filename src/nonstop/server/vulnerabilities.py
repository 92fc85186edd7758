"""The fleet's vulnerability findings, as each server process keeps them.

A ``Vulnerabilities`` object holds a ``nonstop.cve`` matcher built from the
stored advisories and the live (not retired) bundles, rebuilt when either
changed (an advisory import's id, the bundles' count and newest change;
read again after the catalog's TTL). Hosts are read back
from their rows: the inventory of their last check-in and the package list
their digest names.

One host's findings are computed on request; the fleet's (per-CVE host lists,
counts, metrics) come from a ``Fleet`` recomputed on first use and when the
data changed, and kept current by each check-in this process answers. With
several server processes, a process sees other processes' check-ins at its
next recompute (``FLEET_TTL_SECONDS``).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, func, select

from nonstop.bundle.manifest import Manifest
from nonstop.cve.bundles import bundle_advisories, live_patch_levels
from nonstop.cve.errors import FeedError
from nonstop.cve.fleet import Fleet
from nonstop.cve.index import AdvisoryIndex
from nonstop.cve.levels import PublishedLevels
from nonstop.cve.matching import HostAssessment, HostError, Matcher
from nonstop.cve.model import (
    Advisory,
    HostState,
    InstalledPackage,
    ProcessRef,
    RunningKernel,
    RunningLibrary,
    release_key,
)
from nonstop.server import advisories
from nonstop.server.db import Database
from nonstop.server.inventory import TargetRow, stored_targets
from nonstop.server.logs import logger
from nonstop.server.models import bundles, hosts, package_sets

FLEET_TTL_SECONDS = 300.0
_STATE_COLUMNS = (
    hosts.c.id,
    hosts.c.hostname,
    hosts.c.distro_id,
    hosts.c.distro_version,
    hosts.c.inventory,
    hosts.c.packages_digest,
)
"""What ``_row_state`` reads of a hosts row."""
_USERSPACE_PREFIX = "userspace:"


class Vulnerabilities:
    """This process's matcher and fleet findings (module docstring); thread-safe."""

    def __init__(self, db: Database, ttl_seconds: float) -> None:
        """TTL_SECONDS: how long the data's stamp is trusted before it is read again."""
        self._db = db
        self._ttl = ttl_seconds
        self._lock = threading.RLock()
        self._recompute_lock = threading.Lock()
        self._matcher: Matcher | None = None
        self._stamp: tuple[object, ...] | None = None
        self._checked_at = 0.0
        self._fleet: Fleet | None = None
        self._fleet_at = 0.0

    # -- data ---------------------------------------------------------------------

    def matcher(self) -> Matcher:
        """The matcher of the data stored now (rebuilt if it changed)."""
        with self._lock:
            now = time.monotonic()
            if self._matcher is not None and now - self._checked_at < self._ttl:
                return self._matcher
            self._checked_at = now
            with self._db.read() as connection:
                stamp = _stamp(connection)
                if self._matcher is None or stamp != self._stamp:
                    published = _live_bundles(connection)
                    stored = advisories.load(connection)
                    index = AdvisoryIndex([*stored, *_bundle_advisories(published)])
                    levels = PublishedLevels(live_patch_levels(published))
                    self._matcher = Matcher(index, levels)
                    self._stamp = stamp
                    self._fleet = None
            return self._matcher

    @property
    def stamp(self) -> str:
        """Identifies the data findings are computed from (part of the inputs digest)."""
        self.matcher()
        return repr(self._stamp)

    # -- one host -------------------------------------------------------------------

    def assess(self, connection: Connection, host_id: str) -> tuple[HostState, HostAssessment]:
        """HOST_ID's findings from its stored inventory; KeyError if it has none."""
        row = connection.execute(
            select(*_STATE_COLUMNS).where(hosts.c.id == host_id, hosts.c.unregistered_at.is_(None))
        ).first()
        if row is None:
            raise KeyError(host_id)
        matcher = self.matcher()
        state = _row_state(row, _package_rows(connection, row.packages_digest), matcher)
        return state, matcher.assess(state, row.packages_digest)

    def checkin(
        self,
        host_id: str,
        hostname: str,
        os_id: str,
        os_version: str | None,
        targets: list[TargetRow],
        packages_digest: str | None,
    ) -> str:
        """Update this process's fleet for one check-in; the digest of the findings' inputs,
        which the host compares to decide whether to fetch its findings again."""
        matcher = self.matcher()
        with self._lock:
            fleet = self._fleet
        digest = inputs_digest(self.stamp, packages_digest, targets)
        if fleet is None:
            return digest
        release = release_key(os_id, os_version or "")
        known = packages_digest is not None and matcher.has_package_set(release, packages_digest)
        packages: tuple[InstalledPackage, ...] = ()
        if not known:
            with self._db.read() as connection:
                packages = _package_rows(connection, packages_digest)
        state = host_state(host_id, hostname, os_id, os_version, targets, packages, matcher.levels)
        try:
            with self._lock:
                if self._fleet is fleet:
                    fleet.checkin(state, packages_digest)
        except HostError:
            pass  # left out of the fleet's figures; its own findings say why
        return digest

    # -- the fleet ------------------------------------------------------------------

    def every_host(self) -> Iterator[tuple[HostState, HostAssessment]]:
        """Every host with its findings, assessed now (for fleet documents)."""
        matcher = self.matcher()
        with self._db.read() as connection:
            for state, digest in _every_host(connection, matcher):
                try:
                    yield state, matcher.assess(state, digest)
                except HostError:
                    continue  # its own findings say why; a fleet document leaves it out

    def computed_fleet(self) -> Fleet | None:
        """The fleet as last computed, stale or not, without computing it (metrics)."""
        with self._lock:
            return self._fleet

    def fleet(self) -> Fleet:
        """Every host's findings, recomputed when stale (module docstring). The recompute runs
        outside the lock check-ins take, one at a time."""
        matcher = self.matcher()
        with self._recompute_lock:
            with self._lock:
                fleet = self._fleet
                fresh = time.monotonic() - self._fleet_at < FLEET_TTL_SECONDS
                if fleet is not None and fleet.matcher is matcher and fresh:
                    return fleet
            fleet = Fleet(matcher)
            with self._db.read() as connection:
                fleet.recompute(_every_host(connection, matcher))
            with self._lock:
                self._fleet, self._fleet_at = fleet, time.monotonic()
            return fleet


def host_state(
    host_id: str,
    hostname: str,
    os_id: str | None,
    os_version: str | None,
    targets: list[TargetRow],
    packages: tuple[InstalledPackage, ...] | list[InstalledPackage],
    levels: PublishedLevels,
) -> HostState:
    """What matching needs of a host, from its stored inventory and package list."""
    kernel = None
    libraries = []
    for target in targets:
        if target.kind == "kernel":
            key = target.target_key
            if not levels.has(key) and target.alt_target_key and levels.has(target.alt_target_key):
                key = target.alt_target_key  # the published levels name its version digest
            kernel = RunningKernel(
                release=target.name,
                source_version=target.source_version,
                target_key=key,
                applied_level=target.applied_level,
            )
        elif target.target_key.startswith(_USERSPACE_PREFIX):
            named = tuple(ProcessRef(pid, name) for pid, name in target.unpatched)
            libraries.append(
                RunningLibrary(
                    build_id=target.target_key.removeprefix(_USERSPACE_PREFIX),
                    soname=target.name,
                    package=target.package_name,
                    package_version=target.package_version,
                    deleted=target.deleted,
                    applied_level=target.applied_level,
                    processes=named,
                    unpatched=named,
                    partial_level=target.partial_level,
                    process_count=target.processes,
                )
            )
    return HostState(
        host_id=host_id,
        hostname=hostname,
        release=release_key(os_id or "", os_version or ""),
        packages=tuple(packages),
        libraries=tuple(libraries),
        kernel=kernel,
    )


def inputs_digest(stamp: str, packages_digest: str | None, targets: list[TargetRow]) -> str:
    """Identifies what a host's findings are computed from: equal inputs, equal findings."""
    running = sorted(
        (t.target_key, t.applied_level, t.partial_level, t.deleted, t.unpatched, t.source_version)
        for t in targets
    )
    text = json.dumps([stamp, packages_digest, running], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _stamp(connection: Connection) -> tuple[object, ...]:
    live = connection.execute(
        select(func.count(), func.max(bundles.c.published_at), func.max(bundles.c.retired_at))
    ).one()
    return (advisories.import_stamp(connection), *live)


def _live_bundles(connection: Connection) -> list[tuple[Manifest, str]]:
    rows = connection.execute(
        select(bundles.c.manifest, bundles.c.sha256).where(bundles.c.retired_at.is_(None))
    )
    return [(Manifest.from_dict(row.manifest), row.sha256) for row in rows]


def _bundle_advisories(published: list[tuple[Manifest, str]]) -> tuple[Advisory, ...]:
    """What the bundles built from a distribution update say is fixed in it (feed
    ``bundles``); a manifest the feed refuses leaves that feed out, logged."""
    try:
        return bundle_advisories(manifest for manifest, _ in published).advisories
    except FeedError as exc:
        logger().warning(
            "bundle CVE lists not used as a feed", extra={"fields": {"error": str(exc)}}
        )
        return ()


def _package_rows(connection: Connection, digest: str | None) -> tuple[InstalledPackage, ...]:
    if digest is None:
        return ()
    text = connection.execute(
        select(package_sets.c.packages).where(package_sets.c.digest == digest)
    ).scalar()
    return _parse_packages(text)


def _parse_packages(text: str | None) -> tuple[InstalledPackage, ...]:
    return tuple(InstalledPackage(*row) for row in json.loads(text)) if text else ()


def _every_host(connection: Connection, matcher: Matcher) -> Iterator[tuple[HostState, str | None]]:
    """Every registered host that checked in, in package-list order (sets computed once)."""
    query = (
        select(*_STATE_COLUMNS, package_sets.c.packages)
        .outerjoin(package_sets, package_sets.c.digest == hosts.c.packages_digest)
        .where(hosts.c.unregistered_at.is_(None), hosts.c.inventory.is_not(None))
        .order_by(hosts.c.packages_digest, hosts.c.id)
    )
    last_digest: str | None = None
    packages: tuple[InstalledPackage, ...] = ()
    for row in connection.execute(query, execution_options={"yield_per": 1000}):
        if row.packages_digest != last_digest or not packages:
            # One parse per package list; the matcher computes each set once by its digest.
            packages = _parse_packages(row.packages)
            last_digest = row.packages_digest
        yield _row_state(row, packages, matcher), row.packages_digest


def _row_state(row: Any, packages: tuple[InstalledPackage, ...], matcher: Matcher) -> HostState:
    """A hosts row's state (id, hostname, distro, inventory) with its PACKAGES."""
    return host_state(
        row.id,
        row.hostname,
        row.distro_id,
        row.distro_version,
        stored_targets(row.inventory),
        packages,
        matcher.levels,
    )

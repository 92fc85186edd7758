"""The check-in: record a host's inventory and answer, per target, what to apply.

The hot path of a fleet, so it is a few statements in one transaction:
authenticate (one primary-key read), record the check-in id (an INSERT that
ignores a duplicate: a retried check-in is answered again but recorded once),
and only when the inventory changed since the last check-in (compared by
digest) replace the host's target rows with one bulk INSERT. The answer is
computed from the in-memory catalog, never from a query per target.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, Insert, Row, bindparam, delete, insert, update

from nonstop.bundle.manifest import KernelTarget, UserspaceTarget
from nonstop.server.catalog import CatalogSnapshot
from nonstop.server.db import Database
from nonstop.server.models import UTCDateTime, checkins, host_targets, hosts, utcnow
from nonstop.server.policy import Candidate, decide, parse_sticky
from nonstop.server.schemas import BundleRef, CheckinRequest, CheckinResponse, TargetDecision


@dataclass(frozen=True)
class TargetRow:
    """One target of the inventory, as stored in host_targets."""

    target_key: str
    alt_target_key: str | None
    kind: str
    name: str
    package_name: str | None
    package_version: str | None
    processes: int
    applied_level: int | None

    def row(self, host_id: str) -> dict[str, object]:
        return {
            "host_id": host_id,
            "target_key": self.target_key,
            "alt_target_key": self.alt_target_key,
            "kind": self.kind,
            "name": self.name,
            "package_name": self.package_name,
            "package_version": self.package_version,
            "processes": self.processes,
            "applied_level": self.applied_level,
        }

    def identities(self) -> tuple[str, ...]:
        return (
            (self.target_key,)
            if self.alt_target_key is None
            else (
                self.target_key,
                self.alt_target_key,
            )
        )


def inventory_targets(request: CheckinRequest) -> list[TargetRow]:
    """The kernel and every library, one row per target (duplicate build-ids merged)."""
    rows: list[TargetRow] = []
    kernel = request.kernel
    if kernel is not None:
        identity = KernelTarget(
            release=kernel.release, build_id=kernel.build_id, version_digest=kernel.version_digest
        )
        alt = None
        if kernel.build_id and kernel.version_digest:
            alt = KernelTarget(release=kernel.release, version_digest=kernel.version_digest).key
        rows.append(
            TargetRow(
                identity.key, alt, "kernel", kernel.release, None, None, 0, kernel.applied_level
            )
        )
    merged: dict[str, TargetRow] = {}
    for lib in request.libraries:
        key = UserspaceTarget(build_id=lib.build_id, soname=lib.soname).key
        seen = merged.get(key)
        levels = [level for level in (lib.applied_level, seen and seen.applied_level) if level]
        merged[key] = TargetRow(
            target_key=key,
            alt_target_key=None,
            kind="userspace",
            name=lib.soname,
            package_name=lib.package.name if lib.package else None,
            package_version=lib.package.version if lib.package else None,
            processes=lib.processes + (seen.processes if seen else 0),
            # Some processes may lag behind: report the lowest level so the upgrade is offered.
            applied_level=min(levels) if levels else None,
        )
    rows.extend(merged.values())
    return rows


def inventory_digest(request: CheckinRequest) -> str:
    """Identifies the inventory (everything but the check-in id) for change detection."""
    return hashlib.sha256(request.model_dump_json(exclude={"checkin_id"}).encode()).hexdigest()


# Built once: the hot path only binds values (no statement construction per request).
_DELETE_TARGETS = delete(host_targets).where(host_targets.c.host_id == bindparam("h_id"))
_INSERT_TARGETS = insert(host_targets)
_UPDATE_HOST = (
    update(hosts)
    .where(hosts.c.id == bindparam("h_id"))
    .values(
        hostname=bindparam("h_hostname"),
        distro_id=bindparam("h_distro_id"),
        distro_version=bindparam("h_distro_version"),
        kernel_release=bindparam("h_kernel_release"),
        kernel_build_id=bindparam("h_kernel_build_id"),
        kernel_version_digest=bindparam("h_kernel_version_digest"),
        agent_version=bindparam("h_agent_version"),
        inventory_digest=bindparam("h_digest"),
        last_checkin_at=bindparam("h_now", type_=UTCDateTime),
        checkin_count=hosts.c.checkin_count + 1,
    )
)


@cache
def _insert_checkin(db: Database) -> Insert:
    return db.insert_ignoring_duplicates(checkins, "host_id", "checkin_id").returning(checkins.c.id)


def record(
    db: Database, connection: Connection, host: Row[Any], request: CheckinRequest
) -> tuple[bool, list[TargetRow]]:
    """Store the check-in in CONNECTION's transaction; (recorded, targets). False: a replay."""
    now = utcnow()
    inserted = connection.execute(
        _insert_checkin(db),
        {
            "host_id": host.id,
            "checkin_id": str(request.checkin_id),
            "received_at": now,
            "agent_version": request.agent_version,
        },
    ).first()
    targets = inventory_targets(request)
    if inserted is None:
        return False, targets
    digest = inventory_digest(request)
    if digest != host.inventory_digest:
        if host.inventory_digest is not None:  # a first check-in has no rows to replace
            connection.execute(_DELETE_TARGETS, {"h_id": host.id})
        if targets:
            connection.execute(_INSERT_TARGETS, [target.row(host.id) for target in targets])
    kernel = request.kernel
    connection.execute(
        _UPDATE_HOST,
        {
            "h_id": host.id,
            "h_hostname": request.hostname,
            "h_distro_id": request.os.id,
            "h_distro_version": request.os.version_id,
            "h_kernel_release": kernel.release if kernel else None,
            "h_kernel_build_id": kernel.build_id if kernel else None,
            "h_kernel_version_digest": kernel.version_digest if kernel else None,
            "h_agent_version": request.agent_version,
            "h_digest": digest,
            "h_now": now,
        },
    )
    return True, targets


def answer(
    host: Row[Any],
    request: CheckinRequest,
    targets: list[TargetRow],
    catalog: CatalogSnapshot,
    recorded: bool,
    next_checkin_seconds: int,
    now: datetime,
) -> CheckinResponse:
    """Per target: the bundle to apply under the host's feed and pin, or none and why."""
    sticky = parse_sticky(host.sticky)
    delay = catalog.feed_delays.get(host.feed, 0)
    decisions = []
    for target in targets:
        candidates: list[Candidate] = []
        for key in target.identities():
            candidates.extend(catalog.by_target.get(key, ()))
        decision = decide(
            candidates,
            delay_hours=delay,
            sticky=sticky,
            applied_level=target.applied_level,
            now=now,
        )
        bundle = decision.bundle
        decisions.append(
            TargetDecision(
                target=target.target_key,
                kind="kernel" if target.kind == "kernel" else "userspace",
                name=target.name,
                applied_level=target.applied_level,
                action=decision.action,
                reason=decision.reason,
                bundle=None
                if bundle is None
                else BundleRef(
                    sha256=bundle.sha256,
                    level=bundle.level,
                    size=bundle.size,
                    effective_version=bundle.effective_version,
                    url=f"/api/v1/bundles/{bundle.sha256}",
                ),
            )
        )
    return CheckinResponse(
        host_id=host.id,
        checkin_id=request.checkin_id,
        recorded=recorded,
        feed=host.feed,
        server_time=now,
        next_checkin_seconds=next_checkin_seconds,
        targets=decisions,
    )

"""The check-in: record a host's inventory and answer, per target, what to apply.

The hot path of a fleet. It authenticates the host (a primary-key read), records
the check-in id (an INSERT that ignores a duplicate: a retried
check-in is answered again but recorded once), updates the host row, and only
when the inventory changed since the last check-in (compared by digest)
replaces the host's target rows. All of it commits together or not at all:

- on PostgreSQL as ONE statement, authentication included (data-modifying
  CTEs, the target rows passed as one JSON array), sent in autocommit
  mode from the event loop: one round trip, no BEGIN or COMMIT, no worker
  thread;
- on SQLite (in-process, no round trips to save) as a few statements in one
  write transaction.

The answer is computed from the in-memory catalog, never from a query per
target.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from functools import cache, lru_cache
from typing import Any, NamedTuple

import psycopg
from pydantic_core import to_json
from sqlalchemy import Connection, Insert, Row, bindparam, delete, insert, update

from nonstop.bundle.manifest import KernelTarget, UserspaceTarget
from nonstop.server.auth import hash_secret
from nonstop.server.catalog import CatalogSnapshot
from nonstop.server.db import Database
from nonstop.server.models import UTCDateTime, checkins, host_targets, hosts, utcnow
from nonstop.server.policy import Candidate, decide, parse_sticky, strictest
from nonstop.server.schemas import CheckinRequest


class TargetRow(NamedTuple):
    """One target of the inventory, as stored in host_targets (a tuple: cheap to hash and send)."""

    target_key: str
    alt_target_key: str | None
    kind: str
    name: str
    package_name: str | None
    package_version: str | None
    processes: int
    applied_level: int | None

    def row(self, host_id: str) -> dict[str, object]:
        return {"host_id": host_id, **self._asdict()}

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
        key = _userspace_key(lib.build_id)
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


@lru_cache(maxsize=65536)  # a fleet runs few distinct library builds
def _userspace_key(build_id: str) -> str:
    return UserspaceTarget(build_id=build_id, soname="").key


def inventory_json(targets: list[TargetRow]) -> bytes:
    """The target rows as a JSON array of objects keyed by host_targets' column names.

    Serialized by pydantic-core: several times faster than json.dumps and _asdict here.
    """
    return to_json([dict(zip(TargetRow._fields, target, strict=True)) for target in targets])


def inventory_digest(targets_json: bytes) -> str:
    """Identifies the stored target rows, so an unchanged inventory skips rewriting them."""
    return hashlib.sha256(targets_json).hexdigest()


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
    digest = inventory_digest(inventory_json(targets))
    if digest != host.inventory_digest:
        if host.inventory_digest is not None:  # a first check-in has no rows to replace
            connection.execute(_DELETE_TARGETS, {"h_id": host.id})
        if targets:
            connection.execute(_INSERT_TARGETS, [target.row(host.id) for target in targets])
    connection.execute(_UPDATE_HOST, _host_values(host.id, request, digest, now))
    return True, targets


def _host_values(
    host_id: str, request: CheckinRequest, digest: str, now: datetime
) -> dict[str, object]:
    kernel = request.kernel
    return {
        "h_id": host_id,
        "h_hostname": request.hostname,
        "h_distro_id": request.os.id,
        "h_distro_version": request.os.version_id,
        "h_kernel_release": kernel.release if kernel else None,
        "h_kernel_build_id": kernel.build_id if kernel else None,
        "h_kernel_version_digest": kernel.version_digest if kernel else None,
        "h_agent_version": request.agent_version,
        "h_digest": digest,
        "h_now": now,
    }


# The whole check-in in one PostgreSQL statement, authentication included: the host row
# is found by id AND secret hash (a wrong, unknown or unregistered token matches no row,
# so nothing is written and no row comes back). Comparing SHA-256 digests of the secret
# in SQL leaks, by timing, at most how much of the digest of a guess matches, which says
# nothing about the secret (see auth.py). Its parts see one snapshot and run in no set
# order, so they touch disjoint rows: target rows still reported are upserted, the
# others deleted, and only when the inventory digest changed. A host's first inventory
# (no digest yet: no target rows) is a plain INSERT, cheaper than an upsert. Nothing is
# written unless the check-in id is new. The target rows arrive as one JSON array of
# objects (the text the digest hashes), read by json_populate_recordset in one pass:
# cheaper for PostgreSQL than a field extraction per value, and for Python than array
# params.
_RECORD_POSTGRESQL = """
WITH host AS (
    SELECT id, feed, sticky, inventory_digest FROM hosts
    WHERE id = %(h_id)s AND secret_hash = %(secret_hash)s AND unregistered_at IS NULL
), recorded AS (
    INSERT INTO checkins (host_id, checkin_id, received_at, agent_version)
    SELECT id, %(checkin_id)s, %(h_now)s, %(h_agent_version)s FROM host
    ON CONFLICT (host_id, checkin_id) DO NOTHING
    RETURNING id
), changed AS (
    SELECT FROM host, recorded WHERE host.inventory_digest IS DISTINCT FROM %(h_digest)s
), updated AS (
    UPDATE hosts SET
        hostname = %(h_hostname)s, distro_id = %(h_distro_id)s,
        distro_version = %(h_distro_version)s, kernel_release = %(h_kernel_release)s,
        kernel_build_id = %(h_kernel_build_id)s,
        kernel_version_digest = %(h_kernel_version_digest)s,
        agent_version = %(h_agent_version)s, inventory_digest = %(h_digest)s,
        last_checkin_at = %(h_now)s, checkin_count = checkin_count + 1
    WHERE id = %(h_id)s AND EXISTS (SELECT FROM recorded)
), incoming AS (
    SELECT target_key, alt_target_key, kind, name, package_name, package_version,
           processes, applied_level
    FROM json_populate_recordset(NULL::host_targets, %(targets)s::json)
    WHERE EXISTS (SELECT FROM changed)
), dropped AS (
    DELETE FROM host_targets
    WHERE host_id = %(h_id)s AND EXISTS (SELECT FROM changed)
      AND target_key NOT IN (SELECT target_key FROM incoming)
), first AS (
    INSERT INTO host_targets (host_id, target_key, alt_target_key, kind, name,
                              package_name, package_version, processes, applied_level)
    SELECT %(h_id)s, * FROM incoming WHERE (SELECT inventory_digest FROM host) IS NULL
), kept AS (
    INSERT INTO host_targets (host_id, target_key, alt_target_key, kind, name,
                              package_name, package_version, processes, applied_level)
    SELECT %(h_id)s, * FROM incoming WHERE (SELECT inventory_digest FROM host) IS NOT NULL
    ON CONFLICT (host_id, target_key) DO UPDATE SET
        alt_target_key = excluded.alt_target_key, kind = excluded.kind,
        name = excluded.name, package_name = excluded.package_name,
        package_version = excluded.package_version, processes = excluded.processes,
        applied_level = excluded.applied_level
)
SELECT id, feed, sticky, EXISTS (SELECT FROM recorded) AS recorded FROM host
"""


# The statement's parameters for TargetRow's fields, in order.
class CheckedInHost(NamedTuple):
    """What the check-in statement returns about the host: enough to answer it."""

    id: str
    feed: str
    sticky: str | None
    recorded: bool


async def record_postgresql(
    connection: psycopg.AsyncConnection[Any], host_id: str, secret: str, request: CheckinRequest
) -> tuple[CheckedInHost | None, list[TargetRow]]:
    """As ``record``, authentication included, as one autocommitted statement on an asyncio
    psycopg connection; the host is None when the secret is not that host's (nothing stored).
    """
    targets = inventory_targets(request)
    rows = inventory_json(targets)
    values = _host_values(host_id, request, inventory_digest(rows), utcnow()) | {
        "secret_hash": hash_secret(secret),
        "checkin_id": str(request.checkin_id),
        "targets": rows.decode(),
    }
    cursor = await connection.execute(_RECORD_POSTGRESQL, values, prepare=True)
    row = await cursor.fetchone()
    return (None if row is None else CheckedInHost(*row)), targets


def answer(
    host: Any,
    request: CheckinRequest,
    targets: list[TargetRow],
    catalog: CatalogSnapshot,
    recorded: bool,
    next_checkin_seconds: int,
    now: datetime,
) -> bytes:
    """Per target: the bundle to apply under the host's feed and pin, or none and why.

    The JSON body of a ``CheckinResponse`` (the route's documented response model). It is
    built as plain data and serialized by pydantic-core, in the same formats as the model,
    because building one pydantic model per target costs more than everything else here.
    """
    sticky = strictest(parse_sticky(host.sticky), parse_sticky(request.sticky))
    delay = max(catalog.feed_delays.get(host.feed, 0), request.delay_hours or 0)
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
            {
                "target": target.target_key,
                "kind": target.kind,
                "name": target.name,
                "applied_level": target.applied_level,
                "action": decision.action,
                "reason": decision.reason,
                "bundle": None
                if bundle is None
                else {
                    "sha256": bundle.sha256,
                    "level": bundle.level,
                    "size": bundle.size,
                    "effective_version": bundle.effective_version,
                    "published_at": bundle.published_at,
                    "url": f"/api/v1/bundles/{bundle.sha256}",
                },
            }
        )
    return to_json(
        {
            "host_id": host.id,
            "checkin_id": request.checkin_id,
            "recorded": recorded,
            "feed": host.feed,
            "server_time": now,
            "next_checkin_seconds": next_checkin_seconds,
            "targets": decisions,
        }
    )

"""The check-in: record a host's inventory and answer, per target, what to apply.

The hot path of a fleet. It authenticates the host (a primary-key read), records
the check-in id (an INSERT that ignores a duplicate: a retried
check-in is answered again but recorded once) and updates the host row, whose
``inventory`` column holds the host's targets as one JSON array, rewritten only
when it changed since the last check-in (compared by digest). All of it commits
together or not at all:

- on PostgreSQL as ONE statement, authentication included (data-modifying
  CTEs), sent in autocommit mode from the event loop: one round trip, no
  BEGIN or COMMIT, no worker thread;
- on SQLite (in-process, no round trips to save) as two statements in one
  write transaction.

The answer is computed from the in-memory catalog, never from a query per
target.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any, NamedTuple

import psycopg
from pydantic_core import to_json
from sqlalchemy import Boolean, Connection, Insert, Row, bindparam, case, select, update

from nonstop.server.auth import hash_secret
from nonstop.server.catalog import CatalogSnapshot
from nonstop.server.db import Database
from nonstop.server.inventory import TargetRow, inventory_digest, inventory_json, inventory_targets
from nonstop.server.models import UTCDateTime, checkins, hosts, package_sets, utcnow
from nonstop.server.policy import Candidate, decide, parse_sticky, strictest
from nonstop.server.schemas import CheckinRequest, InstalledPackages

# Built once: the hot path only binds values (no statement construction per request).
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
        inventory=case(
            (hosts.c.inventory_digest == bindparam("h_digest"), hosts.c.inventory),
            else_=bindparam("targets"),
        ),
        inventory_digest=bindparam("h_digest"),
        last_checkin_at=bindparam("h_now", type_=UTCDateTime),
        checkin_count=hosts.c.checkin_count + 1,
        # An agent that reports no package list (an older one) leaves the stored digest.
        packages_digest=case(
            (bindparam("p_keep", type_=Boolean), hosts.c.packages_digest),
            else_=bindparam("p_digest"),
        ),
    )
)
_PACKAGE_SET_KNOWN = select(package_sets.c.digest).where(
    package_sets.c.digest == bindparam("p_digest")
)


class Recorded(NamedTuple):
    """What ``record`` stored: whether the check-in was new, the targets, and the digest of
    the package list the server now holds for the host (None: it holds none)."""

    recorded: bool
    targets: list[TargetRow]
    packages_digest: str | None


@cache
def _insert_checkin(db: Database) -> Insert:
    return db.insert_ignoring_duplicates(checkins, "host_id", "checkin_id").returning(checkins.c.id)


@cache
def _insert_package_set(db: Database) -> Insert:
    return db.insert_ignoring_duplicates(package_sets, "digest")


def record(
    db: Database, connection: Connection, host: Row[Any], request: CheckinRequest
) -> Recorded:
    """Store the check-in in CONNECTION's transaction (``recorded`` False: a replay)."""
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
        return Recorded(False, targets, host.packages_digest)
    values = _host_values(host.id, request, inventory_json(targets), now)
    packages = request.packages
    digest: str | None = host.packages_digest
    if packages is not None:
        digest = packages.digest
        if packages.items is not None:
            connection.execute(_insert_package_set(db), _package_set_values(packages, now))
        elif connection.execute(_PACKAGE_SET_KNOWN, values).first() is None:
            digest = values["p_digest"] = None  # unknown list: the answer asks for it
    connection.execute(_UPDATE_HOST, values)
    return Recorded(True, targets, digest)


def _package_set_values(packages: InstalledPackages, now: datetime) -> dict[str, object]:
    return {
        "digest": packages.digest,
        "manager": packages.manager,
        "packages": to_json(packages.items).decode(),
        "created_at": now,
    }


def _host_values(
    host_id: str, request: CheckinRequest, targets_json: bytes, now: datetime
) -> dict[str, object]:
    kernel = request.kernel
    packages = request.packages
    return {
        "h_id": host_id,
        "h_hostname": request.hostname,
        "h_distro_id": request.os.id,
        "h_distro_version": request.os.version_id,
        "h_kernel_release": kernel.release if kernel else None,
        "h_kernel_build_id": kernel.build_id if kernel else None,
        "h_kernel_version_digest": kernel.version_digest if kernel else None,
        "h_agent_version": request.agent_version,
        "h_digest": inventory_digest(targets_json),
        "targets": targets_json.decode(),
        "h_now": now,
        "p_keep": packages is None,
        "p_digest": packages.digest if packages else None,
    }


# The whole check-in in one PostgreSQL statement, authentication included: the host row
# is found by id AND secret hash (a wrong, unknown or unregistered token matches no row,
# so nothing is written and no row comes back). Comparing SHA-256 digests of the secret
# in SQL leaks, by timing, at most how much of the digest of a guess matches, which says
# nothing about the secret (see auth.py). Nothing is written unless the check-in id is
# new. An unchanged inventory keeps its stored value (same digest): PostgreSQL then
# reuses the compressed out-of-line copy instead of writing it again.
_RECORD_POSTGRESQL = """
WITH host AS (
    SELECT id, feed, sticky, packages_digest FROM hosts
    WHERE id = %(h_id)s AND secret_hash = %(secret_hash)s AND unregistered_at IS NULL
), recorded AS (
    INSERT INTO checkins (host_id, checkin_id, received_at, agent_version)
    SELECT id, %(checkin_id)s, %(h_now)s, %(h_agent_version)s FROM host
    ON CONFLICT (host_id, checkin_id) DO NOTHING
    RETURNING id
), package_set AS (
    INSERT INTO package_sets (digest, manager, packages, created_at)
    SELECT %(p_digest)s, %(p_manager)s, %(p_items)s, %(h_now)s FROM recorded
    WHERE %(p_items)s::text IS NOT NULL
    ON CONFLICT (digest) DO NOTHING
), packages AS (
    SELECT CASE
        WHEN %(p_keep)s THEN (SELECT packages_digest FROM host)
        WHEN %(p_items)s::text IS NOT NULL
             OR EXISTS (SELECT FROM package_sets WHERE digest = %(p_digest)s) THEN %(p_digest)s
    END AS digest
), updated AS (
    UPDATE hosts SET
        hostname = %(h_hostname)s, distro_id = %(h_distro_id)s,
        distro_version = %(h_distro_version)s, kernel_release = %(h_kernel_release)s,
        kernel_build_id = %(h_kernel_build_id)s,
        kernel_version_digest = %(h_kernel_version_digest)s,
        agent_version = %(h_agent_version)s,
        inventory = CASE WHEN inventory_digest = %(h_digest)s THEN inventory
                         ELSE %(targets)s END,
        inventory_digest = %(h_digest)s,
        last_checkin_at = %(h_now)s, checkin_count = checkin_count + 1,
        packages_digest = (SELECT digest FROM packages)
    WHERE id = %(h_id)s AND EXISTS (SELECT FROM recorded)
)
SELECT id, feed, sticky, EXISTS (SELECT FROM recorded) AS recorded,
    CASE WHEN EXISTS (SELECT FROM recorded) THEN (SELECT digest FROM packages)
         ELSE packages_digest END AS packages_digest
FROM host
"""


class CheckedInHost(NamedTuple):
    """What the check-in statement returns about the host: enough to answer it."""

    id: str
    feed: str
    sticky: str | None
    recorded: bool
    packages_digest: str | None


async def record_postgresql(
    connection: psycopg.AsyncConnection[Any], host_id: str, secret: str, request: CheckinRequest
) -> tuple[CheckedInHost | None, list[TargetRow]]:
    """As ``record``, authentication included, as one autocommitted statement on an asyncio
    psycopg connection; the host is None when the secret is not that host's, or the host is
    unregistered (nothing stored).
    """
    targets = inventory_targets(request)
    now = utcnow()
    packages = request.packages
    values = _host_values(host_id, request, inventory_json(targets), now) | {
        "secret_hash": hash_secret(secret),
        "checkin_id": str(request.checkin_id),
        "p_manager": packages.manager if packages else None,
        "p_items": None
        if packages is None or packages.items is None
        else _package_set_values(packages, now)["packages"],
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
    packages_digest: str | None = None,
    vulnerabilities_digest: str | None = None,
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
                "held_back": [
                    {"level": h.level, "published_at": h.published_at, "release_at": h.release_at}
                    for h in decision.held
                ],
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
            "packages_digest": packages_digest,
            "vulnerabilities_digest": vulnerabilities_digest,
        }
    )

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
from sqlalchemy import Connection, Insert, Row, bindparam, case, update

from nonstop.server.auth import hash_secret
from nonstop.server.catalog import CatalogSnapshot
from nonstop.server.db import Database
from nonstop.server.inventory import TargetRow, inventory_digest, inventory_json, inventory_targets
from nonstop.server.models import UTCDateTime, checkins, hosts, utcnow
from nonstop.server.policy import Candidate, decide, parse_sticky, strictest
from nonstop.server.schemas import CheckinRequest

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
    connection.execute(_UPDATE_HOST, _host_values(host.id, request, inventory_json(targets), now))
    return True, targets


def _host_values(
    host_id: str, request: CheckinRequest, targets_json: bytes, now: datetime
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
        "h_digest": inventory_digest(targets_json),
        "targets": targets_json.decode(),
        "h_now": now,
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
    SELECT id, feed, sticky FROM hosts
    WHERE id = %(h_id)s AND secret_hash = %(secret_hash)s AND unregistered_at IS NULL
), recorded AS (
    INSERT INTO checkins (host_id, checkin_id, received_at, agent_version)
    SELECT id, %(checkin_id)s, %(h_now)s, %(h_agent_version)s FROM host
    ON CONFLICT (host_id, checkin_id) DO NOTHING
    RETURNING id
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
        last_checkin_at = %(h_now)s, checkin_count = checkin_count + 1
    WHERE id = %(h_id)s AND EXISTS (SELECT FROM recorded)
)
SELECT id, feed, sticky, EXISTS (SELECT FROM recorded) AS recorded FROM host
"""


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
    psycopg connection; the host is None when the secret is not that host's, or the host is
    unregistered (nothing stored).
    """
    targets = inventory_targets(request)
    values = _host_values(host_id, request, inventory_json(targets), utcnow()) | {
        "secret_hash": hash_secret(secret),
        "checkin_id": str(request.checkin_id),
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
        }
    )

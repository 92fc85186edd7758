"""Admin: hosts (list, read, change feed/pin/labels, unregister, check-in history)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy import Select, select, update

from nonstop.server import audit
from nonstop.server import hosts as host_service
from nonstop.server.api.common import ADMIN_ERRORS, ensure_feed
from nonstop.server.api.deps import Admin, Ctx, require_scope
from nonstop.server.errors import NotFound
from nonstop.server.models import checkins, hosts, utcnow
from nonstop.server.schemas import (
    CheckinHistory,
    CheckinRecord,
    FeedName,
    HostDetail,
    HostList,
    HostUpdate,
)

router = APIRouter(prefix="/api/v1/admin/hosts", tags=["admin: hosts"], responses=ADMIN_ERRORS)
Reader = Annotated[Admin, Depends(require_scope("hosts:read"))]
Writer = Annotated[Admin, Depends(require_scope("hosts:write"))]
PageSize = Annotated[int, Query(ge=1, le=1000)]
After = Annotated[str | None, Query(max_length=64, description="host id to continue after")]


def page(ctx: Ctx, query: Select[tuple[object, ...]], limit: int, after: str | None) -> HostList:
    """One page of hosts in id order (keyset pagination: stable under inserts)."""
    if after:
        query = query.where(hosts.c.id > after)
    query = query.order_by(hosts.c.id).limit(limit + 1)
    stale_after = timedelta(days=ctx.settings.stale_after_days)
    now = utcnow()
    with ctx.db.read() as connection:
        rows = connection.execute(query).all()
    views = [host_service.host_view(row, stale_after, now) for row in rows[:limit]]
    return HostList(hosts=views, next_after=views[-1].id if len(rows) > limit else None)


@router.get("", response_model=HostList)
def list_hosts(
    ctx: Ctx,
    admin: Reader,
    feed: FeedName | None = None,
    hostname: Annotated[str | None, Query(max_length=255)] = None,
    registration_key_id: Annotated[str | None, Query(max_length=64)] = None,
    include_unregistered: bool = False,
    limit: PageSize = 100,
    after: After = None,
) -> HostList:
    """Hosts in id order, a page at a time (pass next_after as after); filters match exactly.
    Unregistered hosts only with include_unregistered.
    """
    query = select(hosts)
    if feed:
        query = query.where(hosts.c.feed == feed)
    if hostname:
        query = query.where(hosts.c.hostname == hostname)
    if registration_key_id:
        query = query.where(hosts.c.registration_key_id == registration_key_id)
    if not include_unregistered:
        query = query.where(hosts.c.unregistered_at.is_(None))
    return page(ctx, query, limit, after)


@router.get("/{host_id}", response_model=HostDetail)
def read_host(host_id: str, ctx: Ctx, admin: Reader) -> HostDetail:
    """A host's record, state and reported targets; unregistered hosts included."""
    with ctx.db.read() as connection:
        return host_service.host_detail(
            connection, host_id, timedelta(days=ctx.settings.stale_after_days)
        )


@router.patch("/{host_id}", response_model=HostDetail)
def update_host(host_id: str, body: HostUpdate, ctx: Ctx, admin: Writer) -> HostDetail:
    """Move a host to another feed, pin or unpin it (sticky: null), or set its labels."""
    changes = body.model_dump(exclude_unset=True)
    for required in ("feed", "labels"):  # null means "no change" for these
        if changes.get(required, 0) is None:
            del changes[required]
    with ctx.db.write() as connection:
        if connection.execute(select(hosts.c.id).where(hosts.c.id == host_id)).first() is None:
            raise NotFound(f"no host {host_id}")
        if "feed" in changes:
            ensure_feed(connection, changes["feed"])
        if changes:
            connection.execute(update(hosts).where(hosts.c.id == host_id).values(**changes))
            audit.record(connection, admin.actor, "host.update", host_id, changes)
        return host_service.host_detail(
            connection, host_id, timedelta(days=ctx.settings.stale_after_days)
        )


@router.delete("/{host_id}", status_code=204, response_class=Response)
def unregister_host(host_id: str, ctx: Ctx, admin: Writer) -> Response:
    """Unregister a host: its token stops working and its inventory is dropped; the record
    stays for audit. 404 if the host is unknown or already unregistered.
    """
    with ctx.db.write() as connection:
        host_service.unregister(connection, host_id)
        audit.record(connection, admin.actor, "host.unregister", host_id, {})
    return Response(status_code=204)


@router.get("/{host_id}/checkins", response_model=CheckinHistory)
def checkin_history(host_id: str, ctx: Ctx, admin: Reader, limit: PageSize = 100) -> CheckinHistory:
    """The host's most recent check-ins, newest first."""
    with ctx.db.read() as connection:
        if connection.execute(select(hosts.c.id).where(hosts.c.id == host_id)).first() is None:
            raise NotFound(f"no host {host_id}")
        rows = connection.execute(
            select(checkins.c.checkin_id, checkins.c.received_at, checkins.c.agent_version)
            .where(checkins.c.host_id == host_id)
            .order_by(checkins.c.id.desc())
            .limit(limit)
        )
        return CheckinHistory(
            checkins=[
                CheckinRecord(
                    checkin_id=row.checkin_id,
                    received_at=row.received_at,
                    agent_version=row.agent_version,
                )
                for row in rows
            ]
        )

"""Admin: fleet reports (levels per target, stale hosts) and the audit log."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select

from nonstop.server import audit, reports
from nonstop.server.api.admin_hosts import After, PageSize, page
from nonstop.server.api.common import ADMIN_ERRORS
from nonstop.server.api.deps import Admin, Ctx, require_scope
from nonstop.server.models import hosts, utcnow
from nonstop.server.schemas import AuditEntry, AuditList, HostList, LevelsReport

router = APIRouter(prefix="/api/v1/admin", tags=["admin: reports"], responses=ADMIN_ERRORS)
Reporter = Annotated[Admin, Depends(require_scope("reports:read"))]
Auditor = Annotated[Admin, Depends(require_scope("audit:read"))]


@router.get("/reports/levels", response_model=LevelsReport)
def levels_report(
    ctx: Ctx,
    admin: Reporter,
    kind: Literal["userspace", "kernel"] | None = None,
    target: Annotated[str | None, Query(max_length=200)] = None,
) -> LevelsReport:
    """For each target in the fleet: how many hosts are at each applied level."""
    with ctx.db.read() as connection:
        return LevelsReport(targets=reports.levels(connection, kind, target))


@router.get("/reports/stale", response_model=HostList)
def stale_report(
    ctx: Ctx,
    admin: Reporter,
    days: Annotated[int, Query(ge=0, le=3650)] = 7,
    limit: PageSize = 100,
    after: After = None,
) -> HostList:
    """Registered hosts that have not checked in for DAYS days (or never, since registering)."""
    return page(ctx, select(hosts).where(reports.stale_condition(utcnow(), days)), limit, after)


@router.get("/audit", response_model=AuditList)
def audit_log(
    ctx: Ctx,
    admin: Auditor,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> AuditList:
    """Admin actions, newest first."""
    with ctx.db.read() as connection:
        rows = audit.entries(connection, limit + 1, before)
    entries = [AuditEntry(**row) for row in rows[:limit]]
    return AuditList(entries=entries, next_before=entries[-1].id if len(rows) > limit else None)

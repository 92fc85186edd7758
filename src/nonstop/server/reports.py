"""Fleet reports: which hosts are at which level per target; hosts not seen for N days."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, func, or_, select

from nonstop.server.models import bundles, host_targets, hosts
from nonstop.server.schemas import LevelCount, TargetLevels


def levels(connection: Connection, kind: str | None, target: str | None) -> list[TargetLevels]:
    """Per target key: host counts by applied level (unregistered hosts have no targets)."""
    query = select(
        host_targets.c.target_key,
        host_targets.c.alt_target_key,
        host_targets.c.kind,
        func.max(host_targets.c.name).label("name"),
        host_targets.c.applied_level,
        func.count().label("hosts"),
    ).group_by(
        host_targets.c.target_key,
        host_targets.c.alt_target_key,
        host_targets.c.kind,
        host_targets.c.applied_level,
    )
    if kind:
        query = query.where(host_targets.c.kind == kind)
    if target:
        query = query.where(host_targets.c.target_key == target)
    latest = dict(
        connection.execute(
            select(bundles.c.target_key, func.max(bundles.c.level))
            .where(bundles.c.retired_at.is_(None))
            .group_by(bundles.c.target_key)
        ).all()
    )
    grouped: dict[str, TargetLevels] = {}
    counts: dict[str, dict[int | None, int]] = defaultdict(lambda: defaultdict(int))
    for row in connection.execute(query):
        published = [latest.get(row.target_key), latest.get(row.alt_target_key)]
        known = [level for level in published if level is not None]
        grouped.setdefault(
            row.target_key,
            TargetLevels(
                target=row.target_key,
                kind=row.kind,
                name=row.name,
                latest_level=max(known) if known else None,
                levels=[],
            ),
        )
        counts[row.target_key][row.applied_level] += row.hosts
    for key, report in grouped.items():
        by_level = counts[key]
        ordered = sorted(by_level, key=lambda level: -1 if level is None else level)
        report.levels = [LevelCount(level=level, hosts=by_level[level]) for level in ordered]
    return [grouped[key] for key in sorted(grouped)]


def stale_condition(now: datetime, days: int):  # type: ignore[no-untyped-def]
    """Registered hosts whose last check-in (or registration, if none) is older than DAYS."""
    threshold = now - timedelta(days=days)
    return and_(
        hosts.c.unregistered_at.is_(None),
        or_(
            hosts.c.last_checkin_at < threshold,
            and_(hosts.c.last_checkin_at.is_(None), hosts.c.registered_at < threshold),
        ),
    )

"""Fleet reports: which hosts are at which level per target; hosts not seen for N days."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, func, or_, select

from nonstop.server.inventory import TargetRow, stored_targets
from nonstop.server.models import bundles, hosts
from nonstop.server.schemas import LevelCount, TargetLevels


def levels(connection: Connection, kind: str | None, target: str | None) -> list[TargetLevels]:
    """Per target key: host counts by applied level (unregistered hosts have no inventory).

    Reads every stored inventory once, streamed; with TARGET, an inventory whose text
    does not contain that key (as JSON writes it) is skipped without being parsed.
    """
    latest = dict(
        connection.execute(
            select(bundles.c.target_key, func.max(bundles.c.level))
            .where(bundles.c.retired_at.is_(None))
            .group_by(bundles.c.target_key)
        ).all()
    )
    needle = json.dumps(target)[1:-1] if target else None
    found: dict[str, _TargetTally] = {}
    inventories = connection.execute(
        select(hosts.c.inventory).where(hosts.c.inventory.is_not(None)),
        execution_options={"yield_per": 1000},
    )
    for (inventory,) in inventories:
        if needle is not None and needle not in inventory:
            continue
        for entry in stored_targets(inventory):
            if (kind and entry.kind != kind) or (target and entry.target_key != target):
                continue
            tally = found.setdefault(entry.target_key, _TargetTally(entry.kind))
            tally.add(entry)
    return [found[key].report(key, latest) for key in sorted(found)]


class _TargetTally:
    """What the report says of one target: its kind, a name, other keys, hosts per level."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.name = ""
        self.keys: set[str] = set()
        self.hosts: Counter[int | None] = Counter()

    def add(self, entry: TargetRow) -> None:
        self.name = max(self.name, entry.name)
        if entry.alt_target_key is not None:
            self.keys.add(entry.alt_target_key)
        self.hosts[entry.applied_level] += 1

    def report(self, key: str, latest: dict[str, int]) -> TargetLevels:
        known = [latest[k] for k in (key, *self.keys) if k in latest]
        ordered = sorted(self.hosts, key=lambda level: -1 if level is None else level)
        return TargetLevels(
            target=key,
            kind=self.kind,
            name=self.name,
            latest_level=max(known) if known else None,
            levels=[LevelCount(level=level, hosts=self.hosts[level]) for level in ordered],
        )


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

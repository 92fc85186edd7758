"""Fleet reports: which hosts are at which level per target; hosts not seen for N days."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select

from nonstop.server.inventory import TargetRow
from nonstop.server.models import bundles, hosts
from nonstop.server.schemas import LevelCount, TargetLevels


def levels(connection: Connection, kind: str | None, target: str | None) -> list[TargetLevels]:
    """Per target key: host counts by applied level (unregistered hosts have no inventory).

    Reads every stored inventory once, streamed; with TARGET, only those whose text
    contains that key (as JSON writes it, quotes included) are read and parsed.
    A host lists a target once (the check-in merges duplicates), so rows count hosts.
    """
    latest = dict(
        connection.execute(
            select(bundles.c.target_key, func.max(bundles.c.level))
            .where(bundles.c.retired_at.is_(None))
            .group_by(bundles.c.target_key)
        ).all()
    )
    query = select(hosts.c.inventory).where(hosts.c.inventory.is_not(None))
    if target:  # only inventories whose text holds the key, as JSON writes it
        query = query.where(hosts.c.inventory.contains(json.dumps(target), autoescape=True))
    # Identical target rows counted across hosts first (Counter.update), so the per-target
    # tally runs once per distinct row, not once per host and target. Only the fields the
    # report reads are compared: the named processes differ from host to host.
    rows: Counter[tuple[Any, ...]] = Counter()
    for (inventory,) in connection.execute(query, execution_options={"yield_per": 1000}):
        rows.update(tuple(entry[:_TALLIED]) for entry in json.loads(inventory))
    found: dict[str, _TargetTally] = {}
    for values, count in rows.items():
        entry = TargetRow(*values)
        if (kind and entry.kind != kind) or (target and entry.target_key != target):
            continue
        found.setdefault(entry.target_key, _TargetTally(entry.kind)).add(entry, count)
    return [found[key].report(key, latest) for key in sorted(found)]


_TALLIED = TargetRow._fields.index("applied_level") + 1


class _TargetTally:
    """What the report says of one target: its kind, a name, other keys, hosts per level."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.name = ""
        self.keys: set[str] = set()
        self.hosts: Counter[int | None] = Counter()

    def add(self, entry: TargetRow, hosts: int) -> None:
        self.name = max(self.name, entry.name)
        if entry.alt_target_key is not None:
            self.keys.add(entry.alt_target_key)
        self.hosts[entry.applied_level] += hosts

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

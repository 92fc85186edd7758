"""The per-process read cache of what check-ins consult: published bundles and feed delays.

Both tables are small (thousands of rows at most) and change only by admin
action, while every check-in needs them. Each process re-reads them after
``catalog_ttl_seconds`` (or at once after its own admin write, even one that lands
while another thread re-reads them), so a check-in answers without querying them;
another replica sees a change within the TTL.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import select

from nonstop.server.db import Database
from nonstop.server.models import bundles, feeds
from nonstop.server.policy import Candidate


@dataclass(frozen=True)
class CatalogSnapshot:
    """What check-ins consult, as read at one moment: the live (not retired) bundles by
    target key, and every feed's delay in hours.
    """

    by_target: dict[str, list[Candidate]] = field(default_factory=dict)
    feed_delays: dict[str, int] = field(default_factory=dict)


class Catalog:
    """This process's cached ``CatalogSnapshot``, shared by all its threads; re-read lazily."""

    def __init__(self, db: Database, ttl_seconds: float) -> None:
        self._db = db
        self._ttl = ttl_seconds
        self._snapshot: CatalogSnapshot | None = None
        self._loaded_at = 0.0
        self._generation = 0
        """Counts invalidations: a read that an invalidation overtook is not kept."""
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        """Drop the snapshot after this process's admin write: its next check-in re-reads it.

        Other processes and replicas see the change only when their TTL runs out.
        """
        with self._lock:
            self._snapshot = None
            self._generation += 1

    def fresh(self) -> CatalogSnapshot | None:
        """The snapshot if it is within its TTL, else None (never touches the database)."""
        with self._lock:
            if self._snapshot is not None and time.monotonic() - self._loaded_at < self._ttl:
                return self._snapshot
        return None

    def snapshot(self) -> CatalogSnapshot:
        """The snapshot, re-read from the database when it is older than the TTL.

        A read during which this process invalidated the catalog (an admin write) may
        predate that write: it answers this call but is not kept for the next ones."""
        cached = self.fresh()
        if cached is not None:
            return cached
        with self._lock:
            generation = self._generation
        fresh = self._load()
        with self._lock:
            if self._generation == generation:
                self._snapshot, self._loaded_at = fresh, time.monotonic()
        return fresh

    def _load(self) -> CatalogSnapshot:
        by_target: dict[str, list[Candidate]] = defaultdict(list)
        with self._db.read() as connection:
            rows = connection.execute(
                select(
                    bundles.c.target_key,
                    bundles.c.sha256,
                    bundles.c.level,
                    bundles.c.size,
                    bundles.c.published_at,
                    bundles.c.effective_version,
                ).where(bundles.c.retired_at.is_(None))
            )
            for row in rows:
                by_target[row.target_key].append(
                    Candidate(
                        sha256=row.sha256,
                        level=row.level,
                        size=row.size,
                        published_at=row.published_at,
                        effective_version=row.effective_version,
                    )
                )
            delays = {
                row.name: row.delay_hours
                for row in connection.execute(select(feeds.c.name, feeds.c.delay_hours))
            }
        return CatalogSnapshot(dict(by_target), delays)

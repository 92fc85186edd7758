"""The per-process catalog: an admin write this process makes is seen by its next check-in,
even when the write lands while another thread is re-reading the catalog."""

from __future__ import annotations

import threading
from collections.abc import Callable

from nonstop.server import migrate
from nonstop.server.catalog import Catalog, CatalogSnapshot
from nonstop.server.db import Database


class _OvertakenCatalog(Catalog):
    """A catalog whose first read pauses (the race a busy server produces by chance) until
    the test has invalidated it; later reads go straight through."""

    def __init__(self, db: Database) -> None:
        super().__init__(db, ttl_seconds=3600)
        self.reads = 0
        self.reading = threading.Event()
        self.resume = threading.Event()

    def _load(self) -> CatalogSnapshot:
        self.reads += 1
        if self.reads == 1:
            self.reading.set()
            assert self.resume.wait(10)
        return super()._load()


def test_a_read_overtaken_by_an_invalidation_is_not_kept(
    new_database_url: Callable[[str], str],
) -> None:
    database = Database(new_database_url("sqlite"), pool_size=1)
    migrate.prepare_for_serving(database.engine)
    catalog = _OvertakenCatalog(database)
    reader = threading.Thread(target=catalog.snapshot)
    reader.start()
    assert catalog.reading.wait(10)
    catalog.invalidate()  # this process's admin write, while the read is under way
    catalog.resume.set()
    reader.join(10)
    assert catalog.fresh() is None  # the overtaken read was not kept
    catalog.snapshot()
    assert catalog.reads == 2 and catalog.fresh() is not None
    database.dispose()

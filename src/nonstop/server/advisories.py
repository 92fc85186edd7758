"""Advisories in the server's database: what each vulnerability feed says, stored per feed.

An import stores one ``FeedBatch`` (read whole or refused whole by
``nonstop.cve``) in one transaction. The Debian tracker's JSON is a
snapshot of everything it knows, so its import replaces every record of that
feed (for the releases it was read for); OSV records, changelogs and bundles
say something about the CVEs they name only, so their imports replace just
those records.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from itertools import islice

from sqlalchemy import Connection, and_, delete, func, select, tuple_

from nonstop.cve.batch import FeedBatch
from nonstop.cve.model import Advisory, FeedState
from nonstop.cve.tracker import FEED as TRACKER_FEED
from nonstop.server.models import advisories, advisory_imports, utcnow

_CHUNK = 2000
_FIELDS = ("release", "source", "cve", "feed", "state", "fixed_version", "urgency", "cvss",
           "nodsa", "description")  # fmt: skip


def store(connection: Connection, batch: FeedBatch, releases: Collection[str] | None) -> int:
    """Store BATCH (read for RELEASES, or all) in CONNECTION's transaction; the rows written."""
    if batch.feed == TRACKER_FEED:
        whole = delete(advisories).where(advisories.c.feed == batch.feed)
        if releases:
            whole = whole.where(advisories.c.release.in_(sorted(releases)))
        connection.execute(whole)
    else:
        key = tuple_(advisories.c.release, advisories.c.source, advisories.c.cve)
        for chunk in _chunks(batch.advisories):
            named = [(a.release, a.source, a.cve) for a in chunk]
            connection.execute(
                delete(advisories).where(and_(advisories.c.feed == batch.feed, key.in_(named)))
            )
    written = 0
    for chunk in _chunks(batch.advisories):
        connection.execute(advisories.insert(), [_row(advisory) for advisory in chunk])
        written += len(chunk)
    connection.execute(
        advisory_imports.insert().values(at=utcnow(), feed=batch.feed, advisories=written)
    )
    return written


def import_stamp(connection: Connection) -> int:
    """The newest import's id (0: none yet): it changes whenever the advisories do."""
    return connection.execute(select(func.max(advisory_imports.c.id))).scalar() or 0


def load(connection: Connection) -> list[Advisory]:
    """Every stored advisory."""
    columns = [advisories.c[name] for name in _FIELDS]
    return [
        Advisory(
            cve=row.cve,
            source=row.source,
            release=row.release,
            state=FeedState(row.state),
            fixed_version=row.fixed_version,
            urgency=row.urgency,
            cvss=row.cvss,
            nodsa=row.nodsa,
            description=row.description,
            feed=row.feed,
        )
        for row in connection.execute(select(*columns), execution_options={"yield_per": 10_000})
    ]


def _row(advisory: Advisory) -> dict[str, object]:
    row = {name: getattr(advisory, name) for name in _FIELDS} | {"state": advisory.state.value}
    if advisory.nodsa:
        row["nodsa"] = advisory.nodsa[:500]  # the column's width; the reason leads the text
    return row


def _chunks(items: tuple[Advisory, ...]) -> Iterator[list[Advisory]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, _CHUNK)):
        yield chunk

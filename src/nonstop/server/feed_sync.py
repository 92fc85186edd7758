"""Syncing vulnerability feeds into the database: changed URLs, and newer Debian changelogs.

A URL is asked for with the validators of its last download (``feed_downloads``)
and imported only when it changed; its outcome, error included, is kept in
that table for the operator. The changelog source needs no tracker access:
for each source package installed on the fleet's hosts of this machine's
Debian release, the newest version in the configured archive is looked up,
and if it is newer than the oldest version a host runs, the CVEs named by its
changelog's newer entries become advisories (feed ``changelog``).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, delete, or_, select

from nonstop.bundle.identity import read_os_release
from nonstop.cve import changelogs, versions
from nonstop.cve.batch import FeedBatch
from nonstop.cve.errors import FeedError
from nonstop.cve.feeds import parse_feed
from nonstop.cve.model import release_key
from nonstop.cve.sync import download, shown_url
from nonstop.server import advisories
from nonstop.server.db import Database
from nonstop.server.models import feed_downloads, hosts, package_sets, utcnow


@dataclass(frozen=True)
class UrlOutcome:
    shown_url: str
    batch: FeedBatch | None = None
    """What was imported; None when the feed had not changed (or failed)."""
    error: str | None = None


def sync_url(database: Database, url: str, releases: Collection[str] | None) -> UrlOutcome:
    """Download URL if it changed since its last sync, and import it whole (or not at all)."""
    with database.engine.connect() as connection:
        last = connection.execute(
            select(feed_downloads.c.last_modified, feed_downloads.c.etag).where(
                feed_downloads.c.url == url
            )
        ).first()
    shown = shown_url(url)
    try:
        got = download(url, last_modified=last and last.last_modified, etag=last and last.etag)
        batch = parse_feed(got.body, shown, releases) if got.body is not None else None
    except FeedError as exc:
        _remember(database, url, error=str(exc)[:500])
        return UrlOutcome(shown, error=str(exc))
    with database.engine.begin() as connection:
        if batch is not None:
            advisories.store(connection, batch, releases)
        _remember_in(connection, url, got.last_modified, got.etag, batch)
    return UrlOutcome(shown, batch)


def _remember(database: Database, url: str, *, error: str) -> None:
    with database.engine.begin() as connection:
        _remember_in(connection, url, None, None, None, error=error)


def _remember_in(
    connection: Connection,
    url: str,
    last_modified: str | None,
    etag: str | None,
    batch: FeedBatch | None,
    error: str | None = None,
) -> None:
    old = connection.execute(select(feed_downloads).where(feed_downloads.c.url == url)).first()
    row = {
        "url": url,
        "last_modified": last_modified if error is None else (old and old.last_modified),
        "etag": etag if error is None else (old and old.etag),
        "fetched_at": utcnow(),
        "records": batch.records if batch else (old.records if old else None),
        "error": error,
    }
    connection.execute(delete(feed_downloads).where(feed_downloads.c.url == url))
    connection.execute(feed_downloads.insert(), row)


def sync_changelogs(
    database: Database, data_dir: Path
) -> Iterator[tuple[str, FeedBatch | None, str | None]]:
    """(source, batch, error) per source package of the fleet with a newer archive version."""
    os_release = read_os_release()
    release = release_key(os_release.get("ID", ""), os_release.get("VERSION_ID", ""))
    if not release.startswith("debian:"):
        return
    oldest = _oldest_installed(database, release)
    cache = data_dir / "changelogs"
    for source, (binary, installed) in sorted(oldest.items()):
        try:
            have = changelogs.archive_versions(binary)
            if not have or not versions.is_older(release, installed, have[0]):
                continue
            text = changelogs.fetch_changelog(binary, have[0], cache)
            batch = changelogs.changelog_advisories(text, release, since=installed, source=source)
        except FeedError as exc:
            yield source, None, str(exc)
            continue
        with database.engine.begin() as connection:
            advisories.store(connection, batch, None)
        yield source, batch, None


def _oldest_installed(database: Database, release: str) -> dict[str, tuple[str, str]]:
    """Per source package on RELEASE's hosts: a binary package of it and the oldest source
    version installed."""
    distro, _, number = release.partition(":")
    version = hosts.c.distro_version
    query = (
        select(package_sets.c.packages)
        .where(
            package_sets.c.digest.in_(
                select(hosts.c.packages_digest).where(
                    hosts.c.distro_id == distro,
                    or_(version == number, version.like(f"{number}.%")),
                    hosts.c.unregistered_at.is_(None),
                )
            )
        )
        .distinct()
    )
    oldest: dict[str, tuple[str, str]] = {}
    with database.engine.connect() as connection:
        for (text,) in connection.execute(query):
            for name, _version, source, source_version, _arch in json.loads(text):
                known = oldest.get(source)
                if known is None or versions.is_older(release, source_version, known[1]):
                    oldest[source] = (name, source_version)
    return oldest

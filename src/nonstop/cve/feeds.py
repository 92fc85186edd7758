"""One feed document, whatever its format: told apart by its content, read whole or refused.

``read_feed(path)`` (``nonstop cve import``) and ``parse_feed(data, name)``
(``nonstop cve sync``, a downloaded body) take the Debian security tracker's
JSON (an object of source packages) and OSV (one record, a list of records,
or a zip of record files), and return one ``FeedBatch``. A document that is
neither, or that one malformed entry spoils, is a FeedError and gives nothing.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from nonstop.cve import osv, tracker
from nonstop.cve.batch import FeedBatch
from nonstop.cve.errors import FeedError
from nonstop.files import read_bounded

MAX_FEED_BYTES = 512 * 1024 * 1024
"""The tracker's JSON is 70-100 MB and osv.dev's Debian/all.zip less; this leaves room to grow."""

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members, an empty zip


def read_feed(path: Path, releases: Collection[str] | None = None) -> FeedBatch:
    """The advisories of the feed file PATH (module docstring), for RELEASES or all."""
    data = read_bounded(path, MAX_FEED_BYTES, "feed file", FeedError)
    return parse_feed(data, path.name, releases)


def parse_feed(data: bytes, name: str, releases: Collection[str] | None = None) -> FeedBatch:
    """The advisories of feed DATA (called NAME in errors), for RELEASES (``debian:12``...)
    or all; FeedError if DATA is no feed this part reads, or a malformed one."""
    if len(data) > MAX_FEED_BYTES:
        raise FeedError(f"larger than {MAX_FEED_BYTES} bytes", feed="feed", where=name)
    if data.startswith(_ZIP_MAGIC):
        return osv.read_zip(data, name, releases)
    document = osv.decode_json(data, "feed", name)
    if isinstance(document, list) or (isinstance(document, dict) and _is_osv_record(document)):
        return osv.read_records(document, releases)
    if isinstance(document, dict):
        return tracker.parse_tracker(document, releases)
    raise FeedError(
        "neither the Debian tracker's JSON (an object of source packages) nor OSV "
        "(a record, a list of records, a zip of record files)",
        feed="feed",
        where=name,
    )


def _is_osv_record(document: dict[str, object]) -> bool:
    """An OSV record has a text id; the tracker's top level maps package names to objects."""
    return isinstance(document.get("id"), str)

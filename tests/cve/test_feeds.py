"""Any feed file: its format told by its content, read whole, or refused with one line."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from nonstop.cve import feeds
from nonstop.cve.errors import FeedError
from nonstop.cve.feeds import parse_feed, read_feed

FIXTURES = Path(__file__).parent.parent / "fixtures" / "cve"
OSV = sorted((FIXTURES / "osv").glob("*.json"))


def test_the_tracker_json() -> None:
    read = read_feed(FIXTURES / "tracker.json", releases={"debian:12"})
    assert read.feed == "debian-tracker"
    assert {a.release for a in read.advisories} == {"debian:12"}
    assert len(read.advisories) == 11


def test_one_osv_record_a_list_and_a_zip(tmp_path: Path) -> None:
    one = read_feed(FIXTURES / "osv" / "DSA-5770-1.json")
    assert (one.feed, one.records, len(one.advisories)) == ("osv", 1, 3)

    listed = tmp_path / "records.json"
    listed.write_text(json.dumps([json.loads(path.read_text()) for path in OSV]))
    as_list = read_feed(listed)
    assert (as_list.feed, as_list.records, len(as_list.advisories)) == ("osv", 5, 9)

    archive = tmp_path / "all.zip"
    with zipfile.ZipFile(archive, "w") as writer:
        for path in OSV:
            writer.write(path, path.name)
    as_zip = read_feed(archive, releases={"debian:12"})
    assert as_zip.feed == "osv"
    assert {a.release for a in as_zip.advisories} == {"debian:12"}
    assert set(as_zip.advisories) < set(as_list.advisories)


def test_an_empty_zip_is_an_empty_feed(tmp_path: Path) -> None:
    archive = tmp_path / "all.zip"
    zipfile.ZipFile(archive, "w").close()
    read = read_feed(archive)
    assert (read.feed, read.records, read.advisories) == ("osv", 0, ())


def test_a_downloaded_body() -> None:
    read = parse_feed((FIXTURES / "tracker.json").read_bytes(), "json")
    assert read.feed == "debian-tracker"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "feed: x.json: not JSON: line 1 column 1: Expecting value"),
        (b'{"expat": ', "feed: x.json: not JSON: line 1 column 11: Expecting value"),
        (b"\xff\xfe{\x00}\x00", "feed: x.json: not UTF-8 text"),  # UTF-16, which json takes
        (b'{"\xc3\x28": {}}', "feed: x.json: not UTF-8 text"),
        (
            b"[" * 100_000 + b"]" * 100_000,
            "feed: x.json: not JSON this reader takes: nested too deep",
        ),
        (
            b"42",
            "feed: x.json: neither the Debian tracker's JSON (an object of source packages) nor "
            "OSV (a record, a list of records, a zip of record files)",
        ),
    ],
)
def test_what_is_no_feed(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(FeedError) as refused:
        read_feed(path)
    assert str(refused.value) == message


def test_files_that_cannot_be_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FeedError) as refused:
        read_feed(tmp_path / "missing.json")
    assert str(refused.value) == f"feed file not found: {tmp_path / 'missing.json'}"
    monkeypatch.setattr(feeds, "MAX_FEED_BYTES", 100)
    with pytest.raises(FeedError) as refused:
        read_feed(FIXTURES / "tracker.json")
    assert str(refused.value) == f"feed file {FIXTURES / 'tracker.json'} is larger than 100 bytes"
    with pytest.raises(FeedError) as refused:
        parse_feed(b" " * 101, "json")
    assert str(refused.value) == "feed: json: larger than 100 bytes"

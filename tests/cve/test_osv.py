"""OSV records of Debian (DSA, DLA, DEBIAN-CVE): one, a list, a zip; skips counted; junk refused."""

from __future__ import annotations

import copy
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from nonstop.cve import osv
from nonstop.cve.errors import FeedError
from nonstop.cve.model import FeedState
from nonstop.cve.osv import read_records, read_zip

FIXTURES = Path(__file__).parent.parent / "fixtures" / "cve" / "osv"
FIXED, OPEN = FeedState.FIXED, FeedState.OPEN


def records() -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(FIXTURES.glob("*.json"))]


def record(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return loaded


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


EXPECTED = {
    ("expat", "CVE-2024-45490", "debian:12"): (FIXED, "2.5.0-1+deb12u1", None, None),
    ("expat", "CVE-2024-45491", "debian:12"): (FIXED, "2.5.0-1+deb12u1", None, None),
    ("expat", "CVE-2024-45492", "debian:12"): (FIXED, "2.5.0-1+deb12u1", None, None),
    ("zlib", "CVE-2022-37434", "debian:11"): (FIXED, "1:1.2.11.dfsg-2+deb11u2", None, None),
    # CVSS 3.1 AV:N/AC:H/PR:N/UI:N/S:U/C:N/I:N/A:L
    ("expat", "CVE-2024-50602", "debian:11"): (OPEN, None, None, 3.7),
    ("expat", "CVE-2024-50602", "debian:12"): (FIXED, "2.5.0-1+deb12u2", None, 3.7),
    ("expat", "CVE-2024-50602", "debian:13"): (FIXED, "2.6.3-2", None, 3.7),
    # V3 (5.5) and V4 given: the newest version's score, CVSS 4.0 AV:L/AC:L/AT:N/PR:L/.../VA:H.
    ("expat", "CVE-2023-52426", "debian:12"): (OPEN, None, "unimportant", 6.8),
    ("expat", "CVE-2023-52426", "debian:13"): (FIXED, "2.6.0-1", "unimportant", 6.8),
}


def found(advisories: Any) -> dict[tuple[str, str, str], tuple[Any, ...]]:
    return {
        (a.source, a.cve, a.release): (a.state, a.fixed_version, a.urgency, a.cvss)
        for a in advisories
    }


def test_debian_records_of_every_kind() -> None:
    read = read_records(records())
    assert found(read.advisories) == EXPECTED
    assert read.records == 5
    assert read.skipped == {"affected entries of other ecosystems": 1}
    assert {a.feed for a in read.advisories} == {"osv"}
    dsa = next(a for a in read.advisories if a.cve == "CVE-2024-45490")
    assert dsa.description == "expat - security update"


def test_one_record_alone() -> None:
    read = read_records(record("DLA-3103-1"))
    assert [(a.cve, a.fixed_version) for a in read.advisories] == [
        ("CVE-2022-37434", "1:1.2.11.dfsg-2+deb11u2")
    ]


def test_a_zip_like_osv_dev_publishes() -> None:
    members = {path.name: path.read_bytes() for path in sorted(FIXTURES.glob("*.json"))}
    data = zipped({**members, "README.txt": b"not a record", "nested/": b""})
    read = read_zip(data, "all.zip")
    assert found(read.advisories) == EXPECTED
    assert read.records == 5
    assert read.skipped == {
        "affected entries of other ecosystems": 1,
        "zip members that are not .json files": 1,
    }


def test_only_the_releases_asked_for() -> None:
    read = read_records(records(), releases={"debian:11"})
    assert {(a.cve, a.release) for a in read.advisories} == {
        ("CVE-2022-37434", "debian:11"),
        ("CVE-2024-50602", "debian:11"),
    }
    assert read.skipped["affected entries of releases not asked for"] == 5


def dsa(ident: str, fixed: list[str], ecosystem: str = "Debian:12", **extra: Any) -> dict[str, Any]:
    events = [{"introduced": "0"}, *({"fixed": version} for version in fixed)]
    return {
        "id": ident,
        "modified": "2025-01-01T00:00:00Z",
        "upstream": ["CVE-2024-0001"],
        "affected": [
            {
                "package": {"ecosystem": ecosystem, "name": "demo"},
                "ranges": [{"type": "ECOSYSTEM", "events": events}],
            }
        ],
        **extra,
    }


def test_two_words_on_one_cve_merge_to_the_later_fix() -> None:
    read = read_records(
        [
            dsa("DEBIAN-CVE-2024-0001", []),
            dsa("DSA-1-1", ["1.0-1+deb12u1"]),
            dsa("DSA-2-1", ["1.0-1+deb12u2"]),
            dsa("DSA-1-2", ["1.0-1+deb12u1"]),
        ]
    )
    assert [(a.state, a.fixed_version) for a in read.advisories] == [(FIXED, "1.0-1+deb12u2")]


@pytest.mark.parametrize(
    ("fixed", "latest"),
    [
        (["1:1.0-1", "2.0-1"], "1:1.0-1"),  # the epoch wins
        (["1.0~rc1-1", "1.0-1"], "1.0-1"),  # ~ sorts first
        (["1.10-1", "1.9-1"], "1.10-1"),  # numbers, not text
    ],
)
def test_of_several_fixed_events_the_latest(fixed: list[str], latest: str) -> None:
    (advisory,) = read_records(dsa("DSA-1-1", fixed)).advisories
    assert advisory.fixed_version == latest


def test_what_is_skipped_and_counted() -> None:
    no_cve = dsa("DSA-3-1", ["1.0-2"])
    del no_cve["upstream"]
    git_range = dsa("DSA-4-1", ["1.0-2"])
    git_range["affected"][0]["ranges"][0]["type"] = "GIT"
    read = read_records(
        [
            dsa("DSA-1-1", ["1.0-2"], withdrawn="2025-02-01T00:00:00Z"),
            dsa("DSA-2-1", ["1.0-2"], ecosystem="Debian"),
            no_cve,
            git_range,
            dsa("DSA-5-1", ["1.0-2"], ecosystem="Debian:12.8"),
        ]
    )
    assert [(a.release, a.fixed_version) for a in read.advisories] == [("debian:12", "1.0-2")]
    assert read.skipped == {
        "withdrawn records": 1,
        "Debian affected entries without a release number": 1,
        "records that name no CVE": 1,
        "ranges that are not ECOSYSTEM": 1,
        "affected entries without an ECOSYSTEM range": 1,
    }


def test_last_affected_without_a_fix_is_open() -> None:
    record = dsa("DEBIAN-CVE-2024-0001", [])
    record["affected"][0]["ranges"][0]["events"] = [{"last_affected": "1.0-1"}]
    (advisory,) = read_records(record).advisories
    assert (advisory.state, advisory.fixed_version) == (OPEN, None)


def test_aliases_name_the_cves_and_other_ids_are_not_cves() -> None:
    record = dsa("DSA-9-1", ["1.0-2"], aliases=["CVE-2024-0002", "GHSA-xxxx-yyyy-zzzz"])
    read = read_records(record)
    assert [a.cve for a in read.advisories] == ["CVE-2024-0001", "CVE-2024-0002"]


AFFECTED = ("affected", 0)
EVENTS = (*AFFECTED, "ranges", 0, "events")


def _set(document: Any, path: tuple[str | int, ...], value: object) -> None:
    for key in path[:-1]:
        document = document[key]
    document[path[-1]] = value


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            (*EVENTS, 1, "fixed"),
            "2.5 .0",
            "OSV: DSA-1-1/affected[0]/ranges[0]/events[1]: fixed '2.5 .0' is not a Debian version",
        ),
        (
            (*EVENTS, 1),
            {"fixed": "1.0-2", "introduced": "0"},
            "OSV: DSA-1-1/affected[0]/ranges[0]/events[1]: not an object of one event",
        ),
        (
            (*EVENTS, 1),
            {"patched": "1.0-2"},
            "OSV: DSA-1-1/affected[0]/ranges[0]/events[1]: event 'patched' is not one of "
            "introduced, fixed, last_affected, limit",
        ),
        (
            (*EVENTS, 1),
            {"fixed": 2},
            "OSV: DSA-1-1/affected[0]/ranges[0]/events[1]: fixed is not text",
        ),
        ((*AFFECTED, "ranges"), {}, "OSV: DSA-1-1/affected[0]: ranges is not a list"),
        (
            (*AFFECTED, "ranges", 0),
            {"events": []},
            "OSV: DSA-1-1/affected[0]/ranges[0]: not an object with a type",
        ),
        (
            (*AFFECTED, "package", "name"),
            "Demo Package",
            "OSV: DSA-1-1/affected[0]: package name 'Demo Package' is not a Debian source "
            "package name",
        ),
        (
            (*AFFECTED, "package"),
            "demo",
            "OSV: DSA-1-1/affected[0]: package is not an object with an ecosystem",
        ),
        (
            (*AFFECTED, "ecosystem_specific"),
            {"urgency": "urgent"},
            "OSV: DSA-1-1/affected[0]/ecosystem_specific: urgency 'urgent' is not one of "
            "end-of-life, high, low, medium, unimportant, not yet assigned",
        ),
        (
            (*AFFECTED, "database_specific"),
            [],
            "OSV: DSA-1-1/affected[0]: database_specific is not an object",
        ),
        (("affected",), {}, "OSV: DSA-1-1: affected is not a list"),
        (("affected", 0), "expat", "OSV: DSA-1-1/affected[0]: not an object"),
        (("upstream",), "CVE-2024-0001", "OSV: DSA-1-1: upstream is not a list"),
        (("aliases",), [1], "OSV: DSA-1-1: aliases is not a list of ids"),
        (("summary",), ["x"], "OSV: DSA-1-1: summary or details is not text"),
        (
            ("severity",),
            [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:X"}],
            "OSV: DSA-1-1/severity: CVSS_V3 'CVSS:3.1/AV:X' is not a CVSS vector: "
            'Unknown value "X" in field "AV:X"',
        ),
        (
            ("severity",),
            [{"type": "CVSS_V3", "score": 9.8}],
            "OSV: DSA-1-1/severity[0]: score is not a vector",
        ),
        (("id",), None, "OSV: [1]: id None is not an OSV id"),
    ],
)
def test_a_malformed_record_refuses_the_whole_list(
    path: tuple[str | int, ...], value: object, message: str
) -> None:
    good = record("DSA-5770-1")
    bad = dsa("DSA-1-1", ["1.0-2"])
    _set(bad, path, value)
    with pytest.raises(FeedError) as refused:
        read_records([good, bad, copy.deepcopy(good)])
    assert str(refused.value) == message


def test_a_record_that_is_no_object() -> None:
    with pytest.raises(FeedError) as refused:
        read_records([record("DSA-5770-1"), "DSA-1-1"])
    assert str(refused.value) == "OSV: [1]: a record is not an object"


def test_a_malformed_zip_member_refuses_the_zip() -> None:
    data = zipped({"DSA-5770-1.json": (FIXTURES / "DSA-5770-1.json").read_bytes(), "x.json": b"{"})
    with pytest.raises(FeedError) as refused:
        read_zip(data, "all.zip")
    assert str(refused.value) == (
        "OSV: all.zip:x.json: not JSON: line 1 column 2: "
        "Expecting property name enclosed in double quotes"
    )


def test_zip_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    member = (FIXTURES / "DSA-5770-1.json").read_bytes()
    data = zipped({"a.json": member, "b.json": member, "c.json": member})
    monkeypatch.setattr(osv, "MAX_ZIP_MEMBERS", 2)
    with pytest.raises(FeedError, match=r"^OSV: all\.zip: more than 2 members$"):
        read_zip(data, "all.zip")
    monkeypatch.setattr(osv, "MAX_ZIP_MEMBERS", 10)
    monkeypatch.setattr(osv, "MAX_ZIP_CONTENT_BYTES", 2 * len(member))
    with pytest.raises(
        FeedError, match=rf"^OSV: all\.zip: members hold more than {2 * len(member)}"
    ):
        read_zip(data, "all.zip")
    monkeypatch.setattr(osv, "MAX_RECORD_BYTES", 100)
    with pytest.raises(FeedError, match=r"^OSV: all\.zip:a\.json: larger than 100 bytes$"):
        read_zip(data, "all.zip")


def test_a_member_whose_directory_entry_lies_about_its_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = bytearray(zipped({"a.json": b"[" + b" " * 500 + b"]"}))
    monkeypatch.setattr(osv, "MAX_RECORD_BYTES", 100)
    # The central directory says 8 bytes; the stream holds 502.
    central = data.rindex(b"PK\x01\x02")
    data[central + 24 : central + 28] = (8).to_bytes(4, "little")
    with pytest.raises(FeedError, match=r"^OSV: all\.zip:a\.json: cannot be read: Bad CRC-32"):
        read_zip(bytes(data), "all.zip")


def test_not_a_zip() -> None:
    with pytest.raises(FeedError, match=r"^OSV: all\.zip: not a zip file: "):
        read_zip(b"PK\x03\x04 truncated", "all.zip")

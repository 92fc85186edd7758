"""The tracker's JSON: states, urgencies, nodsa, skips; malformed entries refused whole."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from nonstop.cve.errors import FeedError
from nonstop.cve.model import FeedState
from nonstop.cve.tracker import parse_tracker

FIXTURE = Path(__file__).parent.parent / "fixtures" / "cve" / "tracker.json"
FIXED, OPEN, NOT_AFFECTED = FeedState.FIXED, FeedState.OPEN, FeedState.NOT_AFFECTED
UNDETERMINED = FeedState.UNDETERMINED


def tracker() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(FIXTURE.read_text())
    return document


def test_every_state_of_the_fixture() -> None:
    read = parse_tracker(tracker())
    found = {
        (a.source, a.cve, a.release): (a.state, a.fixed_version, a.urgency, a.nodsa)
        for a in read.advisories
    }
    assert found == {
        ("expat", "CVE-2024-50602", "debian:12"): (FIXED, "2.5.0-1+deb12u2", None, None),
        ("expat", "CVE-2024-50602", "debian:13"): (FIXED, "2.6.3-2", None, None),
        ("expat", "CVE-2024-8176", "debian:12"): (FIXED, "2.5.0-1+deb12u2", "medium", None),
        # "low**": the tracker's marks are dropped.
        ("expat", "CVE-2023-52425", "debian:12"): (FIXED, "2.5.0-1+deb12u2", "low", None),
        ("expat", "CVE-2023-52426", "debian:12"): (OPEN, None, "unimportant", None),
        ("expat", "CVE-2024-45490", "debian:12"): (FIXED, "2.5.0-1+deb12u1", None, None),
        # Epochs are kept as written.
        ("zlib", "CVE-2022-37434", "debian:11"): (FIXED, "1:1.2.11.dfsg-2+deb11u2", None, None),
        ("zlib", "CVE-2022-37434", "debian:12"): (FIXED, "1:1.2.11.dfsg-4.1", None, None),
        ("zlib", "CVE-2023-45853", "debian:10"): (OPEN, None, "end-of-life", None),
        ("zlib", "CVE-2023-45853", "debian:12"): (
            OPEN,
            None,
            None,
            "contrib/minizip not built and src:zlib not producing binary packages (ignored)",
        ),
        ("libxml2", "CVE-2025-9714", "debian:12"): (FIXED, "2.9.14+dfsg-1.3~deb12u5", "high", None),
        ("libxml2", "CVE-2024-34459", "debian:12"): (OPEN, None, "low", "Minor issue (postponed)"),
        ("libxml2", "CVE-2026-1001", "debian:12"): (UNDETERMINED, None, None, None),
        ("libxml2", "CVE-2026-1001", "debian:13"): (UNDETERMINED, None, None, None),
        ("libxml2", "CVE-2025-32414", "debian:12"): (NOT_AFFECTED, None, None, None),
        ("libxml2", "CVE-2025-32414", "debian:13"): (
            FIXED,
            "2.12.7+dfsg+really2.9.14-1",
            None,
            None,
        ),
    }
    assert {a.feed for a in read.advisories} == {"debian-tracker"}


def test_descriptions_and_counts() -> None:
    read = parse_tracker(tracker())
    expat = next(a for a in read.advisories if a.cve == "CVE-2024-8176")
    assert expat.description == (
        "libexpat: a long chain of nested entity references overflows the stack"
    )
    assert read.records == 12
    assert read.skipped == {
        "TEMP ids (no CVE yet)": 1,
        "entries of suites that are no release (sid, experimental)": 8,
    }
    assert read.summary() == (
        "debian-tracker: 16 advisories from 12 records; skipped: "
        "1 TEMP ids (no CVE yet), 8 entries of suites that are no release (sid, experimental)"
    )


def test_only_the_releases_asked_for() -> None:
    read = parse_tracker(tracker(), releases={"debian:12"})
    assert {a.release for a in read.advisories} == {"debian:12"}
    assert len(read.advisories) == 11
    assert read.skipped["entries of releases not asked for"] == 5


def _set(document: dict[str, Any], path: tuple[str, ...], value: object) -> None:
    for key in path[:-1]:
        document = document[key]
    if value is _DELETE:
        del document[path[-1]]
    else:
        document[path[-1]] = value


_DELETE = object()
BOOKWORM = ("expat", "CVE-2024-50602", "releases", "bookworm")
WHERE = "tracker JSON: expat/CVE-2024-50602/bookworm: "


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            (*BOOKWORM, "fixed_version"),
            "2.5 .0",
            WHERE + "fixed_version '2.5 .0' is not a Debian version",
        ),
        ((*BOOKWORM, "fixed_version"), _DELETE, WHERE + "resolved without a fixed_version"),
        ((*BOOKWORM, "fixed_version"), 2, WHERE + "resolved without a fixed_version"),
        (
            (*BOOKWORM, "status"),
            "fixed",
            WHERE + "status 'fixed' is not resolved, open or undetermined",
        ),
        (
            (*BOOKWORM, "status"),
            ["open"],
            WHERE + "status ['open'] is not resolved, open or undetermined",
        ),
        (
            (*BOOKWORM, "urgency"),
            "critical",
            WHERE + "urgency 'critical' is not one of end-of-life, high, low, medium, "
            "unimportant, not yet assigned",
        ),
        ((*BOOKWORM, "urgency"), 3, WHERE + "urgency is not text"),
        ((*BOOKWORM, "nodsa"), ["x"], WHERE + "nodsa is not text"),
        (
            (*BOOKWORM, "repositories"),
            ["bookworm"],
            WHERE + "repositories is not an object of versions",
        ),
        (
            (*BOOKWORM, "repositories", "bookworm"),
            None,
            WHERE + "repositories is not an object of versions",
        ),
        (BOOKWORM, "resolved", WHERE + "not an object"),
        # A suite nobody runs, and a release not asked for, are checked all the same.
        (
            ("expat", "CVE-2024-50602", "releases", "sid", "status"),
            "gone",
            "tracker JSON: expat/CVE-2024-50602/sid: status 'gone' is not resolved, open or "
            "undetermined",
        ),
        (
            ("expat", "CVE-2024-50602", "releases"),
            [],
            "tracker JSON: expat/CVE-2024-50602: releases is not an object",
        ),
        (
            ("expat", "CVE-2024-50602", "description"),
            {"text": "x"},
            "tracker JSON: expat/CVE-2024-50602: description is not text",
        ),
        (("expat", "CVE-2024-50602"), [], "tracker JSON: expat/CVE-2024-50602: not an object"),
        (("expat", "BUG-12"), {}, "tracker JSON: expat/BUG-12: not a CVE or TEMP id"),
        (("expat", "CVE-2024-1"), {}, "tracker JSON: expat/CVE-2024-1: not a CVE or TEMP id"),
        (("Expat 2",), {}, "tracker JSON: Expat 2: not a Debian source package name"),
        (("zlib",), [], "tracker JSON: zlib: not an object of issues"),
        (("a\nb",), {}, "tracker JSON: 'a\\nb': not a Debian source package name"),
    ],
)
def test_a_malformed_entry_refuses_the_whole_document(
    path: tuple[str, ...], value: object, message: str
) -> None:
    document = tracker()
    _set(document, path, value)
    with pytest.raises(FeedError) as refused:
        parse_tracker(document, releases={"debian:13"})
    assert str(refused.value) == message


def test_the_document_must_be_an_object() -> None:
    with pytest.raises(FeedError) as refused:
        parse_tracker([tracker()])
    assert str(refused.value) == "tracker JSON: the document is not an object of source packages"


def test_the_input_is_left_as_it_was() -> None:
    document = tracker()
    before = copy.deepcopy(document)
    parse_tracker(document)
    assert document == before

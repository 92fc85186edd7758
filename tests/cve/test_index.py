"""Feeds merged by precedence into one verdict, placed among a source's fixed versions, cached."""

from __future__ import annotations

import dataclasses

import pytest

from nonstop.cve.index import AdvisoryError, AdvisoryIndex
from nonstop.cve.model import Advisory, FeedState, Status

RELEASE = "debian:12"
FIXED, OPEN = FeedState.FIXED, FeedState.OPEN
NOT_AFFECTED, UNDETERMINED = FeedState.NOT_AFFECTED, FeedState.UNDETERMINED


def record(feed: str, state: FeedState, fixed: str | None = None, **extra: object) -> Advisory:
    return Advisory("CVE-2024-8176", "expat", RELEASE, state, fixed, feed=feed, **extra)  # type: ignore[arg-type]


def verdict(*records: Advisory) -> tuple[str, str | None, tuple[str, ...]]:
    advisories = AdvisoryIndex(records).advisories(RELEASE, "expat")
    assert advisories is not None
    merged = advisories.by_cve["CVE-2024-8176"]
    return merged.state.value, merged.fixed_version, merged.feeds


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        # The tracker is authoritative: a later feed never overrules its fixed version.
        (
            [
                record("changelog", FIXED, "2.5.0-1+deb12u1"),
                record("debian-tracker", FIXED, "2.5.0-1+deb12u2"),
            ],
            ("fixed", "2.5.0-1+deb12u2", ("debian-tracker",)),
        ),
        # Nor its not-affected.
        (
            [record("bundles", FIXED, "2.5.0-1+deb12u2"), record("debian-tracker", NOT_AFFECTED)],
            ("not-affected", None, ("debian-tracker",)),
        ),
        # Open in the tracker, fixed in a newer changelog: the fix fills in, both feeds named.
        (
            [record("debian-tracker", OPEN), record("changelog", FIXED, "2.5.0-1+deb12u3")],
            ("fixed", "2.5.0-1+deb12u3", ("debian-tracker", "changelog")),
        ),
        # OSV derives from the tracker: it speaks only where the tracker says nothing.
        (
            [
                record("osv", FIXED, "2.5.0-1+deb12u2"),
                record("debian-tracker", FIXED, "2.5.0-1+deb12u1"),
            ],
            ("fixed", "2.5.0-1+deb12u1", ("debian-tracker",)),
        ),
        ([record("osv", FIXED, "2.5.0-1+deb12u2")], ("fixed", "2.5.0-1+deb12u2", ("osv",))),
        # Undetermined knows nothing: the next feed's word counts.
        (
            [record("debian-tracker", UNDETERMINED), record("osv", NOT_AFFECTED)],
            ("not-affected", None, ("osv",)),
        ),
        ([record("debian-tracker", UNDETERMINED)], ("undetermined", None, ("debian-tracker",))),
        # Changelogs before bundle lists; feeds nobody ranked come last.
        (
            [
                record("vendor-x", FIXED, "2.5.0-1+deb12u9"),
                record("bundles", FIXED, "2.5.0-1+deb12u4"),
                record("changelog", FIXED, "2.5.0-1+deb12u3"),
            ],
            ("fixed", "2.5.0-1+deb12u3", ("changelog",)),
        ),
    ],
)
def test_precedence(
    records: list[Advisory], expected: tuple[str, str | None, tuple[str, ...]]
) -> None:
    assert verdict(*records) == expected


def test_details_come_from_the_first_feed_that_has_each() -> None:
    advisories = AdvisoryIndex(
        [
            record("osv", OPEN, cvss=7.5, description="OSV text"),
            record("debian-tracker", OPEN, urgency="low", nodsa="Minor issue"),
        ]
    ).advisories(RELEASE, "expat")
    assert advisories is not None
    merged = advisories.by_cve["CVE-2024-8176"]
    assert (merged.urgency, merged.cvss, merged.nodsa, merged.description) == (
        "low",
        7.5,
        "Minor issue",
        "OSV text",
    )


def test_fixed_versions_sort_as_dpkg_sorts_them() -> None:
    versions = ["1:2.0-1", "2.0~rc1-1", "2.0-1", "10.0-1", "2.0-1+deb12u1"]
    index = AdvisoryIndex(
        Advisory(f"CVE-2024-{n:04d}", "pkg", RELEASE, FIXED, v, feed="debian-tracker")
        for n, v in enumerate(versions)
    )
    advisories = index.advisories(RELEASE, "pkg")
    assert advisories is not None
    assert advisories.fixed == ("2.0~rc1-1", "2.0-1", "2.0-1+deb12u1", "10.0-1", "1:2.0-1")
    exposure = index.exposure(RELEASE, "pkg", "2.0-1")
    assert exposure is not None
    assert {f.cve for f in exposure.findings()} == {
        "CVE-2024-0000",
        "CVE-2024-0003",
        "CVE-2024-0004",
    }
    assert index.exposure(RELEASE, "pkg", "2.0-1") is exposure, "cached"
    assert index.exposure(RELEASE, "other", "1.0-1") is None
    fresh = index.exposure(RELEASE, "pkg", "10.0-1")
    assert fresh is not None
    assert [f.status for f in fresh.findings()] == [Status.OPEN_FIX_AVAILABLE]


GOOD = Advisory("CVE-2024-8176", "expat", RELEASE, FIXED, "2.5.0-1+deb12u2", feed="debian-tracker")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"fixed_version": None}, "state fixed with fixed version None"),
        ({"state": OPEN}, "state open with fixed version"),
        ({"fixed_version": "2.5.0 junk"}, "not a Debian version"),
        ({"cve": "CVE 2024"}, "cve 'CVE 2024' is not one"),
        ({"source": "../expat"}, "source '../expat' is not one"),
        ({"release": "bookworm"}, "release 'bookworm' is not one"),
        ({"cvss": 11.0}, "not between 0 and 10"),
        ({"urgency": "x" * 100}, "urgency is not a text of at most 64"),
    ],
)
def test_a_malformed_record_refuses_the_batch(changes: dict[str, object], message: str) -> None:
    bad = dataclasses.replace(GOOD, **changes)  # type: ignore[arg-type]
    with pytest.raises(AdvisoryError, match=message) as refused:
        AdvisoryIndex([GOOD, bad])
    assert str(refused.value).startswith("advisory 2 ")
    assert "\n" not in str(refused.value)


def test_one_feed_saying_two_things_is_refused_and_repeats_are_not() -> None:
    assert AdvisoryIndex([GOOD, GOOD]).verdicts == 1
    other = dataclasses.replace(GOOD, fixed_version="2.5.0-1+deb12u3")
    with pytest.raises(AdvisoryError, match="feed 'debian-tracker' says two different things"):
        AdvisoryIndex([GOOD, other])

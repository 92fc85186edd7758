"""Versions compare as dpkg and rpm compare them, and junk is refused, never compared as text."""

from __future__ import annotations

import pytest

from nonstop.cve.versions import VersionError, check, is_older


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("2.5.0-1+deb12u1", "2.5.0-1+deb12u2"),
        ("2.9.14+dfsg-1.3~deb12u4", "2.9.14+dfsg-1.3~deb12u6"),
        ("1.0~rc1-1", "1.0-1"),  # ~ sorts before everything, even the end
        ("2.0-1", "1:1.0-1"),  # the epoch wins
        ("1.2.13.dfsg-1", "1:1.2.13.dfsg-1"),
        ("9-1", "10-1"),  # numerically, where strings would say otherwise
    ],
)
def test_debian_order(older: str, newer: str) -> None:
    assert is_older("debian:12", older, newer)
    assert not is_older("debian:12", newer, older)


def test_rpm_order_differs_from_debian_where_rpm_says_so() -> None:
    assert is_older("rhel:9", "2.5.0-1.el9_3", "2.5.0-1.el9_4")
    assert is_older("rhel:9", "1.9-1", "1.10-1")
    assert not is_older("rhel:9", "1:1.0-1", "2.0-1")


@pytest.mark.parametrize("junk", ["", " 1.0", "1.0 junk", "x" * 300, "1.0-1!"])
def test_junk_is_refused(junk: str) -> None:
    with pytest.raises(VersionError):
        check("debian:12", junk)

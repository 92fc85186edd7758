"""Published bundles: cumulative CVEs per level, and the fixes of bundles built from an update."""

from __future__ import annotations

from typing import Any

import pytest

from nonstop.bundle import (
    Fix,
    KernelTarget,
    Manifest,
    PackageInfo,
    Update,
    UserspaceTarget,
    describe_payload,
)
from nonstop.cve.bundles import bundle_advisories, live_patch_levels
from nonstop.cve.errors import FeedError
from nonstop.cve.model import FeedState, LivePatchLevel
from tests.conftest import SAMPLE_OBJECT, sample_manifest

EXPAT = UserspaceTarget(
    build_id="7d" * 20,
    soname="libexpat.so.1",
    package=PackageInfo(name="libexpat1", version="2.5.0-1+deb12u2", distro="debian"),
)
U2, U5 = "2.5.0-1+deb12u2", "2.5.0-1+deb12u5"
SHA = {level: f"{level:064x}" for level in range(1, 6)}


def published(level: int, cves: tuple[str, ...], **changes: Any) -> Manifest:
    """A manifest as the server reads it from a bundle: through its canonical bytes and schema."""
    fields: dict[str, Any] = {
        "target": EXPAT,
        "level": level,
        "fixes": tuple(Fix(title=f"{cve} (Debian {U5})", cves=(cve,)) for cve in cves),
        "effective_version": f"{U2}+nonstop{level}",
        "update": Update("expat", U2, U5),
        "builder": "nonstop build debian",
    }
    fields.update(changes)
    manifest = sample_manifest({"patch.o": SAMPLE_OBJECT}, **fields)
    return Manifest.from_json_bytes(manifest.to_json_bytes())


def test_levels_as_the_debian_builder_writes_them_are_cumulative() -> None:
    levels = live_patch_levels(
        [
            (published(2, ("CVE-2025-59375", "CVE-2025-66382")), SHA[2]),
            (published(1, ("CVE-2025-59375",)), SHA[1]),
        ]
    )
    assert levels == [
        LivePatchLevel(
            target_key=f"userspace:{'7d' * 20}",
            level=1,
            cves=frozenset({"CVE-2025-59375"}),
            bundle_sha256=SHA[1],
            effective_version=f"{U2}+nonstop1",
            source="expat",
        ),
        LivePatchLevel(
            target_key=f"userspace:{'7d' * 20}",
            level=2,
            cves=frozenset({"CVE-2025-59375", "CVE-2025-66382"}),
            bundle_sha256=SHA[2],
            effective_version=f"{U2}+nonstop2",
            source="expat",
        ),
    ]


def test_a_level_that_lists_only_its_own_fixes_still_closes_the_lower_ones() -> None:
    kernel = KernelTarget(release="6.1.0-28-amd64", build_id="ab" * 20)
    levels = live_patch_levels(
        [
            (published(1, ("CVE-2024-0001",)), SHA[1]),
            (published(3, ("CVE-2024-0003",)), SHA[3]),
            (
                published(
                    4,
                    ("CVE-2024-0004",),
                    target=kernel,
                    kind="kernel",
                    update=None,
                    payload=(describe_payload("livepatch.ko", "module", SAMPLE_OBJECT),),
                ),
                SHA[4],
            ),
        ]
    )
    assert [(lvl.target_key, lvl.level, sorted(lvl.cves), lvl.source) for lvl in levels] == [
        ("kernel:6.1.0-28-amd64:" + "ab" * 20, 4, ["CVE-2024-0004"], None),
        (f"userspace:{'7d' * 20}", 1, ["CVE-2024-0001"], "expat"),
        (f"userspace:{'7d' * 20}", 3, ["CVE-2024-0001", "CVE-2024-0003"], "expat"),
    ]


def test_two_builds_of_one_level_each_get_the_lower_levels() -> None:
    levels = live_patch_levels(
        [
            (published(1, ("CVE-2024-0001",)), SHA[1]),
            (published(2, ("CVE-2024-0002",)), SHA[2]),
            (published(2, ("CVE-2024-0002",)), SHA[5]),
        ]
    )
    assert [(lvl.level, lvl.bundle_sha256, sorted(lvl.cves)) for lvl in levels] == [
        (1, SHA[1], ["CVE-2024-0001"]),
        (2, SHA[2], ["CVE-2024-0001", "CVE-2024-0002"]),
        (2, SHA[5], ["CVE-2024-0001", "CVE-2024-0002"]),
    ]


def test_bundles_built_from_an_update_are_a_feed() -> None:
    read = bundle_advisories(
        [
            published(1, ("CVE-2025-59375",)),
            published(2, ("CVE-2025-59375", "CVE-2025-66382")),
            published(1, ("CVE-2024-0001",), update=None),  # a recipe's bundle
        ]
    )
    assert [
        (a.cve, a.source, a.release, a.state, a.fixed_version, a.feed) for a in read.advisories
    ] == [
        ("CVE-2025-59375", "expat", "debian:12", FeedState.FIXED, U5, "bundles"),
        ("CVE-2025-66382", "expat", "debian:12", FeedState.FIXED, U5, "bundles"),
    ]
    assert read.records == 3
    assert read.skipped == {"bundles not built from a distribution update": 1}


@pytest.mark.parametrize(
    ("distro", "update", "release"),
    [
        ("debian 12", Update("expat", "2.5.0-1", "2.5.0-2"), "debian:12"),  # os-release's words
        (
            "debian",
            Update("libxml2", "2.9.14+dfsg-1.3~deb12u4", "2.9.14+dfsg-1.3~deb12u6"),
            "debian:12",
        ),
        (
            "debian",
            Update("zlib", "1:1.2.11.dfsg-2+deb11u1", "1:1.2.11.dfsg-2+deb11u2"),
            "debian:11",
        ),
        ("debian", Update("expat", "2.5.0-1", "2.5.0-2"), None),
        (None, Update("expat", "2.5.0-1", "2.5.0-2"), None),
    ],
)
def test_the_release_of_a_bundle(distro: str | None, update: Update, release: str | None) -> None:
    package = PackageInfo(name="lib", version=update.from_version, distro=distro)
    target = UserspaceTarget(build_id="7d" * 20, soname="lib.so.1", package=package)
    read = bundle_advisories([published(1, ("CVE-2024-0001",), target=target, update=update)])
    assert [a.release for a in read.advisories] == ([release] if release else [])
    assert [a.fixed_version for a in read.advisories] == ([update.to_version] if release else [])
    if release is None:
        assert read.skipped == {"bundles whose Debian release is not told": 1}


@pytest.mark.parametrize(
    ("update", "message"),
    [
        (
            Update("Expat", U2, U5),
            "bundles: userspace:" + "7d" * 20 + " level 2: update source 'Expat' is not a Debian "
            "source package name",
        ),
        (
            Update("expat", U2, "2.5.0-1+deb12u5 "),
            "bundles: userspace:" + "7d" * 20 + " level 2: update to_version: not a Debian "
            "version: '2.5.0-1+deb12u5 '",
        ),
    ],
)
def test_a_bundle_with_a_malformed_update_refuses_the_batch(update: Update, message: str) -> None:
    with pytest.raises(FeedError) as refused:
        bundle_advisories(
            [published(1, ("CVE-2024-0001",)), published(2, ("CVE-2024-0002",), update=update)]
        )
    assert str(refused.value) == message

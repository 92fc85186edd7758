"""The package part: sources at their oldest installed version, the newest kernel image, digests."""

from __future__ import annotations

from nonstop.cve.index import AdvisoryIndex
from nonstop.cve.model import InstalledPackage
from nonstop.cve.package_lists import list_digest
from nonstop.cve.packages import PackageSet
from tests.cve.world import RELEASE, expat, images, openssl, world


def package_set(packages: tuple[InstalledPackage, ...]) -> PackageSet:
    return PackageSet(AdvisoryIndex(world()[0]), RELEASE, packages, None)


def test_digest_is_of_the_list_not_its_order() -> None:
    packages = (*expat("2.5.0-1+deb12u1"), *openssl("3.0.16-1~deb12u1"))
    assert list_digest("dpkg", packages) == list_digest("dpkg", reversed(packages))
    assert list_digest("dpkg", packages) != list_digest(
        "dpkg", (*expat("2.5.0-1+deb12u2"), *openssl("3.0.16-1~deb12u1"))
    )


def test_sources_count_at_their_oldest_binary_and_the_kernel_at_its_newest_image() -> None:
    packages = (
        *openssl("3.0.17-1~deb12u3", libcrypto="3.0.15-1~deb12u1"),
        *images("6.1.119-1", "6.1.133-1", "6.1.128-1"),
        InstalledPackage("dpkg", "1.21.22", "dpkg", "1.21.22"),
    )
    part = package_set(packages)
    assert set(part.exposures) == {"openssl"}, "sources no advisory names are left out"
    assert part.exposures["openssl"].version == "3.0.15-1~deb12u1"
    assert part.kernel_image == "6.1.133-1"


def test_a_library_s_package_names_its_source_on_this_host() -> None:
    first = package_set(openssl("3.0.16-1~deb12u1"))
    renamed = (InstalledPackage("libssl3", "3.5.0-1", "openssl-next", "3.5.0-1"),)
    second = package_set(renamed)
    assert first.sources_of(["libssl3", "unknown"], openssl("3.0.16-1~deb12u1")) == {
        "libssl3": "openssl",
        "unknown": None,
    }
    assert second.sources_of(["libssl3"], renamed)["libssl3"] == "openssl-next"
    assert first.sources_of(["libssl3"], ())["libssl3"] == "openssl", "remembered"


def test_built_from_a_similar_set_it_equals_one_built_alone() -> None:
    index = AdvisoryIndex(world()[0])
    old = (*expat("2.5.0-1+deb12u1"), *openssl("3.0.16-1~deb12u1"), *images("6.1.119-1"))
    new = (*expat("2.5.0-1+deb12u2"), *images("6.1.119-1", "6.1.128-1"))
    like = PackageSet(index, RELEASE, old, None)
    built = PackageSet(index, RELEASE, new, None, like)
    alone = PackageSet(index, RELEASE, new, None)
    assert built.exposures == alone.exposures
    assert built.counts == alone.counts != like.counts
    assert built.exposures["expat"] is not like.exposures["expat"]

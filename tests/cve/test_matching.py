"""One host against advisories and published levels: every status, on small real-shaped worlds."""

from __future__ import annotations

import pytest

from nonstop.cve import counts
from nonstop.cve.matching import MAX_PACKAGES, HostError
from nonstop.cve.model import Advisory, FeedState, InstalledPackage, Status
from tests.cve.world import (
    APACHE,
    EXPAT_ID,
    KERNEL_TARGET,
    LIBCRYPTO_ID,
    LIBSSL_ID,
    NGINX,
    NGINX_WORKER,
    POSTFIX,
    SSHD,
    expat,
    host,
    images,
    kernel,
    level,
    library,
    listed,
    matcher,
    openssl,
    statuses,
)

U1 = "2.5.0-1+deb12u1"
U2 = "2.5.0-1+deb12u2"
EXPAT_TARGET = f"userspace:{EXPAT_ID}"


def test_package_alone_decides_without_running_libraries() -> None:
    assessment = matcher().assess(host(expat(U1)))
    assert statuses(assessment, "expat") == {
        "CVE-2022-43680": "not-affected",
        "CVE-2023-52425": "fixed-by-package",
        "CVE-2023-52426": "open-no-fix",
        "CVE-2024-45490": "fixed-by-package",
        "CVE-2024-50602": "open-fix-available",
        "CVE-2024-8176": "open-fix-available",
        "CVE-2025-59375": "open-fix-available",
        "CVE-2025-99001": "undetermined",
    }
    found = listed(assessment)
    assert set(found) == {
        "CVE-2023-52426",
        "CVE-2024-50602",
        "CVE-2024-8176",
        "CVE-2025-59375",
        "CVE-2025-99001",
    }, "not-affected and fixed-by-package are counted, not listed"
    assert found["CVE-2024-50602"].fixed_version == U2
    assert found["CVE-2024-50602"].installed_version == U1
    assert found["CVE-2024-8176"].urgency == "high"
    assert found["CVE-2023-52426"].nodsa == "Minor issue; hardening only"
    assert found["CVE-2024-50602"].feeds == ("debian-tracker",)
    assert counts.by_status(assessment.counts)[Status.FIXED_BY_PACKAGE] == 2
    assert sum(assessment.counts.values()) == 8


def test_live_patch_in_every_process_fixes_and_moves_the_effective_version() -> None:
    running = library(EXPAT_ID, "libexpat1", U1, NGINX, NGINX_WORKER, level=2)
    assessment = matcher().assess(host(expat(U1), (running,)))
    found = listed(assessment)
    assert found["CVE-2024-50602"].status is Status.FIXED_BY_LIVE_PATCH
    assert found["CVE-2024-8176"].status is Status.FIXED_BY_LIVE_PATCH
    assert found["CVE-2024-8176"].live_patch == level(EXPAT_TARGET, 2)
    assert found["CVE-2024-50602"].processes == ()
    # deb12u3's fix is not live: the effective version stops at deb12u2.
    assert found["CVE-2025-59375"].status is Status.OPEN_FIX_AVAILABLE
    assert assessment.effective_versions() == {"expat": U2}


def test_levels_are_cumulative_and_a_published_unapplied_level_is_named() -> None:
    running = library(EXPAT_ID, "libexpat1", U1, NGINX, level=1)
    assessment = matcher().assess(host(expat(U1), (running,)))
    found = listed(assessment)
    assert found["CVE-2024-50602"].status is Status.FIXED_BY_LIVE_PATCH
    assert found["CVE-2024-50602"].live_patch == level(EXPAT_TARGET, 1)
    assert found["CVE-2024-8176"].status is Status.OPEN_FIX_AVAILABLE
    assert found["CVE-2024-8176"].available_bundle == level(EXPAT_TARGET, 2)
    assert found["CVE-2024-8176"].fixed_version == U2
    # Only one of deb12u2's two fixes is live: no effective version.
    assert assessment.effective_versions() == {}


def test_an_applied_level_closes_earlier_levels_cves_it_does_not_repeat() -> None:
    # Level 2 names only CVE-2024-8176; applied, it closes level 1's CVE-2024-50602 too.
    only_two = (level(EXPAT_TARGET, 2),)
    running = library(EXPAT_ID, "libexpat1", U1, NGINX, level=2)
    found = {
        f.cve: f for f in matcher(levels=only_two).assess(host(expat(U1), (running,))).findings()
    }
    assert found["CVE-2024-8176"].status is Status.FIXED_BY_LIVE_PATCH
    assert found["CVE-2024-50602"].status is Status.OPEN_FIX_AVAILABLE, "no level names it"
    both = matcher().assess(host(expat(U1), (running,)))
    assert statuses(both, "expat")["CVE-2024-50602"] == "fixed-by-live-patch"


def test_partly_fixed_names_exactly_the_unpatched_processes() -> None:
    running = library(
        EXPAT_ID, "libexpat1", U1, NGINX, NGINX_WORKER, APACHE, level=2, unpatched=(APACHE,)
    )
    found = listed(matcher().assess(host(expat(U1), (running,))))
    assert found["CVE-2024-8176"].status is Status.PARTLY_FIXED
    assert found["CVE-2024-8176"].processes == (APACHE,)
    assert found["CVE-2024-8176"].live_patch == level(EXPAT_TARGET, 2)


def test_a_library_every_process_runs_unpatched_is_open_with_its_bundle() -> None:
    running = library(EXPAT_ID, "libexpat1", U1, NGINX, level=2, unpatched=(NGINX,))
    found = listed(matcher().assess(host(expat(U1), (running,))))
    assert found["CVE-2024-8176"].status is Status.OPEN_FIX_AVAILABLE
    assert found["CVE-2024-8176"].available_bundle == level(EXPAT_TARGET, 2)
    assert found["CVE-2024-8176"].processes == ()


def test_openssl_needs_every_library_a_level_names_patched_everywhere() -> None:
    packages = openssl("3.0.16-1~deb12u1")
    libssl = library(LIBSSL_ID, "libssl3", "3.0.16-1~deb12u1", NGINX, SSHD, level=1)
    libcrypto = library(LIBCRYPTO_ID, "libcrypto3", "3.0.16-1~deb12u1", NGINX, SSHD, level=1)
    both = listed(matcher().assess(host(packages, (libssl, libcrypto))))
    assert both["CVE-2025-9230"].status is Status.FIXED_BY_LIVE_PATCH
    assert both["CVE-2025-9232"].status is Status.FIXED_BY_LIVE_PATCH
    # libcrypto unpatched in sshd: CVE-2025-9230 (both libraries' levels) is partly fixed,
    # naming sshd; libssl, patched everywhere, does not count against it.
    partial = library(
        LIBCRYPTO_ID, "libcrypto3", "3.0.16-1~deb12u1", NGINX, SSHD, level=1, unpatched=(SSHD,)
    )
    found = listed(matcher().assess(host(packages, (libssl, partial))))
    assert found["CVE-2025-9230"].status is Status.PARTLY_FIXED
    assert found["CVE-2025-9230"].processes == (SSHD,)
    # libssl patched everywhere, libcrypto nowhere: still partly fixed, libcrypto's processes.
    bare = library(LIBCRYPTO_ID, "libcrypto3", "3.0.16-1~deb12u1", POSTFIX, level=None)
    found = listed(matcher().assess(host(packages, (libssl, bare))))
    assert found["CVE-2025-9230"].status is Status.PARTLY_FIXED
    assert found["CVE-2025-9230"].processes == (POSTFIX,)
    # CVE-2025-9232: only libcrypto's level names it; libssl does not count against it.
    assert found["CVE-2025-9232"].status is Status.OPEN_FIX_AVAILABLE
    assert found["CVE-2025-9232"].available_bundle == level(f"userspace:{LIBCRYPTO_ID}", 1)
    only_libssl = listed(matcher().assess(host(packages, (libssl,))))
    assert only_libssl["CVE-2025-9230"].status is Status.FIXED_BY_LIVE_PATCH
    assert only_libssl["CVE-2025-9232"].status is Status.OPEN_FIX_AVAILABLE
    assert only_libssl["CVE-2025-9232"].available_bundle is None, "libcrypto is not running"


def test_binaries_of_one_source_at_different_versions_count_at_the_oldest() -> None:
    assessment = matcher().assess(host(openssl("3.0.17-1~deb12u3", libcrypto="3.0.15-1~deb12u1")))
    assert statuses(assessment, "openssl")["CVE-2024-13176"] == "open-fix-available"
    assert statuses(assessment, "openssl")["CVE-2024-9143"] == "fixed-by-package"
    assert next(assessment.findings()).installed_version == "3.0.15-1~deb12u1"


def test_a_deleted_older_library_needs_a_restart_for_the_fixes_it_predates() -> None:
    old = library(EXPAT_ID, "libexpat1", U1, NGINX, NGINX_WORKER, deleted=True)
    found = listed(matcher().assess(host(expat(U2), (old,))))
    assert found["CVE-2024-8176"].status is Status.RESTART_NEEDED
    assert found["CVE-2024-8176"].processes == (NGINX, NGINX_WORKER)
    assert found["CVE-2024-50602"].status is Status.RESTART_NEEDED
    assert "CVE-2024-45490" not in found, "fixed in deb12u1, which the old library has"
    assert found["CVE-2025-59375"].status is Status.OPEN_FIX_AVAILABLE


def test_a_deleted_library_of_unknown_version_may_predate_every_fix() -> None:
    old = library(EXPAT_ID, "libexpat1", U2, NGINX, deleted=True)  # the installed version
    found = listed(matcher().assess(host(expat(U2), (old,))))
    restart = {cve for cve, f in found.items() if f.status is Status.RESTART_NEEDED}
    assert restart == {"CVE-2023-52425", "CVE-2024-45490", "CVE-2024-50602", "CVE-2024-8176"}


def test_a_live_patch_in_the_deleted_library_spares_the_restart() -> None:
    old = library(EXPAT_ID, "libexpat1", U1, NGINX, APACHE, deleted=True, level=2)
    found = listed(matcher().assess(host(expat(U2), (old,))))
    assert found["CVE-2024-8176"].status is Status.FIXED_BY_LIVE_PATCH
    partly = library(
        EXPAT_ID, "libexpat1", U1, NGINX, APACHE, deleted=True, level=2, unpatched=(APACHE,)
    )
    found = listed(matcher().assess(host(expat(U2), (partly,))))
    assert found["CVE-2024-8176"].status is Status.RESTART_NEEDED
    assert found["CVE-2024-8176"].processes == (APACHE,)


def test_the_running_kernel_against_its_installed_image_and_levels() -> None:
    packages = images("6.1.128-1")
    unpatched = matcher().assess(host(packages, running=kernel("6.1.119-1")))
    assert statuses(unpatched, "linux") == {
        "CVE-2021-3542": "not-affected",
        "CVE-2023-3640": "open-no-fix",
        "CVE-2024-1086": "fixed-by-package",
        "CVE-2024-53104": "restart-needed",
        "CVE-2025-21756": "open-fix-available",
        "CVE-2025-38352": "open-fix-available",
    }
    found = listed(unpatched)
    assert found["CVE-2024-53104"].kernel_reboot
    assert found["CVE-2024-53104"].installed_version == "6.1.119-1"
    assert found["CVE-2025-21756"].available_bundle == level(KERNEL_TARGET, 2)
    assert found["CVE-2025-38352"].available_bundle is None
    assert unpatched.effective_versions() == {}

    patched = matcher().assess(host(packages, running=kernel("6.1.119-1", applied=1)))
    found = listed(patched)
    assert found["CVE-2024-53104"].status is Status.FIXED_BY_LIVE_PATCH
    assert not found["CVE-2024-53104"].kernel_reboot
    assert found["CVE-2025-21756"].status is Status.OPEN_FIX_AVAILABLE
    assert patched.effective_versions() == {"linux": "6.1.128-1"}, "what --uname reports"


def test_an_old_running_kernel_needs_a_reboot_even_with_no_level() -> None:
    assessment = matcher().assess(host(images("6.1.133-1", "6.1.76-1"), running=kernel("6.1.76-1")))
    assert statuses(assessment, "linux")["CVE-2025-21756"] == "restart-needed"
    assert statuses(assessment, "linux")["CVE-2024-1086"] == "fixed-by-package"


def test_an_unknown_running_kernel_version_leaves_fixes_undetermined() -> None:
    assessment = matcher().assess(host(images("6.1.133-1"), running=kernel(None, applied=2)))
    linux = statuses(assessment, "linux")
    assert linux["CVE-2024-1086"] == "undetermined"
    assert linux["CVE-2025-21756"] == "fixed-by-live-patch"
    assert linux["CVE-2023-3640"] == "open-no-fix"


def test_counts_match_every_finding_listed_or_not() -> None:
    running = library(EXPAT_ID, "libexpat1", U1, NGINX, level=2, unpatched=(NGINX,))
    state = host(
        (*expat(U1), *openssl("3.0.16-1~deb12u1"), *images("6.1.128-1")),
        (running,),
        kernel("6.1.119-1", applied=1),
    )
    assessment = matcher().assess(state)
    every: counts.Counts = {}
    for finding in assessment.findings(resolved=True):
        counts.add(every, {(finding.status, finding.urgency): 1})
    assert every == assessment.counts
    assert len(list(assessment.findings(resolved=True))) == 8 + 5 + 6


def test_a_feed_fix_the_tracker_does_not_know_yet_reaches_the_host() -> None:
    changelog = Advisory(
        "CVE-2023-52426", "expat", "debian:12", FeedState.FIXED, U2, feed="changelog"
    )
    found = listed(matcher(changelog).assess(host(expat(U1))))
    assert found["CVE-2023-52426"].status is Status.OPEN_FIX_AVAILABLE
    assert found["CVE-2023-52426"].feeds == ("debian-tracker", "changelog")
    assert found["CVE-2023-52426"].urgency == "unimportant"


def test_a_host_state_matching_cannot_read_is_refused_with_its_reason() -> None:
    junk = (InstalledPackage("libexpat1", "2.5.0 junk", "expat", "2.5.0 junk"),)
    with pytest.raises(HostError, match=r"host h1: not a Debian version"):
        matcher().assess(host(junk))
    huge = expat(U1) * (MAX_PACKAGES + 1)
    with pytest.raises(HostError, match="more than matching takes"):
        matcher().assess(host(huge))

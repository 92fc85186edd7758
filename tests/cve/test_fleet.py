"""Check-ins update the fleet's counts and name what changed, exactly as a recompute would."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nonstop.cve import counts
from nonstop.cve.fleet import Fleet, HostChange
from nonstop.cve.matching import HostAssessment, HostError
from nonstop.cve.model import Finding, HostState, InstalledPackage, RunningLibrary, Status
from nonstop.cve.package_lists import list_digest
from tests.cve.world import (
    APACHE,
    EXPAT_ID,
    LIBCRYPTO_ID,
    LIBSSL_ID,
    NGINX,
    SSHD,
    expat,
    host,
    images,
    kernel,
    library,
    matcher,
    openssl,
)

PROCESSES = (NGINX, APACHE, SSHD)
EXPAT_VERSIONS = ("2.5.0-1", "2.5.0-1+deb12u1", "2.5.0-1+deb12u2", "2.5.0-1+deb12u3")
OPENSSL_VERSIONS = ("3.0.15-1~deb12u1", "3.0.16-1~deb12u1", "3.0.17-1~deb12u3")
KERNELS = ("6.1.76-1", "6.1.119-1", "6.1.128-1", "6.1.133-1")


@st.composite
def libraries(draw: st.DrawFn, build_id: str, package: str) -> RunningLibrary:
    processes = tuple(draw(st.lists(st.sampled_from(PROCESSES), min_size=1, unique=True)))
    unpatched = tuple(p for p in processes if draw(st.booleans()))
    return library(
        build_id,
        package,
        draw(st.sampled_from(EXPAT_VERSIONS + OPENSSL_VERSIONS)),
        *processes,
        level=draw(st.sampled_from((None, 1, 2))),
        unpatched=unpatched,
        deleted=draw(st.booleans()),
    )


@st.composite
def package_lists(draw: st.DrawFn) -> tuple[InstalledPackage, ...]:
    packages = images(*draw(st.sets(st.sampled_from(KERNELS))))
    if draw(st.booleans()):  # a binary of the kernel's own source, at its own version
        version = draw(st.sampled_from(KERNELS))
        packages += (InstalledPackage("linux-libc-dev", version, "linux", version),)
    if draw(st.booleans()):
        packages += expat(draw(st.sampled_from(EXPAT_VERSIONS)))
    if draw(st.booleans()):
        versions = draw(st.lists(st.sampled_from(OPENSSL_VERSIONS), min_size=1, max_size=2))
        packages += openssl(*versions)
    return packages


@st.composite
def host_states(
    draw: st.DrawFn, host_id: str, pool: list[tuple[InstalledPackage, ...]]
) -> HostState:
    """A host with one of the package lists of POOL (hosts share them), running at random."""
    running = [
        draw(libraries(build_id, package))
        for build_id, package in (
            (EXPAT_ID, "libexpat1"),
            (LIBSSL_ID, "libssl3"),
            (LIBCRYPTO_ID, "libcrypto3"),
        )
        if draw(st.booleans())
    ]
    running_kernel = None
    if draw(st.booleans()):
        running_kernel = kernel(draw(st.sampled_from(KERNELS)), draw(st.sampled_from((None, 1, 2))))
    return host(draw(st.sampled_from(pool)), tuple(running), running_kernel, host_id)


def listed(assessment: HostAssessment | None) -> dict[tuple[str, str], Finding]:
    """Listed findings by source and CVE, the installed version left out (not a change)."""
    if assessment is None:
        return {}
    return {(f.source, f.cve): replace(f, installed_version=None) for f in assessment.findings()}


def tally(findings: Iterable[Finding]) -> counts.Counts:
    summed: counts.Counts = {}
    for finding in findings:
        counts.add(summed, {(finding.status, finding.urgency): 1})
    return summed


def replay(
    before: dict[tuple[str, str], Finding], change: HostChange
) -> dict[tuple[str, str], Finding]:
    after = dict(before)
    for old, new in change.findings():
        if old is not None:
            assert after.pop((old.source, old.cve)) == replace(old, installed_version=None)
        if new is not None:
            after[(new.source, new.cve)] = replace(new, installed_version=None)
    return after


@settings(max_examples=80, deadline=None)
@given(
    st.lists(package_lists(), min_size=1, max_size=3),
    st.lists(
        st.tuples(st.sampled_from(("a", "b")), st.none() | st.data()),
        min_size=1,
        max_size=8,
    ),
)
def test_checkins_keep_the_counts_and_changes_of_a_full_recompute(
    pool: list[tuple[InstalledPackage, ...]],
    steps: list[tuple[str, st.DataObject | None]],
) -> None:
    fleet = Fleet(matcher())
    current: dict[str, HostState] = {}
    for host_id, data in steps:
        before = listed(fleet.assessment(host_id))
        if data is None:
            change = fleet.remove(host_id)
            current.pop(host_id, None)
        else:
            state = data.draw(host_states(host_id, pool))
            change = fleet.checkin(state, list_digest("dpkg", state.packages))
            current[host_id] = state
        assert replay(before, change) == listed(fleet.assessment(host_id))
        fresh = matcher()
        assessments = [fresh.assess(state) for state in current.values()]
        assert fleet.totals == counts.total(a.counts for a in assessments)
        for assessment in assessments:
            assert assessment.counts == tally(assessment.findings(resolved=True))
    recomputed = Fleet(matcher())
    assert (
        recomputed.recompute((s, list_digest("dpkg", s.packages)) for s in current.values()) == {}
    )
    assert recomputed.totals == fleet.totals
    for host_id in current:
        assert listed(recomputed.assessment(host_id)) == listed(fleet.assessment(host_id))


def test_a_checkin_that_changes_nothing_changes_nothing() -> None:
    state = host(
        expat("2.5.0-1+deb12u1"),
        (library(EXPAT_ID, "libexpat1", "2.5.0-1+deb12u1", NGINX, level=1),),
    )
    fleet = Fleet(matcher())
    first = fleet.checkin(state, "digest")
    assert {(c.before, c.after and c.after.status) for c in first.findings()} >= {
        (None, Status.FIXED_BY_LIVE_PATCH)
    }
    kept = fleet.assessment("h1")
    again = fleet.checkin(state, "digest")
    assert again.counts == {} and again.findings() == ()
    assessment = fleet.assessment("h1")
    assert kept is not None and assessment is not None
    assert assessment.package_set is kept.package_set, "the package part is not recomputed"


def test_a_refused_host_leaves_the_fleet_as_it_was() -> None:
    fleet = Fleet(matcher())
    good = host(expat("2.5.0-1+deb12u1"))
    fleet.checkin(good)
    totals = dict(fleet.totals)
    bad = host((InstalledPackage("libexpat1", "junk version", "expat", "junk version"),))
    with pytest.raises(HostError):
        fleet.checkin(bad)
    assert fleet.totals == totals
    assert fleet.recompute([(good, None), (host(bad.packages, host_id="h2"), None)]) == {
        "h2": "host h2: not a Debian version: 'junk version'"
    }
    assert fleet.totals == totals and len(fleet) == 1


def test_an_upgrade_names_the_fixes_it_brought_not_every_finding_of_the_source() -> None:
    fleet = Fleet(matcher())
    fleet.checkin(host(expat("2.5.0-1+deb12u1")), "u1")
    change = fleet.checkin(host(expat("2.5.0-1+deb12u3")), "u3")
    assert [(c.before and c.before.cve, c.after) for c in change.findings()] == [
        ("CVE-2024-50602", None),
        ("CVE-2024-8176", None),
        ("CVE-2025-59375", None),
    ], "CVE-2023-52426 stays open with no fix: only its installed version moved"
    assert change.counts == {
        (Status.OPEN_FIX_AVAILABLE, "medium"): -2,
        (Status.OPEN_FIX_AVAILABLE, "high"): -1,
        (Status.FIXED_BY_PACKAGE, "medium"): 2,
        (Status.FIXED_BY_PACKAGE, "high"): 1,
    }

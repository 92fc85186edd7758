"""A patcher killed (SIGKILL) at chosen instants: the target keeps running, and while the
patcher is dead, before any recovery run, every replaced function answers from the old level
or every one from the new level (never a mix); the next run then finishes or rolls back the
move from the in-process header (commit flag and states)."""

from __future__ import annotations

import pytest

from nonstop.userspace.region import State, leaked_memfds

from .conftest import PARTIAL_LEVEL
from .crash_driver import run as run_killed
from .helpers import clean, entries_into, regions, spec_for, whole_text_matches_file
from .test_engine import ORIGINAL, patched

SITES = 7  # entry sites of levels 1-3


def by_level(pid: int) -> dict[int, tuple[State, bool]]:
    return {r.level: (r.state, r.committed) for r in regions(pid)}


@pytest.mark.parametrize("nth", [1, 4, SITES])
def test_killed_between_entry_writes_the_old_level_runs_entirely(
    start_target, bundles, trusted, trusted_dir, engine, tmp_path, nth
):
    target = start_target(busy=2, sleepers=2)
    assert run_killed(target.pid, str(bundles[1]), trusted_dir, tmp_path, "site-written", nth) == -9
    # Patcher dead, no recovery yet: NTH entries already jump into level 1, yet every
    # function still answers as the original code.
    assert target.alive()
    assert target.behaviour() == ORIGINAL
    (half_done,) = regions(target.pid)
    assert (half_done.state, half_done.committed) == (State.PREPARED, False)
    assert entries_into(target.pid, half_done) == nth

    result = engine.apply(target.pid, spec_for(bundles[1], trusted))
    assert result.result == "patched", result.reason  # rolled back, then applied anew
    assert target.behaviour() == patched(1)
    assert clean(target.pid)
    assert target.stats()["errors"] == 0


@pytest.mark.parametrize(("event", "nth"), [("committed", 1), ("slot-written", 1)])
def test_killed_after_the_commit_the_new_level_runs_entirely(
    start_target, bundles, trusted, trusted_dir, engine, tmp_path, event, nth
):
    target = start_target(busy=2, sleepers=2)
    assert engine.apply(target.pid, spec_for(bundles[1], trusted)).result == "patched"
    assert run_killed(target.pid, str(bundles[2]), trusted_dir, tmp_path, event, nth) == -9
    assert by_level(target.pid) == {1: (State.ACTIVE, True), 2: (State.PREPARED, True)}
    assert target.behaviour() == patched(2)

    result = engine.apply(target.pid, spec_for(bundles[2], trusted))
    assert result.result == "already", result.reason  # the next run finished level 2
    assert target.behaviour() == patched(2)
    assert clean(target.pid) and [r.level for r in regions(target.pid)] == [2]


def test_killed_during_a_replace_that_drops_functions(
    start_target, bundles, trusted, trusted_dir, engine, tmp_path
):
    """Level 4 replaces fewer functions than level 3: the dropped ones go through level 4's
    stubs to their original code, so they too change only at the commit."""
    target = start_target(busy=2, sleepers=2)
    assert engine.apply(target.pid, spec_for(bundles[3], trusted)).result == "patched"
    partial = str(bundles[PARTIAL_LEVEL])
    assert run_killed(target.pid, partial, trusted_dir, tmp_path, "site-written", SITES - 1) == -9
    (level4,) = [r for r in regions(target.pid) if r.level == PARTIAL_LEVEL]
    assert entries_into(target.pid, level4) == SITES - 1 and not level4.committed
    assert target.behaviour() == patched(3)

    assert run_killed(target.pid, partial, trusted_dir, tmp_path, "committed", 1) == -9
    assert target.behaviour() == patched(PARTIAL_LEVEL)
    result = engine.apply(target.pid, spec_for(bundles[PARTIAL_LEVEL], trusted))
    assert result.result == "already", result.reason
    assert target.behaviour() == patched(PARTIAL_LEVEL) and clean(target.pid)


@pytest.mark.parametrize(
    ("event", "nth", "expected"),
    [("stopped", 1, 2), ("committed", 1, 0), ("site-written", 1, 0), ("site-written", 5, 0)],
)
def test_killed_during_a_revert(
    start_target, bundles, trusted, trusted_dir, engine, tmp_path, fixture_build, event, nth,
    expected,
):  # fmt: skip
    target = start_target(busy=2, sleepers=2)
    assert engine.apply(target.pid, spec_for(bundles[2], trusted)).result == "patched"
    assert run_killed(target.pid, "--revert", trusted_dir, tmp_path, event, nth) == -9
    (level2,) = regions(target.pid)
    assert level2.committed is (expected == 2)
    if event == "site-written":  # the commit happened, NTH entries got their bytes back
        assert entries_into(target.pid, level2) == SITES - nth
    assert target.behaviour() == patched(expected)

    assert engine.revert(target.pid).result == "reverted"
    assert target.behaviour() == ORIGINAL
    assert regions(target.pid) == []
    assert whole_text_matches_file(target.pid, fixture_build.library)


@pytest.mark.parametrize(("event", "nth"), [("prepared", 1), ("injecting", 1), ("injecting", 2)])
def test_killed_while_preparing_or_injecting(
    start_target, bundles, trusted, trusted_dir, engine, tmp_path, fixture_build, event, nth
):
    """Killed with a thread on the injection gadget: the gadget puts the thread back."""
    target = start_target(busy=2, sleepers=2)
    before = target.stats()
    assert run_killed(target.pid, str(bundles[1]), trusted_dir, tmp_path, event, nth) == -9
    assert target.alive()
    assert target.behaviour() == ORIGINAL
    after = target.stats()
    assert after["errors"] == before["errors"] == 0 and after["early"] == 0

    result = engine.apply(target.pid, spec_for(bundles[1], trusted))
    assert result.result == "patched", result.reason
    assert target.behaviour() == patched(1)
    assert clean(target.pid) and leaked_memfds(target.pid) == []
    assert engine.revert(target.pid).result == "reverted"
    assert whole_text_matches_file(target.pid, fixture_build.library)

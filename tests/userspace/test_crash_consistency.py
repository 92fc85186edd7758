"""A patcher killed (SIGKILL) at chosen instants: the target keeps running, each function at
its old or new code, and the next run finishes the move from the in-process headers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nonstop.userspace.region import State, leaked_memfds

from .helpers import clean, regions, spec_for, whole_text_matches_file
from .test_engine import ORIGINAL, patched

REPO = Path(__file__).resolve().parents[2]


def run_killed(pid: int, what: str, trusted_dir: Path, lock_dir: Path, event: str, nth: int) -> int:
    done = subprocess.run(
        [sys.executable, "-m", "tests.userspace.crash_driver", str(pid), what, str(trusted_dir),
         str(lock_dir), event, str(nth)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return done.returncode


def mixed(behaviour: dict[str, str], before: dict[str, str], after: dict[str, str]) -> bool:
    """Each answer is either the old or the new one."""
    return all(behaviour[k] in (before[k], after[k]) for k in behaviour)


@pytest.mark.parametrize("nth", [1, 3, 6])
def test_killed_between_site_writes_is_rolled_forward(
    start_target, bundles, trusted, trusted_dir, engine, tmp_path, nth
):
    target = start_target(busy=2, sleepers=2)
    code = run_killed(target.pid, str(bundles[1]), trusted_dir, tmp_path, "site-written", nth)
    assert code == -9
    assert target.alive()
    assert mixed(target.behaviour(), ORIGINAL, patched(1))
    (half_done,) = regions(target.pid)
    assert half_done.state is State.PREPARED

    result = engine.apply(target.pid, spec_for(bundles[1], trusted))
    assert result.result == "already", result.reason  # the next run completed level 1
    assert target.behaviour() == patched(1)
    assert clean(target.pid)
    assert target.stats()["errors"] == 0


def test_killed_during_replace_and_revert(
    start_target, bundles, trusted, trusted_dir, engine, tmp_path, fixture_build
):
    target = start_target(busy=2, sleepers=2)
    assert engine.apply(target.pid, spec_for(bundles[1], trusted)).result == "patched"
    assert run_killed(target.pid, str(bundles[2]), trusted_dir, tmp_path, "site-written", 4) == -9
    assert mixed(target.behaviour(), patched(1), patched(2))
    assert engine.apply(target.pid, spec_for(bundles[2], trusted)).result == "already"
    assert target.behaviour() == patched(2) and clean(target.pid)

    assert run_killed(target.pid, "--revert", trusted_dir, tmp_path, "site-written", 2) == -9
    assert mixed(target.behaviour(), patched(2), ORIGINAL)
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

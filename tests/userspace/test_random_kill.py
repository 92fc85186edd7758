"""Kill -9 of the patcher at random points (CI runs a modest number; bench/userspace_kill.py
runs >= 200): zero target crashes, never a mix of old and new level while the patcher is dead,
every target consistent after the next run."""

from __future__ import annotations

import os
import subprocess

from .conftest import NONSTOPCTL
from .killtrials import run_trials
from .test_engine import patched

TRIALS = int(os.environ.get("NONSTOP_KILL_TRIALS", "16"))


def test_random_kills_never_crash_or_mix(
    start_target, bundles, trusted, trusted_dir, engine, agent_env, tmp_path
):
    target = start_target(busy=2, sleepers=2)

    def nonstopctl(args: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*NONSTOPCTL, *args], env=agent_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip

    report = run_trials(
        TRIALS, target, bundles, trusted, engine, nonstopctl, patched, trusted_dir, tmp_path
    )
    assert report.target_crashes == 0, report.problems
    assert report.mixed_while_dead == 0, report.problems
    assert report.inconsistent_after_next_run == 0, report.problems
    assert report.trials == TRIALS
    # The kills really landed inside runs, at an instant and at fixed points.
    assert report.killed_at_instant > 0 and report.killed_at_point > 0

"""Kill -9 of the patcher at random points (CI runs a modest number; bench/userspace_kill.py
runs >= 200): zero target crashes, every target consistent after the next run."""

from __future__ import annotations

import os
import subprocess

from .conftest import NONSTOPCTL
from .killtrials import run_trials
from .test_engine import ORIGINAL, patched

TRIALS = int(os.environ.get("NONSTOP_KILL_TRIALS", "16"))


def test_random_kills_never_crash_a_target(start_target, bundles, trusted, engine, agent_env):
    target = start_target(busy=2, sleepers=2)

    def nonstopctl(args: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*NONSTOPCTL, *args], env=agent_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip

    report = run_trials(
        TRIALS, target, bundles, trusted, engine, nonstopctl,
        lambda level: patched(level) if level else ORIGINAL,
    )  # fmt: skip
    assert report.target_crashes == 0, report.problems
    assert report.inconsistent_after_next_run == 0, report.problems
    assert report.trials == TRIALS
    assert report.killed_mid_run > 0  # the kills really landed inside runs

"""Kill -9 of `nonstopctl` at random instants, then check the target and finish with a next run.

Shared by tests/userspace/test_random_kill.py (a few trials) and
bench/userspace_kill.py (at least 200).
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nonstop.bundle import TrustedKeys
from nonstop.userspace import Engine

from .helpers import clean, spec_for


@dataclass
class TrialReport:
    trials: int = 0
    killed_mid_run: int = 0
    finished_before_kill: int = 0
    target_crashes: int = 0
    inconsistent_after_next_run: int = 0
    problems: list[str] = field(default_factory=list)


def run_trials(
    count: int,
    target: object,
    bundles: dict[int, Path],
    trusted: TrustedKeys,
    engine: Engine,
    nonstopctl: Callable[[list[str]], subprocess.Popen[str]],
    expected: Callable[[int], dict[str, str]],
    seed: int = 1,
) -> TrialReport:
    """COUNT trials on TARGET (a tests.userspace.conftest.Target) cycling levels 1-3 and unload."""
    rng = random.Random(seed)
    report = TrialReport()
    level = 0
    typical = _typical_duration(target, bundles, nonstopctl)
    engine.revert(target.pid)  # type: ignore[attr-defined]
    for _ in range(count):
        report.trials += 1
        next_level = level + 1 if level < 3 and rng.random() < 0.75 else 0
        argv = (
            ["--lib-update", "--bundle", str(bundles[next_level])]
            if next_level
            else ["--lib-unload"]
        )
        process = nonstopctl([*argv, "--pid", str(target.pid), "--json"])  # type: ignore[attr-defined]
        # Half the kills anywhere in the run, half near its end where the engine works.
        delay = (
            rng.uniform(0, 1.1 * typical)
            if rng.random() < 0.5
            else rng.uniform(0.6 * typical, 1.05 * typical)
        )
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
        if process.returncode == -signal.SIGKILL:
            report.killed_mid_run += 1
        else:
            report.finished_before_kill += 1
        if not target.alive():  # type: ignore[attr-defined]
            report.target_crashes += 1
            report.problems.append(f"target died after a kill at {delay:.3f}s")
            break
        # The next run: it must find whatever was left half-done and finish the move.
        if next_level:
            result = engine.apply(target.pid, spec_for(bundles[next_level], trusted))  # type: ignore[attr-defined]
            ok_results = {"patched", "already"}
        else:
            result = engine.revert(target.pid)  # type: ignore[attr-defined]
            ok_results = {"reverted", "already"}
        behaviour = target.behaviour()  # type: ignore[attr-defined]
        stats = target.stats()  # type: ignore[attr-defined]
        if (
            result.result not in ok_results
            or behaviour != expected(next_level)
            or not clean(target.pid)  # type: ignore[attr-defined]
            or stats["errors"]
            or stats["early"]
        ):
            report.inconsistent_after_next_run += 1
            report.problems.append(f"level {next_level}: {result.result} {result.reason} {stats}")
        level = next_level
    return report


def _typical_duration(
    target: object,
    bundles: dict[int, Path],
    nonstopctl: Callable[[list[str]], subprocess.Popen[str]],
) -> float:
    started = time.monotonic()
    process = nonstopctl(["--lib-update", "--bundle", str(bundles[1]), "--pid", str(target.pid)])  # type: ignore[attr-defined]
    process.communicate(timeout=60)
    return time.monotonic() - started

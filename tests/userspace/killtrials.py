"""Kill -9 of a patcher at random moments, then check the target and finish with a next run.

Half the trials kill `nonstopctl` at a random instant of its run (wall clock: most land
outside the short stop window); the other half make a patcher SIGKILL itself at a random one
of the engine's fixed points (the Nth entry write, the commit, a slot write, ...), so that
every intermediate state of a move is reached. Right after each kill, before any recovery,
every replaced function is called from the target: the answers must all be the old level's
or all the new level's, never a mix. Then the next run must leave the target consistent.

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

from .conftest import Target
from .crash_driver import run as run_killed
from .helpers import clean, spec_for

POINTS = (
    ("prepared", 1),
    ("injecting", 6),
    ("stopped", 1),
    ("site-written", 8),
    ("committed", 1),
    ("slot-written", 8),
    ("switched", 1),
)
"""Engine hook events and how many times one run may reach each."""


@dataclass
class TrialReport:
    trials: int = 0
    killed_at_instant: int = 0
    killed_at_point: int = 0
    finished_before_kill: int = 0
    target_crashes: int = 0
    mixed_while_dead: int = 0
    """Trials whose target answered partly as the old level and partly as the new one."""
    inconsistent_after_next_run: int = 0
    problems: list[str] = field(default_factory=list)


def run_trials(
    count: int,
    target: Target,
    bundles: dict[int, Path],
    trusted: TrustedKeys,
    engine: Engine,
    nonstopctl: Callable[[list[str]], subprocess.Popen[str]],
    expected: Callable[[int], dict[str, str]],
    trusted_dir: Path,
    work: Path,
    seed: int = 1,
) -> TrialReport:
    """COUNT trials on TARGET cycling through the levels of BUNDLES in order and unload;
    EXPECTED(level) is the target's behaviour at a level (0: the original code). Patchers that
    kill themselves trust TRUSTED_DIR and keep their locks under WORK."""
    rng = random.Random(seed)
    report = TrialReport()
    level = 0
    top = max(bundles)
    typical = _typical_duration(target, bundles, nonstopctl)
    engine.revert(target.pid)
    for _ in range(count):
        report.trials += 1
        next_level = level + 1 if level < top and rng.random() < 0.75 else 0
        if rng.random() < 0.5:
            how, killed = _kill_at_instant(rng, typical, target, bundles, next_level, nonstopctl)
            report.killed_at_instant += killed
        else:
            event, most = rng.choice(POINTS)
            nth = rng.randint(1, most)
            how = f"killed at {event} #{nth}"
            what = str(bundles[next_level]) if next_level else "--revert"
            status = run_killed(target.pid, what, trusted_dir, work / "locks", event, nth)
            killed = status == -signal.SIGKILL
            report.killed_at_point += killed
        report.finished_before_kill += not killed
        if not target.alive():
            report.target_crashes += 1
            report.problems.append(f"target died, {how}")
            break
        seen = target.behaviour()
        if seen not in (expected(level), expected(next_level)):
            report.mixed_while_dead += 1
            report.problems.append(f"level {level} -> {next_level}, {how}: {seen}")
        # The next run: it must find whatever was left half-done and finish the move.
        if next_level:
            result = engine.apply(target.pid, spec_for(bundles[next_level], trusted))
            ok_results = {"patched", "already"}
        else:
            result = engine.revert(target.pid)
            ok_results = {"reverted", "already"}
        behaviour = target.behaviour()
        stats = target.stats()
        if (
            result.result not in ok_results
            or behaviour != expected(next_level)
            or not clean(target.pid)
            or stats["errors"]
            or stats["early"]
        ):
            report.inconsistent_after_next_run += 1
            report.problems.append(f"level {next_level}: {result.result} {result.reason} {stats}")
        level = next_level
    return report


def _kill_at_instant(
    rng: random.Random,
    typical: float,
    target: Target,
    bundles: dict[int, Path],
    level: int,
    nonstopctl: Callable[[list[str]], subprocess.Popen[str]],
) -> tuple[str, bool]:
    argv = ["--lib-update", "--bundle", str(bundles[level])] if level else ["--lib-unload"]
    process = nonstopctl([*argv, "--pid", str(target.pid), "--json"])
    # Half anywhere in the run, half near its end where the engine works.
    delay = (
        rng.uniform(0, 1.1 * typical)
        if rng.random() < 0.5
        else rng.uniform(0.6 * typical, 1.05 * typical)
    )
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    return f"killed at {delay:.3f}s", process.returncode == -signal.SIGKILL


def _typical_duration(
    target: Target,
    bundles: dict[int, Path],
    nonstopctl: Callable[[list[str]], subprocess.Popen[str]],
) -> float:
    started = time.monotonic()
    process = nonstopctl(["--lib-update", "--bundle", str(bundles[1]), "--pid", str(target.pid)])
    process.communicate(timeout=60)
    return time.monotonic() - started

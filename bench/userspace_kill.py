"""Kill -9 of `nonstopctl --lib-update/--lib-unload` at random instants, at least 200 trials:
counts target crashes, targets answering with a mix of old and new level while the patcher is
dead (before any recovery), and targets left inconsistent after the next run (all must be 0).

    .venv/bin/python bench/userspace_kill.py [TRIALS] [SEED]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nonstop.bundle import TrustedKeys
from nonstop.userspace import Engine, EngineOptions
from userspace_common import build_fixtures, load_average, require_root, signed_bundles


def main() -> None:
    require_root()
    # The trial logic is shared with the test suite (importable once userspace_common set the path).
    from tests.userspace.conftest import NONSTOPCTL, PARTIAL, PARTIAL_LEVEL, Target
    from tests.userspace.killtrials import run_trials
    from tests.userspace.test_engine import patched

    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    cache = build_fixtures()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bundles, env = signed_bundles(work, (1, 2, 3, PARTIAL_LEVEL), {PARTIAL_LEVEL: PARTIAL})

        def nonstopctl(args: list[str]) -> subprocess.Popen[str]:
            return subprocess.Popen([*NONSTOPCTL, *args], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)  # fmt: skip

        target = Target(cache / "nsfix_prog", 2, 2)
        try:
            engine = Engine(EngineOptions(lock_dir=work / "locks"))
            started = time.monotonic()
            report = run_trials(
                trials, target, bundles, TrustedKeys.from_dir(work / "trusted"), engine,
                nonstopctl, patched, work / "trusted", work, seed=seed,
            )  # fmt: skip
        finally:
            target.stop()
    print(f"{report.trials} trials in {time.monotonic() - started:.0f} s, seed {seed} "
          f"(load {load_average()})")  # fmt: skip
    print(f"  killed at a random instant: {report.killed_at_instant}; at a random engine "
          f"point: {report.killed_at_point}; finished before the kill: "
          f"{report.finished_before_kill}")  # fmt: skip
    print(f"  target crashes: {report.target_crashes}; mixed old/new while the patcher was "
          f"dead: {report.mixed_while_dead}; inconsistent after the next run: "
          f"{report.inconsistent_after_next_run}")  # fmt: skip
    for problem in report.problems:
        print(f"  problem: {problem}")
    if report.target_crashes or report.mixed_while_dead or report.inconsistent_after_next_run:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

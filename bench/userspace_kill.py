"""Kill -9 of `nonstopctl --lib-update/--lib-unload` at random instants, at least 200 trials:
counts target crashes (must be 0) and targets left inconsistent after the next run (must be 0).

    .venv/bin/python bench/userspace_kill.py [TRIALS] [SEED]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from userspace_common import REPO, build_fixtures, load_average, nsfix_spec, require_root

from nonstop.bundle import TrustedKeys, generate_keypair
from nonstop.bundle.symbols import symbol_map_of
from nonstop.cli import main as nonstop_main
from nonstop.userspace import Engine, EngineOptions
from tests.userspace.conftest import NONSTOPCTL, Target
from tests.userspace.killtrials import run_trials
from tests.userspace.test_engine import ORIGINAL, patched


def main() -> None:
    require_root()
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    cache = build_fixtures()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        generate_keypair(work / "key")
        (work / "trusted").mkdir()
        (work / "trusted" / "k.pub").write_bytes((work / "key" / "signing.pub").read_bytes())
        (work / "symbols.json").write_bytes(symbol_map_of(cache / "libnsfix.so.1").to_json_bytes())
        bundles = {}
        for level in (1, 2, 3):
            bundles[level] = work / f"l{level}.nsb"
            argv = ["bundle", "create", "--kind", "userspace", "--target",
                    str(cache / "libnsfix.so.1"), "--object", str(cache / f"patch{level}.o"),
                    "--symbols", str(work / "symbols.json"), "--level", str(level),
                    "--key", str(work / "key"), "-o", str(bundles[level])]  # fmt: skip
            for old, new in nsfix_spec(level).functions:
                argv += ["--replace", f"{old}={new}"]
            assert nonstop_main(argv) == 0
        (work / "c.toml").write_text(
            f'trusted_keys_dir = "{work / "trusted"}"\nstate_dir = "{work / "s"}"\n'
            f'cache_dir = "{work / "c"}"\n'
        )
        env = {**os.environ, "NONSTOP_CONFIG": str(work / "c.toml"), "PYTHONPATH": str(REPO)}

        def nonstopctl(args: list[str]) -> subprocess.Popen[str]:
            return subprocess.Popen([*NONSTOPCTL, *args], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)  # fmt: skip

        target = Target(cache / "nsfix_prog", 2, 2)
        try:
            engine = Engine(EngineOptions(lock_dir=work / "locks"))
            started = time.monotonic()
            report = run_trials(
                trials, target, bundles, TrustedKeys.from_dir(work / "trusted"), engine,
                nonstopctl, lambda level: patched(level) if level else ORIGINAL, seed=seed,
            )  # fmt: skip
        finally:
            target.stop()
    print(f"{report.trials} trials in {time.monotonic() - started:.0f} s, seed {seed} "
          f"(load {load_average()})")  # fmt: skip
    print(f"  killed mid-run: {report.killed_mid_run}; finished before the kill: "
          f"{report.finished_before_kill}")  # fmt: skip
    print(f"  target crashes: {report.target_crashes}; inconsistent after the next run: "
          f"{report.inconsistent_after_next_run}")  # fmt: skip
    for problem in report.problems:
        print(f"  problem: {problem}")
    if report.target_crashes or report.inconsistent_after_next_run:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

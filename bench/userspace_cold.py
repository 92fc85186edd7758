"""Cold `nonstopctl --lib-update --bundle FILE --pid PID` for one process: wall time of the
whole command (interpreter start included), with an empty and with a warm ELF model cache.

    .venv/bin/python bench/userspace_cold.py [RUNS]
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from userspace_common import (
    build_fixtures,
    load_average,
    require_root,
    signed_bundles,
    start_program,
)

NONSTOPCTL = str(Path(sys.executable).parent / "nonstopctl")


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, capture_output=True, check=True)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    require_root()
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    build_fixtures()
    process = start_program(0, 3)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            bundles, env = signed_bundles(work, (1,))
            bundle = bundles[1]
            update = [
                NONSTOPCTL,
                "--lib-update",
                "--bundle",
                str(bundle),
                "--pid",
                str(process.pid),
            ]
            unload = [NONSTOPCTL, "--lib-unload", "--pid", str(process.pid)]
            figures: dict[str, list[float]] = {"empty": [], "warm": [], "version": []}
            for _ in range(runs):
                shutil.rmtree(work / "cache" / "elf", ignore_errors=True)
                figures["empty"].append(timed(update, env))
                timed(unload, env)
                figures["warm"].append(timed(update, env))
                timed(unload, env)
                figures["version"].append(timed([NONSTOPCTL, "--version"], env))
            print(f"cold nonstopctl, one process, {runs} runs each, ms (load {load_average()})")
            labels = {
                "empty": "--lib-update, empty ELF cache",
                "warm": "--lib-update, ELF models cached",
                "version": "--version (interpreter + imports)",
            }
            for key, label in labels.items():
                values = figures[key]
                print(f"  {label:36} min {min(values):5.0f}  median "
                      f"{statistics.median(values):5.0f}  max {max(values):5.0f}")  # fmt: skip
    finally:
        process.kill()
        process.wait()


if __name__ == "__main__":
    main()

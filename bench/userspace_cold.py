"""Cold `nonstopctl --lib-update --bundle FILE --pid PID` for one process: wall time of the
whole command (interpreter start included), with an empty and with a warm ELF model cache.

    .venv/bin/python bench/userspace_cold.py [RUNS]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from userspace_common import build_fixtures, load_average, nsfix_spec, require_root, start_program

from nonstop.bundle import generate_keypair
from nonstop.bundle.symbols import symbol_map_of
from nonstop.cli import main as nonstop_main

NONSTOPCTL = str(Path(sys.executable).parent / "nonstopctl")


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, capture_output=True, check=True)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    require_root()
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    cache = build_fixtures()
    process = start_program(0, 3)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            generate_keypair(work / "key")
            (work / "trusted").mkdir()
            (work / "trusted" / "k.pub").write_bytes((work / "key" / "signing.pub").read_bytes())
            (work / "symbols.json").write_bytes(
                symbol_map_of(cache / "libnsfix.so.1").to_json_bytes()
            )
            bundle = work / "l1.nsb"
            argv = ["bundle", "create", "--kind", "userspace", "--target",
                    str(cache / "libnsfix.so.1"), "--object", str(cache / "patch1.o"),
                    "--symbols", str(work / "symbols.json"), "--level", "1",
                    "--key", str(work / "key"), "-o", str(bundle)]  # fmt: skip
            for old, new in nsfix_spec(1).functions:
                argv += ["--replace", f"{old}={new}"]
            assert nonstop_main(argv) == 0
            (work / "c.toml").write_text(
                f'trusted_keys_dir = "{work / "trusted"}"\nstate_dir = "{work / "s"}"\n'
                f'cache_dir = "{work / "c"}"\n'
            )
            env = {**os.environ, "NONSTOP_CONFIG": str(work / "c.toml")}
            update = [NONSTOPCTL, "--lib-update", "--bundle", str(bundle), "--pid", str(process.pid)]
            unload = [NONSTOPCTL, "--lib-unload", "--pid", str(process.pid)]
            figures: dict[str, list[float]] = {"empty": [], "warm": [], "version": []}
            for _ in range(runs):
                shutil.rmtree(work / "c" / "elf", ignore_errors=True)
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

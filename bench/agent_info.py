"""Wall time of `nonstopctl --info` (a cold process each time), against bare Python startup.

.venv/bin/python bench/agent_info.py [--runs 20]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NONSTOPCTL = Path(sys.executable).with_name("nonstopctl")


def timed(argv: list[str], runs: int, env: dict[str, str]) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env=env)
        times.append(1000 * (time.perf_counter() - start))
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "nonstopctl.toml"
        config.write_text(f'state_dir = "{tmp}/state"\ncache_dir = "{tmp}/cache"\n')
        env = {"NONSTOP_CONFIG": str(config), "PATH": "/usr/bin:/bin"}
        timed([str(NONSTOPCTL), "--info"], 2, env)  # warm the page cache and .pyc files
        info = timed([str(NONSTOPCTL), "--info"], args.runs, env)
        bare = timed([sys.executable, "-c", "pass"], args.runs, env)
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"nonstopctl --info: median {statistics.median(info):.0f} ms, min {min(info):.0f} ms "
          f"({args.runs} runs, load {' '.join(load)})")  # fmt: skip
    print(
        f"python -c pass:    median {statistics.median(bare):.0f} ms; "
        f"--info / bare = {statistics.median(info) / statistics.median(bare):.1f}"
    )


if __name__ == "__main__":
    main()

"""Pause per process (first thread stopped to last resumed) with 1, 4 and 32 threads,
idle and CPU-busy, over repeated apply/revert cycles: min / median / p99 / max in us.

    .venv/bin/python bench/userspace_pause.py [CYCLES] [--baseline SRC]

With --baseline, the engine of another source tree (SRC: its `src` directory, e.g. unpacked
with `git archive REV src | tar -x -C DIR`) patches the same target processes in turns with
this tree's engine, in the same run, and each line gets the baseline's figures and the ratio
of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from nonstop.userspace import Engine, EngineOptions
from userspace_common import (
    build_fixtures,
    load_average,
    nsfix_spec,
    require_root,
    start_program,
    summary,
)

# (label, busy threads, sleeping threads): the main thread (blocked reading stdin) counts too.
CONFIGS = [
    ("1 thread, idle", 0, 0),
    ("4 threads, idle", 0, 3),
    ("32 threads, idle", 0, 31),
    ("2 threads, 1 CPU-busy", 1, 0),
    ("4 threads, 3 CPU-busy", 3, 0),
    ("32 threads, 31 CPU-busy", 31, 0),
]
ROUNDS = 5
"""With a baseline, each engine runs CYCLES / ROUNDS cycles in turn, ROUNDS times."""


def cycle(engine: Engine, pid: int, cycles: int) -> tuple[list[int], int]:
    """Pauses of successful switches over CYCLES apply+revert, and how many ended busy."""
    spec = nsfix_spec(1)
    pauses: list[int] = []
    busy_results = 0
    for _ in range(cycles):
        for result in (engine.apply(pid, spec), engine.revert(pid)):
            if result.result == "busy":
                busy_results += 1
            elif result.result in ("patched", "reverted"):
                pauses.append(result.pause_us)
            elif result.result != "already":  # a revert after a busy apply has nothing to do
                raise SystemExit(f"unexpected result: {result}")
    return pauses, busy_results


def baseline_cycle(
    source: Path, pid: int, cycles: int, realtime: bool, lock_dir: Path
) -> tuple[list[int], int]:
    """CYCLE run by the engine of SOURCE, in a process of its own."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    argv = [sys.executable, __file__, "--worker", str(pid), str(cycles), str(lock_dir)]
    if not realtime:
        argv.append("--no-fifo")
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    document = json.loads(done.stdout)
    return document["pauses"], document["busy"]


def line(
    label: str,
    busy: int,
    sleepers: int,
    cycles: int,
    realtime: bool,
    baseline: Path | None,
    lock_dir: Path,
) -> str:
    engine = Engine(EngineOptions(lock_dir=lock_dir, realtime=realtime))
    process = start_program(busy, sleepers)
    here: list[int] = []
    there: list[int] = []
    busy_here = busy_there = 0
    try:
        rounds = ROUNDS if baseline is not None else 1
        for _ in range(rounds):
            pauses, count = cycle(engine, process.pid, cycles // rounds)
            here += pauses
            busy_here += count
            if baseline is not None:
                pauses, count = baseline_cycle(
                    baseline, process.pid, cycles // rounds, realtime, lock_dir
                )
                there += pauses
                busy_there += count
    finally:
        process.kill()
        process.wait()
    text = f"  {label:26} {summary(here)}" + (f"  ({busy_here} busy)" if busy_here else "")
    if baseline is not None:
        ratio = statistics.median(here) / statistics.median(there)
        text += f"\n  {'':26} {summary(there)}  baseline; median ratio {ratio:.2f}"
        text += f"  ({busy_there} busy)" if busy_there else ""
    return text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("cycles", nargs="?", type=int, default=50)
    parser.add_argument("--baseline", type=Path)
    args = parser.parse_args()
    require_root()
    build_fixtures()
    with tempfile.TemporaryDirectory() as tmp:
        locks = Path(tmp)
        print(
            f"pause per switch, us, {2 * args.cycles} switches each (load {load_average()})"
            + (f"; baseline engine from {args.baseline}" if args.baseline else "")
        )
        for label, busy, sleepers in CONFIGS:
            print(line(label, busy, sleepers, args.cycles, True, args.baseline, locks), flush=True)
        print("same, patcher without SCHED_FIFO (for comparison):")
        for label, busy, sleepers in CONFIGS[4:]:
            print(line(label, busy, sleepers, args.cycles, False, args.baseline, locks), flush=True)
        print(f"(load {load_average()} at the end)")


def worker() -> None:
    """--worker PID CYCLES LOCK_DIR [--no-fifo]: one CYCLE, the pauses as JSON on stdout."""
    pid, cycles, lock_dir = int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    engine = Engine(EngineOptions(lock_dir=lock_dir, realtime="--no-fifo" not in sys.argv))
    pauses, busy = cycle(engine, pid, cycles)
    print(json.dumps({"pauses": pauses, "busy": busy}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker()
    else:
        main()

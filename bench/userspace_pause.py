"""Pause per process (first thread stopped to last resumed) with 1, 4 and 32 threads,
idle and CPU-busy, over repeated apply/revert cycles: min / median / p99 / max in us.

    .venv/bin/python bench/userspace_pause.py [CYCLES]
"""

from __future__ import annotations

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


def measure(engine: Engine, busy: int, sleepers: int, cycles: int) -> tuple[list[float], int]:
    """Pauses of successful switches, and how many operations ended busy."""
    process = start_program(busy, sleepers)
    pauses: list[float] = []
    busy_results = 0
    try:
        spec = nsfix_spec(1)
        for _ in range(cycles):
            applied = engine.apply(process.pid, spec)
            reverted = engine.revert(process.pid)
            for result in (applied, reverted):
                if result.result == "busy":
                    busy_results += 1
                elif result.result in ("patched", "reverted"):
                    pauses.append(result.pause_us)
                else:
                    raise SystemExit(f"unexpected result: {result}")
    finally:
        process.kill()
        process.wait()
    return pauses, busy_results


def line(label: str, engine: Engine, busy: int, sleepers: int, cycles: int) -> str:
    pauses, busy_results = measure(engine, busy, sleepers, cycles)
    note = f"  ({busy_results} busy)" if busy_results else ""
    return f"  {label:26} {summary(pauses)}{note}"


def main() -> None:
    require_root()
    cycles = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    build_fixtures()
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(EngineOptions(lock_dir=Path(tmp)))
        plain = Engine(EngineOptions(lock_dir=Path(tmp), realtime=False))
        print(f"pause per switch, us, {2 * cycles} switches each (load {load_average()})")
        for label, busy, sleepers in CONFIGS:
            print(line(label, engine, busy, sleepers, cycles), flush=True)
        print("same, patcher without SCHED_FIFO (for comparison):")
        for label, busy, sleepers in CONFIGS[4:]:
            print(line(label, plain, busy, sleepers, cycles), flush=True)


if __name__ == "__main__":
    main()

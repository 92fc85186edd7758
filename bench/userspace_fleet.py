"""50 processes x 4 threads patched: wall time, engine alone and `nonstopctl --lib-update` cold.

.venv/bin/python bench/userspace_fleet.py [PROCESSES]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nonstop.userspace import Engine, EngineOptions
from userspace_common import (
    build_fixtures,
    load_average,
    nsfix_spec,
    require_root,
    signed_bundles,
    start_program,
)

NONSTOPCTL = [sys.executable, "-c", "from nonstop.agent.cli import main; raise SystemExit(main())"]


def main() -> None:
    require_root()
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    build_fixtures()
    # main + 3 sleepers = 4 threads each; one more process to warm the engine on.
    warm_up, *processes = [start_program(0, 3) for _ in range(count + 1)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            engine = Engine(EngineOptions(lock_dir=work / "locks"))
            spec = nsfix_spec(1)
            # As a warm agent (the daemon) would be: ELF models parsed, patch sites validated,
            # disassembler loaded.
            assert engine.apply(warm_up.pid, spec).result == "patched"
            started = time.perf_counter()
            results = [engine.apply(p.pid, spec) for p in processes]
            wall = time.perf_counter() - started
            assert all(r.result == "patched" for r in results), results
            pauses = sorted(r.pause_us for r in results)
            print(f"{count} processes x 4 threads (load {load_average()})")
            print(f"  engine, sequential apply:       {wall * 1000:.0f} ms wall, "
                  f"pause median {pauses[len(pauses) // 2]} us, max {pauses[-1]} us")  # fmt: skip
            started = time.perf_counter()
            for p in processes:
                engine.revert(p.pid)
            print(
                f"  engine, sequential revert:      {(time.perf_counter() - started) * 1000:.0f} ms"
            )

            bundles, env = signed_bundles(work, (1,))
            started = time.perf_counter()
            done = subprocess.run([*NONSTOPCTL, "--lib-update", "--bundle", str(bundles[1])],
                                  env=env, capture_output=True, text=True, check=True)  # fmt: skip
            wall = time.perf_counter() - started
            patched = done.stdout.count(": patched")
            print(f"  nonstopctl --lib-update (cold): {wall * 1000:.0f} ms wall for {patched} "
                  "processes, discovery by build-id included")  # fmt: skip
    finally:
        for p in (warm_up, *processes):
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()

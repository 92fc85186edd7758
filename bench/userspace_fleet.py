"""50 processes x 4 threads patched: wall time, engine alone and `nonstopctl --lib-update` cold.

    .venv/bin/python bench/userspace_fleet.py [PROCESSES]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from userspace_common import build_fixtures, load_average, nsfix_spec, require_root, start_program

from nonstop.bundle import generate_keypair
from nonstop.bundle.symbols import symbol_map_of
from nonstop.cli import main as nonstop_main
from nonstop.userspace import Engine, EngineOptions

NONSTOPCTL = [sys.executable, "-c", "from nonstop.agent.cli import main; raise SystemExit(main())"]


def main() -> None:
    require_root()
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    cache = build_fixtures()
    processes = [start_program(0, 3) for _ in range(count)]  # main + 3 sleepers = 4 threads
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            engine = Engine(EngineOptions(lock_dir=work / "locks"))
            spec = nsfix_spec(1)
            engine.processes_mapping(spec.build_id)  # parse ELF models once, as a warm agent would
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
            print(f"  engine, sequential revert:      {(time.perf_counter() - started) * 1000:.0f} ms")

            generate_keypair(work / "key")
            (work / "trusted").mkdir()
            (work / "trusted" / "k.pub").write_bytes((work / "key" / "signing.pub").read_bytes())
            symbols = work / "symbols.json"
            symbols.write_bytes(symbol_map_of(cache / "libnsfix.so.1").to_json_bytes())
            bundle = work / "l1.nsb"
            argv = ["bundle", "create", "--kind", "userspace", "--target",
                    str(cache / "libnsfix.so.1"), "--object", str(cache / "patch1.o"),
                    "--symbols", str(symbols), "--level", "1", "--key", str(work / "key"),
                    "-o", str(bundle)]  # fmt: skip
            for old, new in spec.functions:
                argv += ["--replace", f"{old}={new}"]
            assert nonstop_main(argv) == 0
            (work / "c.toml").write_text(
                f'trusted_keys_dir = "{work / "trusted"}"\nstate_dir = "{work / "s"}"\n'
                f'cache_dir = "{work / "c"}"\n'
            )
            env = {**os.environ, "NONSTOP_CONFIG": str(work / "c.toml")}
            started = time.perf_counter()
            done = subprocess.run([*NONSTOPCTL, "--lib-update", "--bundle", str(bundle)],
                                  env=env, capture_output=True, text=True, check=True)  # fmt: skip
            wall = time.perf_counter() - started
            patched = done.stdout.count(": patched")
            print(f"  nonstopctl --lib-update (cold): {wall * 1000:.0f} ms wall for {patched} "
                  "processes, discovery by build-id included")  # fmt: skip
    finally:
        for p in processes:
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()

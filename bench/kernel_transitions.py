"""Kernel livepatch timings on Debian's real kernel in QEMU (TCG), printed per transition.

    .venv/bin/python bench/kernel_transitions.py [--rounds N]

Fetches (or reuses) the cached Debian kernel, builds the example levels with
`nonstop build kernel` (timed), then boots the guest with 1 and with 2 CPUs
and, in each, runs ROUNDS times: level 1 (`--update`), level 2 (`--update`,
atomic replace of level 1), `--unload`. For each step it prints the kernel
transition time the driver measured (module load, or the write to
`enabled`, until `transition` reads 0) and the wall time of
the whole `nonstopctl` call inside the guest (mostly Python start-up under
software emulation). Figures from a loaded machine are not final.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.kernel import harness
from tests.kernel.guest import boot

from nonstop.bundle import generate_keypair

STEPS = ("update1", "update2", "unload")


def round_body(rounds: int) -> str:
    lines = []
    for n in range(rounds):
        lines += [
            f"step update1_{n} $CTL --json --update --bundle $B/level1.nsb",
            f"step update2_{n} $CTL --json --update --bundle $B/level2.nsb",
            f"step unload_{n} $CTL --json --unload",
        ]
    return "\n".join(lines) + "\n"


def transition_seconds(results: harness.Results, step: str) -> float:
    document = results.json(step)
    if step.startswith("unload"):
        return float(sum(patch["seconds"] for patch in document["patches"]))
    return float(document["transition"]["seconds"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nonstop-kbench-") as tmp:
        root = Path(tmp)
        started = time.monotonic()
        tree = harness.kernel_tree()
        print(
            f"kernel {tree.release} ({tree.version}): ready in {time.monotonic() - started:.1f} s"
        )
        generate_keypair(root / "key")
        (root / "trusted").mkdir()
        (root / "trusted" / "vendor.pub").write_bytes((root / "key" / "signing.pub").read_bytes())
        started = time.monotonic()
        bundles = harness.build_bundles(tree, root / "key", root / "bundles")
        print(f"built the test levels and test module: {time.monotonic() - started:.1f} s")
        for cpus in (1, 2):
            work = root / f"guest-{cpus}"
            initramfs = harness.prepare_work(work, tree, root / "trusted", bundles)
            body = harness.scenario(work, round_body(args.rounds))
            run = boot(tree, initramfs, work, body, cpus=cpus)
            if run.exit_status != 0:
                print(run.log, run.serial[-2000:], sep="\n")
                return 1
            results = harness.Results(work)
            walls = results.timings()
            print(f"\n{cpus} guest CPU(s): boot + {3 * args.rounds} calls in {run.seconds:.1f} s")
            print(f"  {'step':<10} {'transition s (median, max)':>28} {'nonstopctl wall s':>18}")
            for step in STEPS:
                names = [f"{step}_{n}" for n in range(args.rounds)]
                kernel = [transition_seconds(results, name) for name in names]
                wall = [walls[name] for name in names]
                print(
                    f"  {step:<10} {statistics.median(kernel):>17.3f} {max(kernel):>10.3f}"
                    f" {statistics.median(wall):>18.2f}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

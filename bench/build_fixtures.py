"""Benchmark: wall time of `nonstop build userspace` on the libvuln fixture recipes.

Run from the repository root: .venv/bin/python bench/build_fixtures.py [--rounds N]
Prints, per recipe, the median wall time over N rounds and the median of each
stage (reproduce build, original build, level builds, analysis), plus the share
of the builder's own work (analysis + assembly + signing) in the total.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.builders.userspace.conftest import write_recipe

from nonstop.builders.userspace.builder import build_userspace
from nonstop.builders.userspace.recipe import load_recipe
from nonstop.bundle import generate_keypair

RECIPES = {
    "bounds": ("bounds",),
    "helper": ("helper",),
    "inline": ("inline",),
    "switch": ("switch",),
    "static-var": ("static-var",),
    "struct (refused)": ("struct",),
    "series of 3": ("bounds", "inline", "switch"),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        key = generate_keypair(work / "key")
        print(f"{'recipe':<18} {'wall s':>7} {'builds s':>8} {'analysis s':>10} {'analysis %':>10}")
        for label, fixes in RECIPES.items():
            walls, builds, analyses = [], [], []
            for round_number in range(rounds):
                directory = work / f"{label.split()[0]}-{round_number}"
                recipe = load_recipe(write_recipe(directory, fixes))
                started = time.monotonic()
                result = build_userspace(recipe, key, directory / "out")
                walls.append(time.monotonic() - started)
                builds.append(sum(v for k, v in result.stages.items() if k.startswith("build")))
                analyses.append(sum(v for k, v in result.stages.items() if k.startswith("analyse")))
            wall, build, analysis = (statistics.median(x) for x in (walls, builds, analyses))
            share = 100 * analysis / wall
            print(f"{label:<18} {wall:7.2f} {build:8.2f} {analysis:10.2f} {share:9.0f}%")


if __name__ == "__main__":
    main()

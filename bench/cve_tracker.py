"""Reading the Debian security tracker's JSON at full size: generate, then time and measure.

    PYTHONPATH=src .venv/bin/python bench/cve_tracker.py [--pairs 80000] [--runs 3]

The generated document has the real file's shape: PAIRS package/CVE pairs over
PAIRS/30 source packages, each with a description and five release entries
(bullseye, bookworm, trixie, sid and, for one pair in four, experimental), a
mix of resolved (some with fixed version 0), open (some with nodsa) and
undetermined, epochs and ``~`` versions, and one TEMP id in fifty; 80,000
pairs make 74 MB, the real file (2025) is 70-100 MB. Prints the file size,
per run the JSON decode and the checked walk apart and ``read_feed`` (file
read, decode, walk), wall and CPU time (CPU time is what a busy machine
changes least), the peak RSS, and the counts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

from nonstop.cve.feeds import read_feed
from nonstop.cve.osv import decode_json
from nonstop.cve.tracker import parse_tracker

RELEASES = ("bullseye", "bookworm", "trixie", "sid")


def release_entry(rng: random.Random, base: str) -> dict[str, object]:
    roll = rng.random()
    repositories = {"bookworm": base, "bookworm-security": base + "+deb12u1"}
    if roll < 0.55:
        fixed = "0" if rng.random() < 0.1 else base + f"+deb12u{rng.randint(1, 9)}"
        return {
            "status": "resolved",
            "repositories": repositories,
            "fixed_version": fixed,
            "urgency": rng.choice(["not yet assigned", "low", "medium", "high**"]),
        }
    if roll < 0.95:
        entry: dict[str, object] = {
            "status": "open",
            "repositories": repositories,
            "urgency": rng.choice(["unimportant", "low", "not yet assigned", "end-of-life"]),
        }
        if rng.random() < 0.4:
            entry["nodsa"] = "Minor issue"
            entry["nodsa_reason"] = rng.choice(["postponed", "ignored", ""])
        return entry
    return {"status": "undetermined", "repositories": repositories, "urgency": "not yet assigned"}


def generate(pairs: int, path: Path) -> None:
    rng = random.Random(12)
    document: dict[str, dict[str, object]] = {}
    for index in range(pairs):
        package = document.setdefault(f"pkg{index % max(1, pairs // 30)}", {})
        epoch = "1:" if index % 7 == 0 else ""
        base = f"{epoch}{index % 13}.{index % 50}.{index % 9}~rc1-{index % 5 + 1}"
        issue = (
            f"TEMP-{index:07d}-ABCDEF"
            if index % 50 == 0
            else f"CVE-{2010 + index % 16}-{index + 1000}"
        )
        releases = {name: release_entry(rng, base) for name in RELEASES}
        if index % 4 == 0:
            releases["experimental"] = release_entry(rng, base)
        package[issue] = {
            "description": "a flaw in the parser lets a crafted document crash the program " * 2,
            "scope": "remote",
            "debianbug": 1000000 + index,
            "releases": releases,
        }
    path.write_text(json.dumps(document, separators=(",", ":")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=80_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "tracker.json"
        generate(args.pairs, path)
        print(f"generated {path.stat().st_size / 1e6:.1f} MB, {args.pairs} package/CVE pairs")
        data = path.read_bytes()
        for run in range(args.runs):
            started, cpu = time.perf_counter(), time.process_time()
            document = decode_json(data, "bench", path.name)
            decoded, decoded_cpu = time.perf_counter(), time.process_time()
            parse_tracker(document)
            walked, walked_cpu = time.perf_counter(), time.process_time()
            del document
            batch = read_feed(path)
            print(
                f"run {run + 1}: JSON decode {decoded - started:.2f} s"
                f" (CPU {decoded_cpu - cpu:.2f})"
                f" + checked walk {walked - decoded:.2f} s (CPU {walked_cpu - decoded_cpu:.2f});"
                f" read_feed (file, both) {time.perf_counter() - walked:.2f} s"
                f" (CPU {time.process_time() - walked_cpu:.2f})"
            )
            only = parse_tracker(decode_json(data, "bench", path.name), releases={"debian:12"})
        print(f"load average {os.getloadavg()[0]:.1f} (2 vCPUs)")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS {peak:.0f} MB (generation included)")
        print(batch.summary())
        print(f"only debian:12: {len(only.advisories)} advisories")
    return 0


if __name__ == "__main__":
    sys.exit(main())

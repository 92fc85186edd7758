"""Benchmark: `nonstop build debian` on a real update against one plain dpkg-buildpackage.

Run as root from the repository root:
.venv/bin/python bench/build_debian.py [--package libxml2] [--from V] [--to V] [--cve CVE]...
    [--trust-expired-key FINGERPRINT]...

Default: libxml2 2.9.14+dfsg-1.3~deb12u4 -> ~deb12u6 restricted to three CVEs.
The sources and the --from binaries come from the shared cache (fetched once);
the original build is made afresh in a private cache, so the first run is
what a new update costs: original build, reading dependencies, levels. A
second run of the same command then shows what a cached original leaves: the
levels only. Last, one plain `dpkg-buildpackage -b` of the same source, same
options, in the same run, for the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from nonstop.builders.cache import cache_dir  # noqa: E402
from nonstop.builders.debian.binaries import fetch_libraries  # noqa: E402
from nonstop.builders.debian.sources import fetch_source  # noqa: E402
from nonstop.bundle import generate_keypair  # noqa: E402

NONSTOP = str(Path(sys.executable).parent / "nonstop")
DEFAULT_CVES = ["CVE-2025-9714", "CVE-2026-0990", "CVE-2025-8732"]


def build(args: argparse.Namespace, cache: Path, work: Path, run: str) -> tuple[float, dict]:
    out = work / run
    argv = [NONSTOP, "build", "debian", args.package, "--from", args.old, "--to", args.new,
            "--key", str(work / "keys" / "signing.key"), "-o", str(out), "--json"]  # fmt: skip
    for cve in args.cve or (DEFAULT_CVES if args.package == "libxml2" else []):
        argv += ["--cve", cve]
    for fingerprint in args.trust_expired_key:
        argv += ["--trust-expired-key", fingerprint]
    started = time.monotonic()
    done = subprocess.run(
        argv, env={**os.environ, "NONSTOP_DEBIAN_CACHE": str(cache)}, capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    seconds = time.monotonic() - started
    if not done.stdout:
        raise SystemExit(f"build failed: {done.stderr.strip().splitlines()[-1:]}")
    return seconds, json.loads(done.stdout)


def plain_build(cache: Path, package: str, version: str, work: Path) -> float:
    """One ordinary dpkg-buildpackage -b of the --from source, as the builder's options."""
    dsc = next((cache / f"{package}_{version}").glob("*.dsc"))
    tree = work / "plain" / "tree"
    tree.parent.mkdir(parents=True)
    subprocess.run(["dpkg-source", "-x", str(dsc), str(tree)], check=True, capture_output=True)
    env = {**os.environ, "DEB_BUILD_OPTIONS": f"nocheck parallel={os.cpu_count() or 1}"}
    started = time.monotonic()
    subprocess.run(
        ["dpkg-buildpackage", "-b", "-uc", "-us"], cwd=tree, env=env, check=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    seconds = time.monotonic() - started
    shutil.rmtree(tree.parent)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--package", default="libxml2")
    parser.add_argument("--from", dest="old", default="2.9.14+dfsg-1.3~deb12u4")
    parser.add_argument("--to", dest="new", default="2.9.14+dfsg-1.3~deb12u6")
    parser.add_argument("--cve", action="append", default=[])
    parser.add_argument("--trust-expired-key", action="append", default=[])
    args = parser.parse_args()
    shared = cache_dir("debian")
    trusted = frozenset(key.upper() for key in args.trust_expired_key)
    old, _ = (
        fetch_source(args.package, version, shared, progress=print, trust_expired=trusted)
        for version in (args.old, args.new)
    )
    fetch_libraries(old, progress=print)
    with tempfile.TemporaryDirectory(prefix="nonstop-bench-") as temporary:
        work = Path(temporary)
        cache = work / "cache"
        for version in (args.old, args.new):  # sources and binaries, not the original build
            entry = f"{args.package}_{version}"
            shutil.copytree(
                shared / entry, cache / entry, ignore=shutil.ignore_patterns("original")
            )
        generate_keypair(work / "keys")
        load = os.getloadavg()[0]
        first, report = build(args, cache, work, "first")
        second, again = build(args, cache, work, "second")
        plain = plain_build(cache, args.package, args.old, work)
    summary = report["summary"]
    print(f"{args.package} {args.old} -> {args.new}: {len(report['cves'])} CVEs, "
          f"{summary['built']} built, {summary['refused']} refused, "
          f"{summary['not_applicable']} not applicable (load average {load:.1f})")  # fmt: skip
    print(f"  first run (original built): {first:6.1f} s "
          f"(original build {report['original_build']['seconds']:.1f} s)")  # fmt: skip
    print(f"  second run (original cached): {second:6.1f} s "
          f"(reused: {again['original_build']['reused']})")  # fmt: skip
    print(f"  plain dpkg-buildpackage -b: {plain:6.1f} s")
    print(f"  ratio first run / plain build: {first / plain:.2f}")
    print(f"  ratio second run / plain build: {second / plain:.2f}")
    figures = {
        "first_seconds": round(first, 1),
        "second_seconds": round(second, 1),
        "plain_seconds": round(plain, 1),
        "ratio_first": round(first / plain, 2),
        "ratio_second": round(second / plain, 2),
        "per_cve": {
            entry["cve"]: [
                entry["status"],
                entry["build_seconds"],
                entry["analysis_seconds"],
                entry["reasons"][0][:160] if entry["reasons"] else "",
            ]
            for entry in report["cves"]
        },
    }
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()

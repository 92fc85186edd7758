"""Benchmark: build live patches for libexpat1 from Debian's source package.

Run as root from the repository root: .venv/bin/python bench/build_expat.py
[--version 2.5.0-1+deb12u2] [--no-baseline]

Set-up (cached in .cache/bench/expat-VERSION/): adds deb-src entries once
(nonstop.builders.debian.apt.enable_deb_src), fetches the source (apt-get source), installs the
build dependencies (apt-get build-dep), and takes the archive's libexpat1 .deb
of the same version as the target binary. Then it runs the builder on the two
fixes in bench/expat/ (two levels), and, unless --no-baseline, one plain
`dpkg-buildpackage` of the same tree, so the builder's time is also given as a
ratio to one ordinary package build measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nonstop.builders.debian.apt import enable_deb_src  # noqa: E402
from nonstop.builders.userspace.builder import build_userspace  # noqa: E402
from nonstop.builders.userspace.recipe import load_recipe  # noqa: E402
from nonstop.builders.userspace.report import render_text  # noqa: E402
from nonstop.bundle import generate_keypair  # noqa: E402

FIXES = sorted((ROOT / "bench" / "expat").glob("*.patch"))
TITLES = {
    "0001-parse-buffer-without-buffer.patch": "XML_ParseBuffer: refuse bytes without a buffer",
    "0002-copy-string-null.patch": "copyString: tolerate NULL",
}
BUILD_OPTIONS = "nocheck parallel=2"


def run(argv: list[str], cwd: Path) -> None:
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def prepare(version: str, cache: Path) -> tuple[Path, Path]:
    """The unpacked source tree and the archive's library, fetched once."""
    cache.mkdir(parents=True, exist_ok=True)
    source = cache / "source"
    target = cache / "target" / "lib" / "x86_64-linux-gnu" / "libexpat.so.1.8.10"
    if not source.is_dir():
        enable_deb_src()
        run(["apt-get", "source", "--download-only", f"expat={version}"], cache)
        run(["apt-get", "build-dep", "-y", "-qq", f"expat={version}"], cache)
        dsc = next(cache.glob("expat_*.dsc"))
        run(["dpkg-source", "-x", dsc.name, "source"], cache)
    if not target.is_file():
        run(["apt-get", "download", f"libexpat1={version}"], cache)
        deb = next(cache.glob("libexpat1_*.deb"))
        run(["dpkg-deb", "-x", deb.name, "target"], cache)
    return source, target


def write_recipe(cache: Path, source: Path, target: Path) -> Path:
    fixes = "".join(
        f'\n[[fix]]\ntitle = "{TITLES.get(fix.name, fix.stem)}"\npatch = "{fix}"\n' for fix in FIXES
    )
    recipe = cache / "recipe.toml"
    recipe.write_text(
        f"""name = "libexpat1"

[source]
dir = "{source}"

[build]
command = "dpkg-buildpackage -b -uc -us"
library = "build/lib/.libs/libexpat.so.1.8.10"
env = {{ DEB_BUILD_OPTIONS = "{BUILD_OPTIONS}" }}

[compiler]
cc = "gcc"

[target]
binary = "{target}"
{fixes}"""
    )
    return recipe


def baseline(source: Path, work: Path) -> float:
    """One ordinary dpkg-buildpackage of a fresh copy of the tree, in seconds."""
    tree = work / "baseline" / "source"
    shutil.rmtree(tree.parent, ignore_errors=True)
    shutil.copytree(source, tree, symlinks=True)
    env = dict(os.environ, DEB_BUILD_OPTIONS=BUILD_OPTIONS)
    started = time.monotonic()
    subprocess.run(
        ["dpkg-buildpackage", "-b", "-uc", "-us"],
        cwd=tree,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seconds = time.monotonic() - started
    shutil.rmtree(tree.parent)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--version", default="2.5.0-1+deb12u2")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    cache = ROOT / ".cache" / "bench" / f"expat-{args.version}"
    source, target = prepare(args.version, cache)
    recipe = load_recipe(write_recipe(cache, source, target))
    work = cache / "work"
    shutil.rmtree(work, ignore_errors=True)
    key = generate_keypair(work / "key")
    load = os.getloadavg()[0]
    started = time.monotonic()
    result = build_userspace(recipe, key, work / "out", work=work / "build")
    total = time.monotonic() - started
    print(render_text(result), end="")
    print(f"builder total: {total:.1f} s (load average at start {load:.1f})")
    figures: dict[str, object] = {"builder_seconds": round(total, 1), "stages": result.stages}
    if not args.no_baseline:
        plain = baseline(source, work)
        print(
            f"plain dpkg-buildpackage: {plain:.1f} s; builder / plain build = {total / plain:.2f}"
        )
        figures["plain_build_seconds"] = round(plain, 1)
        figures["ratio"] = round(total / plain, 2)
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()

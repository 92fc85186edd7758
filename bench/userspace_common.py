"""Shared set-up for the userspace engine benchmarks: fixture builds, patch specs, figures.

Run benchmarks from the repository root as root, e.g. `.venv/bin/python bench/userspace_pause.py`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nonstop.bundle.identity import userspace_target_of  # noqa: E402
from nonstop.bundle.symbols import symbol_map_of  # noqa: E402
from nonstop.userspace import PatchSpec  # noqa: E402

CACHE = REPO / ".cache" / "bench-userspace"
FIXTURES = REPO / "tests" / "fixtures" / "userspace"
FUNCTIONS = tuple(
    (name, f"{name}_fixed")
    for name in ("nsfix_get", "nsfix_measure", "nsfix_kind", "nsfix_zero", "nsfix_version",
                 "nsfix_depth", "nsfix_wait_input")
)  # fmt: skip


def require_root() -> None:
    if os.geteuid() != 0:
        sys.exit("userspace benchmarks need root (ptrace)")


def build_fixtures() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(["make", "-s", "-C", str(FIXTURES), f"OUT={CACHE}"], check=True)
    return CACHE


def patch_object(level: int) -> Path:
    """The fixture patch compiled for LEVEL (levels beyond 3 are built on demand)."""
    path = CACHE / f"patch{level}.o"
    if not path.exists():
        subprocess.run(
            ["gcc", "-O2", "-fPIC", "-ffunction-sections", "-fdata-sections", "-fcf-protection",
             f"-DLEVEL={level}", "-c", "-o", str(path), str(FIXTURES / "nsfix_patch.c")],
            check=True,
        )  # fmt: skip
    return path


def nsfix_spec(level: int) -> PatchSpec:
    library = CACHE / "libnsfix.so.1"
    target = userspace_target_of(library, with_package=False)
    return PatchSpec(
        build_id=target.build_id,
        soname=target.soname,
        level=level,
        object_bytes=patch_object(level).read_bytes(),
        functions=FUNCTIONS,
        symbol_map=symbol_map_of(library),
    )


def start_program(busy: int, sleepers: int, readers: int = 0) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [str(CACHE / "nsfix_prog"), str(busy), str(sleepers), str(readers)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stdout.readline().startswith("ready")
    return process


def signed_bundles(
    work: Path, levels: tuple[int, ...], only: dict[int, tuple[str, ...]] | None = None
) -> tuple[dict[int, Path], dict[str, str]]:
    """Bundles of the fixture patch for LEVELS (made with `nonstop bundle create`) and an
    environment whose nonstopctl trusts their key and keeps its state under WORK. ONLY maps a
    level to the functions it replaces, when not all of them."""
    from nonstop.bundle import generate_keypair
    from nonstop.cli import main as nonstop_main

    generate_keypair(work / "key")
    (work / "trusted").mkdir()
    (work / "trusted" / "k.pub").write_bytes((work / "key" / "signing.pub").read_bytes())
    symbols = work / "symbols.json"
    symbols.write_bytes(symbol_map_of(CACHE / "libnsfix.so.1").to_json_bytes())
    bundles = {}
    for level in levels:
        bundles[level] = work / f"level{level}.nsb"
        argv = ["bundle", "create", "--kind", "userspace", "--target",
                str(CACHE / "libnsfix.so.1"), "--object", str(patch_object(level)),
                "--symbols", str(symbols), "--level", str(level), "--key", str(work / "key"),
                "-o", str(bundles[level])]  # fmt: skip
        for old, new in FUNCTIONS:
            if old in (only or {}).get(level, (old,)):
                argv += ["--replace", f"{old}={new}"]
        if nonstop_main(argv) != 0:
            raise SystemExit("nonstop bundle create failed")
    (work / "nonstopctl.toml").write_text(
        f'trusted_keys_dir = "{work / "trusted"}"\nstate_dir = "{work / "state"}"\n'
        f'cache_dir = "{work / "cache"}"\n'
    )
    env = {**os.environ, "NONSTOP_CONFIG": str(work / "nonstopctl.toml")}
    return bundles, env


def summary(values: list[float]) -> str:
    """min / median / p99 / max of VALUES."""
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (
        f"min {ordered[0]:.0f}  median {statistics.median(ordered):.0f}  "
        f"p99 {p99:.0f}  max {ordered[-1]:.0f}"
    )


def private_dirty_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Private_Dirty:"):
            return int(line.split()[1])
    return 0


def vma_count(pid: int) -> int:
    return len(Path(f"/proc/{pid}/maps").read_text().splitlines())


def load_average() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()
